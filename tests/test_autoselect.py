"""`--kernels auto` times each fused op against its reference once per key and runs the faster.

On the CPU the choice logic runs through `autoselect_override`: `can_run` lets `auto` consider Triton on
CPU tensors (the fused side then runs under the Triton interpreter) and a fake timer says which side
is faster, so no test depends on a real timing.
"""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import run_to_success
from test_search_cli import TINY

import autogan_fast.kernels.upsample_conv as upconv
from autogan_fast.kernels import (
    InceptionStats,
    autoselect_choices,
    spectral_norm_weights,
    upsample_conv2d,
    upsample_conv2d_ref,
    use_backend,
)
from autogan_fast.kernels.autoselect import autoselect_override, use_fused
from autogan_fast.search import main as search_main


def everywhere(tensors):
    """`auto` may run Triton on any tensor (here: CPU tensors, through the interpreter)."""
    return True


class FakeTimer:
    """Seconds per call from a table by candidate name ("triton" / "torch"); counts its calls, runs nothing."""

    def __init__(self, triton=1.0, torch=1.0):
        self.seconds = {"triton": triton, "torch": torch}
        self.calls = []

    def __call__(self, name, fn):
        self.calls.append(name)
        return self.seconds[name]


class RunningTimer(FakeTimer):
    """Runs each candidate three times (as the real timer's warm-up does), then answers from the table."""

    def __call__(self, name, fn):
        for _ in range(3):
            fn()
        return super().__call__(name, fn)


@pytest.fixture
def launches(monkeypatch):
    """Counts the fused forward / backward launches and the reference calls of upsample_conv2d."""
    counts = {"fwd": 0, "bwd": 0, "ref": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(upconv, "upsample_conv2d_forward", counting("fwd", upconv.upsample_conv2d_forward))
    monkeypatch.setattr(upconv, "upsample_conv2d_backward", counting("bwd", upconv.upsample_conv2d_backward))
    monkeypatch.setattr(upconv, "upsample_conv2d_ref", counting("ref", upconv.upsample_conv2d_ref))
    return counts


def _upconv_args(n=1, c_in=2, c_out=3, size=2, grad=True):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, size, size, generator=gen).requires_grad_(grad)
    w = torch.randn(c_out, c_in, 3, 3, generator=gen).requires_grad_(grad)
    return x, w


@pytest.mark.parametrize("fused_s, reference_s, backend", [
    pytest.param(2.0, 1.0, "torch", id="fused-slower-runs-reference"),  # the H200 case: 0.17-0.40x cuDNN
    pytest.param(1.0, 2.0, "triton", id="fused-faster-runs-fused"),
    pytest.param(1.0, 1.0, "torch", id="tie-keeps-reference"),  # no reason to leave the reference
])
def test_auto_runs_the_faster_side_forward_and_backward(launches, fused_s, reference_s, backend):
    x, w = _upconv_args()
    timer = FakeTimer(triton=fused_s, torch=reference_s)
    with autoselect_override(timer=timer, can_run=everywhere):
        y = upsample_conv2d(x, w)
        y.square().sum().backward()
        choices = autoselect_choices()
    fused = backend == "triton"
    assert timer.calls == ["triton", "torch"]
    assert launches == {"fwd": int(fused), "bwd": int(fused), "ref": int(not fused)}  # one backend per call
    x_ref, w_ref = x.detach().requires_grad_(), w.detach().requires_grad_()
    y_ref = upsample_conv2d_ref(x_ref, w_ref)
    y_ref.square().sum().backward()
    # interpreter fp32 ("ieee" dots) against PyTorch's conv: 16 vs 36 products of O(1) terms, ~1e-6 apart
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(w.grad, w_ref.grad, atol=1e-4, rtol=1e-5)
    (choice,) = choices
    assert choice["op"] == "upsample_conv2d" and choice["backend"] == backend and choice["note"] == "timed"
    assert (choice["fused_seconds"], choice["reference_seconds"]) == (fused_s, reference_s)
    assert choice["shapes"][:2] == [[1, 2, 2, 2], [3, 2, 3, 3]] and choice["shapes"][2:] == [None] * 4
    assert choice["dtype"] == "torch.float32" and choice["memory_format"] == "contiguous"
    assert choice["options"] == {"relu": False, "backward": True}
    json.dumps(choices)  # it goes into log.jsonl and result.json


