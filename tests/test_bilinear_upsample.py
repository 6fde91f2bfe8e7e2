"""bilinear_upsample: the Triton kernels against F.interpolate(bilinear, align_corners=False) and a
float64 oracle, and its wiring into the generator.

Without CUDA the kernels run under the Triton interpreter (tests/conftest.py): shapes stay tiny; the
real AutoGAN shapes run in the GPU test at the end.
"""

import importlib

import pytest
import torch
import torch.nn.functional as F
from specialization_helpers import constexpr_names, recorded_specializations

from autogan_fast.kernels import bilinear_upsample, bilinear_upsample_ref, use_backend
from autogan_fast.models import generator as generator_module
from autogan_fast.models.generator import SharedGenerator

bu = importlib.import_module("autogan_fast.kernels.bilinear_upsample")  # the package attribute is the function

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

SHAPES = [  # (N, C, H, W, factor)
    pytest.param(1, 1, 1, 1, 2, id="minimal"),  # one pixel: every output clamps to it, both weights on it
    pytest.param(1, 1, 1, 1, 8, id="minimal-x8"),  # one pixel, the widest window (16 outputs per axis)
    pytest.param(2, 3, 5, 7, 2, id="prime-x2"),  # prime sizes, non-square: masks on every axis
    pytest.param(1, 2, 3, 5, 4, id="odd-x4"),  # odd sizes, the x4 skip factor
    pytest.param(1, 1, 3, 2, 8, id="odd-x8"),  # x8, W < H, a window over both borders
    pytest.param(1, 2, 5, 3, 3, id="non-pow2-x3"),  # inexact 1/3: the padded gather window
    pytest.param(1, 1, 4, 4, 1, id="identity-x1"),  # factor 1 is a copy
    pytest.param(2, 4, 8, 8, 2, id="autogan-cell-8to16"),  # x2 cell (real: N 64-128, C 128); 2 row programs
    pytest.param(2, 3, 4, 4, 4, id="autogan-skip-4to16"),  # skip resize of the first cell, x4
    pytest.param(1, 2, 8, 8, 4, id="autogan-skip-8to32"),  # skip resize 8 -> 32 (paper: cell 1 into cell 3)
    pytest.param(1, 1, 2, 130, 2, id="wide-rows"),  # W_out 260 > 128: a row split over column programs
    pytest.param(1, 1, 1, 130, 8, id="wide-rows-x8"),  # backward: 130 input columns over two programs
]

# Tolerance, per STYLE.md: kernel and eager fp32 are both compared with a float64 oracle on the same
# (fp32-representable) inputs; kernel error <= 2 x eager error + atol. A forward output is a convex
# combination of 4 inputs (error a few fp32 ulps of max |x|); a gradient sums at most 4 f^2 <= 256
# weighted terms, summed in another order than eager's: fp32 eps (1.2e-7) x sqrt(256) = 1.9e-6 of
# the magnitude, 4e-6 with headroom. A wrong index or weight is an error of order 1 x magnitude.
ATOL_REL = 4e-6


