"""Rows `sn`, `upconv`, `bilinear`, `stats`: each fused op against eager PyTorch and torch.compile (benchmarks/ops.py).

One benchmark per (case, pass, variant); the label names the shape and the pass ("fwd" or "fwd+bwd"),
so speed-ups compare rows of one label. Every non-eager variant's first forward output is checked
against eager's from the same state (`max_rel_err_vs_eager`): a fast wrong kernel is not a result.
"""

from __future__ import annotations

import pytest
import torch

from autogan_fast.kernels import use_backend

from .flops import count_flops
from .harness import (
    PRIORITY_COMPILE,
    PRIORITY_OPS,
    calibrate,
    fresh_compile_state,
    measure,
    new_info,
    row_failed,
    skip_row,
    synced_perf_counter,
    timed,
    variant_skip_reason,
)
from .machine import op_flags
from .ops import CASES, make_case

pytestmark = pytest.mark.benchmark(timer=synced_perf_counter)

VARIANTS = ("eager", "triton", "compile")
PASSES = {"fwd": "fwd", "fwd_bwd": "fwd+bwd"}
# stats: eager float64 (triton: fp32 tiles); bilinear does no multiply-adds the counter sees (no TFLOP/s)
PEAK_PRECISION = {"sn": "fp32", "upconv": "tf32", "bilinear": "fp32", "stats": "fp64"}
COMPILE_ESTIMATE_S = 20.0  # one op's torch.compile warm-up (inductor, cold cache), per pass


def pytest_generate_tests(metafunc):
    if "op_case" not in metafunc.fixturenames:
        return
    size = metafunc.config._autogan_bench.size
    params = []
    for case_id, op, kwargs in CASES[size]:
        for pass_ in PASSES:
            if op == "stats" and pass_ == "fwd_bwd":
                continue  # no backward
            for variant in VARIANTS:
                marks = [pytest.mark.priority(PRIORITY_COMPILE if variant == "compile" else PRIORITY_OPS)]
                params.append(pytest.param((op, kwargs, pass_, variant), id=f"{case_id}-{pass_}-{variant}",
                                           marks=marks))
    metafunc.parametrize("op_case", params)


def _backend(variant: str) -> str:
    return "triton" if variant == "triton" else "torch"


def test_op(benchmark, request, settings, op_case):
    op, kwargs, pass_, variant = op_case
    device = settings.device
    case = make_case(op, kwargs, device, settings.compile_backend)
    info = new_info(op, variant, f"{case.label}, {PASSES[pass_]}", shape=case.shape, pass_=PASSES[pass_])
    if variant == "triton":  # the target is on one pass; [] keeps benchmarks/report.py's default off the other
        info["target"] = ({"min_speedup": case.target, "vs": "eager"}
                          if case.target is not None and pass_ == case.metric else [])
    reason = variant_skip_reason(variant, settings, COMPILE_ESTIMATE_S if variant == "compile" else 1.0)
    if reason is None and variant == "compile" and not case.compile:
        reason = "not compiled at this shape (GPU-time budget: 7 compiled shapes)"
    if reason is not None:
        skip_row(benchmark, request, info, reason)

    if variant == "compile":
        fresh_compile_state()
    with op_flags():
        try:
            with use_backend("torch"), torch.no_grad():
                flop = count_flops(case.build("eager").fwd) * (3 if pass_ == "fwd_bwd" else 1)
            with use_backend(_backend(variant)):
                bench = case.build(variant)
                fn = bench.fwd if pass_ == "fwd" else bench.fwd_bwd
                first_s, _ = timed(fn, device)  # Triton JIT / autotuning, torch.compile, cuDNN autotuning
                if variant != "eager":  # first outputs from the same state: a fresh build of each
                    mine = case.flatten(case.build(variant).fwd())
                    with use_backend("torch"):
                        ref = case.flatten(case.build("eager").fwd())
                    scale = ref.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
                    info["max_rel_err_vs_eager"] = float((mine - ref).abs().max() / scale)
                for _ in range(2 if settings.full else 0):
                    fn()
                rounds, iterations = calibrate(fn, settings)
                info["first_call_seconds"] = first_s
                if variant == "compile":
                    info["compile_seconds"] = first_s
                measure(benchmark, settings, info, fn, rounds=rounds, iterations=iterations, warmup_rounds=1,
                        flop=flop, peak_precision="fp32" if variant == "triton" and op == "stats"
                        else PEAK_PRECISION[op])
        except Exception as exc:
            row_failed(benchmark, request, info, exc, variant)