def test_a_key_is_timed_once_and_each_new_key_again(launches):
    timer = FakeTimer(triton=2.0, torch=1.0)
    with autoselect_override(timer=timer, can_run=everywhere):
        x, w = _upconv_args()
        upsample_conv2d(x, w)
        upsample_conv2d(x, w)  # same key: remembered
        assert len(timer.calls) == 2
        upsample_conv2d(*_upconv_args(size=3))  # new shape
        assert len(timer.calls) == 4
        with torch.no_grad():  # no backward follows: another cost, another key
            upsample_conv2d(x, w)
        assert len(timer.calls) == 6
        upsample_conv2d(x, w, relu=True)  # another activation
        assert len(timer.calls) == 8
        assert len(autoselect_choices()) == 4
    assert launches["ref"] == 5 and launches["fwd"] == 0


def test_auto_on_cpu_tensors_runs_the_reference_untimed(launches):
    """The default predicate: Triton only on CUDA tensors; the interpreter is never timed or picked."""
    timer = FakeTimer(triton=0.0, torch=1.0)
    with autoselect_override(timer=timer):
        upsample_conv2d(*_upconv_args())
        assert autoselect_choices() == []
    assert timer.calls == [] and launches == {"fwd": 0, "bwd": 0, "ref": 1}


@pytest.mark.parametrize("backend, fused", [
    pytest.param("triton", True, id="forced-triton-runs-fused-though-slower"),
    pytest.param("torch", False, id="forced-torch-runs-reference-though-slower"),
])
def test_forced_backends_are_not_timed(launches, backend, fused):
    timer = FakeTimer(triton=2.0 if fused else 0.5, torch=1.0)  # the forced side is the slower one
    with autoselect_override(timer=timer, can_run=everywhere), use_backend(backend):
        upsample_conv2d(*_upconv_args(grad=False))
        assert autoselect_choices() == []
    assert timer.calls == [] and launches["fwd"] == int(fused) and launches["ref"] == int(not fused)


def test_a_key_first_seen_in_a_capture_runs_the_reference_and_says_so(launches):
    """Timing syncs the host, which a capture forbids: the reference runs, the choice records why, a
    warning names the op, and the key keeps the reference after the capture (no timing then either)."""
    timer = FakeTimer(triton=0.5, torch=1.0)
    capturing = [True]
    with autoselect_override(timer=timer, can_run=everywhere, capturing=lambda tensors: capturing[0]):
        x, w = _upconv_args(grad=False)
        with pytest.warns(RuntimeWarning, match="upsample_conv2d .*inside a CUDA-graph capture"):
            upsample_conv2d(x, w)
        capturing[0] = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            upsample_conv2d(x, w)
        (choice,) = autoselect_choices()
    assert timer.calls == [] and launches["ref"] == 2 and launches["fwd"] == 0
    assert choice["backend"] == "torch" and choice["fused_seconds"] is None and "capture" in choice["note"]


def _sn_group(seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(4, 3, 3, 3), (5, 4), (1, 5)]  # conv, linear, the 1-row head
    ws = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    us = [F.normalize(torch.randn(s[0], generator=gen), dim=0) for s in shapes]
    vs = [F.normalize(torch.randn(w[0].numel(), generator=gen), dim=0) for w in ws]
    return ws, us, vs