def _make(n, c, h, w, s, seed=0):
    """fp64 tensors holding fp32-representable values, so both precisions see the same inputs."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).float().double().to(DEVICE)
    grad_y = torch.randn(n, c, h * s, w * s, generator=gen).float().double().to(DEVICE)
    return x, grad_y


def _run(fn, x, grad_y, s, dtype):
    leaf = x.to(dtype).requires_grad_()
    y = fn(leaf, s)
    (grad_x,) = torch.autograd.grad(y, leaf, grad_y.to(dtype))
    return {"y": y.detach(), "grad_x": grad_x}


def _check_against_fp64(x, grad_y, s, atol_rel=ATOL_REL, dtype=torch.float32):
    exact = _run(bilinear_upsample_ref, x, grad_y, s, torch.float64)
    eager = _run(bilinear_upsample_ref, x, grad_y, s, dtype)
    with use_backend("triton"):
        kernel = _run(bilinear_upsample, x, grad_y, s, dtype)
    for name, ref in exact.items():
        assert kernel[name].dtype == dtype, name
        assert kernel[name].shape == ref.shape, name
        atol = atol_rel * max(1.0, ref.abs().max().item())
        err_kernel = (kernel[name].double() - ref).abs().max().item()
        err_eager = (eager[name].double() - ref).abs().max().item()
        assert err_kernel <= 2 * err_eager + atol, f"{name}: kernel {err_kernel:.3g}, eager {err_eager:.3g}"


@pytest.mark.parametrize(("n", "c", "h", "w", "s"), SHAPES)
def test_matches_reference(n, c, h, w, s):
    _check_against_fp64(*_make(n, c, h, w, s), s)


@pytest.mark.parametrize(("n", "c", "h", "w", "s"), [
    pytest.param(1, 2, 3, 4, 2, id="x2"),  # the generator's upsample
    pytest.param(1, 1, 2, 3, 3, id="x3"),  # inexact 1/3 and the padded window
    pytest.param(1, 1, 2, 2, 4, id="x4"),  # the skip factor
])
def test_float64_matches_the_reference_to_rounding(n, c, h, w, s):
    """fp64 runs the kernels in fp64 (the gradcheck below needs it): agreement to fp64 rounding."""
    x, grad_y = _make(n, c, h, w, s, seed=1)
    exact = _run(bilinear_upsample_ref, x, grad_y, s, torch.float64)
    with use_backend("triton"):
        kernel = _run(bilinear_upsample, x, grad_y, s, torch.float64)
    for name, ref in exact.items():
        torch.testing.assert_close(kernel[name], ref, atol=1e-13 * max(1.0, ref.abs().max().item()), rtol=0,
                                   msg=name)


@pytest.mark.parametrize("s", [2, 3], ids=["x2", "x3"])
def test_gradcheck_float64(s):
    """The backward kernel is the forward kernel's adjoint (finite differences through the interpreter)."""
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    with use_backend("triton"):
        assert "BilinearUpsample" in type(bilinear_upsample(x, s).grad_fn).__name__  # the kernels, not the ref
        assert torch.autograd.gradcheck(lambda t: bilinear_upsample(t, s), (x,), eps=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("dtype", "atol_rel"),
    [
        # fp16 storage, fp32 arithmetic: rounding the result to fp16 costs half an ulp, 4.9e-4 of the
        # magnitude (the gradient: of its own magnitude); 2e-3 with headroom. Eager gets fp16 inputs too
        pytest.param(torch.float16, 2e-3, id="fp16"),
        # bf16's 8-bit mantissa (eps 7.8e-3); the interpreter has no bf16, so CUDA only
        pytest.param(torch.bfloat16, 1.6e-2, id="bf16", marks=pytest.mark.gpu),
    ],
)
def test_half_precision(dtype, atol_rel):
    x, grad_y = _make(2, 3, 4, 5, 2, seed=2)
    _check_against_fp64(x.to(dtype).double(), grad_y.to(dtype).double(), 2, atol_rel=atol_rel, dtype=dtype)


def test_empty_batch():
    # no launch at all (an empty grid); shapes and dtypes still those of the reference
    x, grad_y = _make(0, 3, 3, 2, 2)
    eager = _run(bilinear_upsample_ref, x, grad_y, 2, torch.float32)
    with use_backend("triton"):
        kernel = _run(bilinear_upsample, x, grad_y, 2, torch.float32)
    for name, ref in eager.items():
        assert kernel[name].shape == ref.shape and kernel[name].dtype == ref.dtype, name


def test_non_contiguous_input():
    # a channels-last input (what --precision's channels-last would pass) and a transposed view
    x, _ = _make(2, 3, 4, 5, 2, seed=3)
    ref = bilinear_upsample_ref(x.float(), 2)
    with use_backend("triton"):
        for view in (x.float().to(memory_format=torch.channels_last), x.float().transpose(2, 3).contiguous()
                     .transpose(2, 3)):
            assert not view.is_contiguous()
            torch.testing.assert_close(bilinear_upsample(view, 2), ref, atol=ATOL_REL, rtol=0)