@pytest.mark.parametrize("fused_s, backend", [
    pytest.param(2.0, "torch", id="reference-faster"),
    pytest.param(0.5, "triton", id="fused-faster"),
])
def test_spectral_norm_timing_leaves_u_and_v_where_they_were(fused_s, backend):
    """The candidates run (three times each) on copies of u, v: the real call advances them by one power
    step, exactly as an untimed call does."""
    ws, us, vs = _sn_group()
    expect_ws, expect_us, expect_vs = _sn_group()
    with use_backend("torch"):
        expected = spectral_norm_weights(expect_ws, expect_us, expect_vs)
    timer = RunningTimer(triton=fused_s, torch=1.0)
    with autoselect_override(timer=timer, can_run=everywhere):
        out = spectral_norm_weights(ws, us, vs)
        sum(o.sum() for o in out).backward()  # the backward of the chosen side
        (choice,) = autoselect_choices()
    assert timer.calls == ["triton", "torch"]
    assert choice["op"] == "spectral_norm" and choice["backend"] == backend
    assert choice["options"] == {"training": True, "n_power_iterations": 1, "backward": True}
    # one power step from the same state; the kernel differs from torch by summation order only (a few ulp)
    for got, want in zip([*out, *us, *vs], [*expected, *expect_us, *expect_vs], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert all(w.grad is not None for w in ws)


@pytest.mark.parametrize("fused_s, backend", [
    pytest.param(2.0, "torch", id="reference-faster"),
    pytest.param(0.5, "triton", id="fused-faster"),
])
def test_inception_stats_timing_adds_nothing_to_the_totals(fused_s, backend):
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 16, generator=gen), torch.randn(6, 10, generator=gen)) for _ in range(2)]
    expected = InceptionStats(12, num_features=16, num_classes=10, splits=2)
    with use_backend("torch"):
        for features, logits in batches:
            expected.update(features, logits)
    stats = InceptionStats(12, num_features=16, num_classes=10, splits=2)
    timer = RunningTimer(triton=fused_s, torch=1.0)
    with autoselect_override(timer=timer, can_run=everywhere):
        for features, logits in batches:
            stats.update(features, logits)
        (choice,) = autoselect_choices()
    assert timer.calls == ["triton", "torch"]  # both batches share one key
    assert choice["op"] == "inception_stats_update" and choice["backend"] == backend
    # fp32 tiles (interpreter) against float64: ~1e-6 relative on O(10) sums of squares
    for got, want in zip(stats.totals, expected.totals, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_use_fused_is_the_one_line_dispatch_for_a_new_op():
    """What a new op (the bilinear upsample) calls in place of `use_triton(x)`."""
    x = torch.randn(1, 1, 2, 2)
    timer = FakeTimer(triton=0.5, torch=1.0)
    with autoselect_override(timer=timer):
        assert not use_fused("new_op", (x,), lambda: None, lambda: None)  # CPU under auto: reference, untimed
    with autoselect_override(timer=timer, can_run=everywhere):
        assert use_fused("new_op", (x,), lambda: None, lambda: None)
    assert timer.calls == ["triton", "torch"]


def test_the_search_records_its_choices_in_the_log_and_the_result(tmp_path):
    """A tiny search with `auto` allowed on CPU tensors and the reference always faster: every fused op it
    meets is timed once per key, runs the reference, and the choices reach log.jsonl and result.json."""
    timer = FakeTimer(triton=2.0, torch=1.0)
    out = tmp_path / "run"
    with autoselect_override(timer=timer, can_run=everywhere):
        run_to_success(search_main, [*TINY, "--out", out, "--kernels", "auto"])
    result = json.loads((out / "result.json").read_text())
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    logged = [c for e in events if e["event"] == "kernel_choices" for c in e["choices"]]
    assert result["kernel_choices"] == logged and len(logged) == len(timer.calls) // 2
    assert {"spectral_norm", "inception_stats_update"} <= {c["op"] for c in logged}
    assert all(c["backend"] == "torch" and c["fused_seconds"] == 2.0 for c in logged)
    assert len({(c["op"], json.dumps(c["shapes"]), json.dumps(c["options"])) for c in logged}) == len(logged)


@pytest.mark.parametrize("fused_s, backend", [
    pytest.param(2.0, "torch", id="reference-faster"),
    pytest.param(0.5, "triton", id="fused-faster"),
])
def test_bilinear_upsample_is_routed(fused_s, backend):
    from autogan_fast.kernels.bilinear_upsample import bilinear_upsample

    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    timer = FakeTimer(triton=fused_s, torch=1.0)
    with autoselect_override(timer=timer, can_run=everywhere):
        y = bilinear_upsample(x, 2)
        (choice,) = autoselect_choices()
    assert choice["op"] == "bilinear_upsample" and choice["backend"] == backend
    assert choice["options"] == {"scale_factor": 2, "backward": True}
    assert ("BilinearUpsample" in type(y.grad_fn).__name__) == (backend == "triton")