def test_torch_compile_sees_one_graph():
    """The custom ops and their fake impls let torch.compile trace forward and backward fullgraph."""
    x, grad_y = _make(2, 3, 4, 3, 2, seed=5)
    x = x.float().requires_grad_()

    def loss(t):
        return (bilinear_upsample(t, 2) * grad_y.float()).sum()

    with use_backend("triton"):
        expected = torch.autograd.grad(loss(x), x)[0]
        got = torch.autograd.grad(torch.compile(loss, backend="aot_eager", fullgraph=True)(x), x)[0]
    torch.testing.assert_close(got, expected, atol=0, rtol=0)  # the same kernels


@pytest.mark.gpu
def test_auto_backend_runs_the_faster_side_on_cuda():
    """`auto` times both sides once per key (kernels/autoselect.py) and runs the faster one."""
    from autogan_fast.kernels import autoselect_choices
    from autogan_fast.kernels.autoselect import autoselect_override

    x = torch.randn(1, 2, 3, 3, device="cuda", requires_grad=True)
    with autoselect_override():  # the real timer, a fresh registry
        y = bilinear_upsample(x, 2)
        (choice,) = autoselect_choices()
    assert choice["note"] == "timed" and choice["fused_seconds"] > 0 and choice["reference_seconds"] > 0
    assert ("BilinearUpsample" in type(y.grad_fn).__name__) == (choice["backend"] == "triton")


# ---------------------------------------------------------------------------------------------
# Argument checks: the same ValueError, naming the argument, from both backends.

BAD = [  # (x, scale_factor, text the error must hold)
    pytest.param(lambda: torch.randn(3, 4, 4), 2, "x must have 4 dims", id="x-rank"),
    pytest.param(lambda: torch.ones(1, 1, 2, 2, dtype=torch.long), 2, "x must be a floating-point", id="x-integer"),
    pytest.param(lambda: [[1.0]], 2, "x must be a torch.Tensor", id="x-not-tensor"),
    pytest.param(lambda: torch.randn(1, 1, 0, 3), 2, "x must have non-empty C, H and W", id="x-empty-H"),
    pytest.param(lambda: torch.randn(2, 0, 3, 3), 2, "x must have non-empty C, H and W", id="x-empty-C"),
    pytest.param(lambda: torch.randn(1, 1, 2, 2), 2.0, "scale_factor must be an int, got float", id="factor-float"),
    pytest.param(lambda: torch.randn(1, 1, 2, 2), True, "scale_factor must be an int, got bool", id="factor-bool"),
    pytest.param(lambda: torch.randn(1, 1, 2, 2), 0, "scale_factor must be >= 1, got 0", id="factor-zero"),
    pytest.param(lambda: torch.randn(1, 1, 2, 2), -2, "scale_factor must be >= 1, got -2", id="factor-negative"),
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(("make_x", "factor", "message"), BAD)
def test_bad_argument_raises(backend, make_x, factor, message):
    x = make_x()
    if isinstance(x, torch.Tensor):
        x = x.to(DEVICE)
    with use_backend(backend), pytest.raises(ValueError, match=message):
        bilinear_upsample(x, factor)


# ---------------------------------------------------------------------------------------------
# Compile cache: per-call sizes must not specialize the kernels.

KERNELS = [bu._bilinear_upsample_fwd_kernel, bu._bilinear_upsample_bwd_kernel]
ALLOWED_CONSTEXPRS = {"SCALE", "WIN_PAD", "ACC_DTYPE", "BLOCK_R", "BLOCK_W", "BLOCK_K"}


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
def test_only_factor_dtype_and_blocks_are_constexpr(kernel):
    names = constexpr_names(kernel)
    assert "SCALE" in names, "no SCALE constexpr found: the annotation check itself is broken"
    assert names <= ALLOWED_CONSTEXPRS, f"per-call values marked constexpr: {names - ALLOWED_CONSTEXPRS}"


# One family: growing batch, channels and sizes that keep the block configuration (output width
# 8 -> BLOCK_W 8; input width 3-4 -> BLOCK_W 4). No size is 1 or a multiple of 16 (Triton's integer
# specializations), so every call must hit the kernels compiled for the first.
FAMILY = [(2, 3, 3, 4), (3, 5, 5, 4), (5, 2, 2, 4)]  # (N, C, H, W), factor 2


def test_new_sizes_do_not_add_specializations():
    with recorded_specializations(KERNELS) as seen:
        for n, c, h, w in FAMILY:
            x, grad_y = _make(n, c, h, w, 2)
            with use_backend("triton"):
                _run(bilinear_upsample, x, grad_y, 2, torch.float32)
    for name, keys in seen.items():
        assert len(keys) == len(FAMILY), f"{name} launched {len(keys)} times"
        assert len(set(keys)) == 1, f"{name}: new sizes added specializations: {set(keys)}"


def test_blocks_keep_the_tile_sizes():
    """The launchers' block picks: powers of two, the tile budget, and the window covering 2 x factor."""
    for w_out in (1, 4, 8, 16, 32, 64, 128, 256, 1000):
        block_r, block_w = bu.fwd_blocks(w_out)
        assert block_w >= min(w_out, bu._MAX_BLOCK_W) and block_r * block_w == bu._FWD_TILE
    for s in (1, 2, 3, 4, 8):
        for w_in in (1, 2, 3, 16, 130):
            block_r, block_w, block_k = bu.bwd_blocks(w_in, s)
            assert block_k >= 2 * s + 2 * bu._window_pad(s)
            assert block_r * block_w * block_k <= max(bu._BWD_TILE, block_k)


# ---------------------------------------------------------------------------------------------
# The generator calls the op for every bilinear resize.

# every cell bilinear with a shortcut; cell 2 skips from cell 1, cell 3 from cells 1 and 2 (mask 3)
ALL_BILINEAR = (0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 2, 0, 1, 3)
BILINEAR_CALLS = 2 + 3 + 4  # per cell: block 1 and shortcut, plus one per skip-in


def _generator_output(seed=0):
    torch.manual_seed(seed)
    gen = SharedGenerator(latent_dim=8, gf_dim=4, bottom_width=2)
    return gen(torch.randn(2, 8), ALL_BILINEAR)


def test_generator_cpu_path_is_the_interpolate_it_replaced(monkeypatch):
    """On the CPU the generator computes exactly what it did before the op existed (bit for bit)."""
    calls = []

    def old_interpolate(x, factor):  # the generator's former expression (scale_factor=2 / size=...)
        calls.append(factor)
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

    new = _generator_output()
    monkeypatch.setattr(generator_module, "bilinear_upsample", old_interpolate)
    old = _generator_output()
    assert sorted(calls) == [2] * 8 + [4], calls  # x2 everywhere but cell 1 into cell 3 (4 -> 16 px)
    assert torch.equal(new, old)


def test_generator_runs_the_kernels_when_forced(monkeypatch):
    launches = []
    forward = bu.bilinear_upsample_forward
    monkeypatch.setattr(bu, "bilinear_upsample_forward", lambda x, s: launches.append(s) or forward(x, s))
    eager = _generator_output()
    with use_backend("triton"):
        fused = _generator_output()
    assert len(launches) == BILINEAR_CALLS
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)  # fp32 reordering through a few layers


# ---------------------------------------------------------------------------------------------
# GPU: the real AutoGAN shapes.

AUTOGAN_SHAPES = [
    pytest.param(64, 128, 8, 8, 2, id="cell-8to16"),
    pytest.param(128, 128, 16, 16, 2, id="cell-16to32"),
    pytest.param(64, 128, 8, 8, 4, id="skip-8to32"),
]


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "c", "h", "w", "s"), AUTOGAN_SHAPES)
def test_autogan_shapes_on_gpu(n, c, h, w, s):
    _check_against_fp64(*_make(n, c, h, w, s, seed=4), s)
