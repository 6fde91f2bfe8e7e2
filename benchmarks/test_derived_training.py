"""Row `derived_training`: generator iterations per second of AutoGAN's derived training (gf 256, df 128,
D batch 64, G batch 128, n_critic 5, EMA of G), the paper's CIFAR-10 architecture, synthetic data.

One call = 5 G iterations (each: 5 D steps, the G step and the EMA update after the first), `train`'s
loop without its periodic evaluations, through the variant's engine (graph: two captured graphs).
"""

from __future__ import annotations

import pytest

from .harness import (
    PRIORITY_COMPILE,
    PRIORITY_END_TO_END,
    fresh_compile_state,
    measure,
    new_info,
    row_failed,
    skip_row,
    synced_perf_counter,
    timed,
    variant_skip_reason,
)
from .workloads import DerivedRunner, dynamo_frames, train_config

pytestmark = pytest.mark.benchmark(timer=synced_perf_counter)

ESTIMATE_S = {"eager": 4.0, "triton": 4.0, "graph": 3.0}


@pytest.mark.parametrize("variant", [
    *(pytest.param(v, marks=pytest.mark.priority(PRIORITY_END_TO_END + 1)) for v in ("eager", "triton", "graph")),
    pytest.param("compile", marks=pytest.mark.priority(PRIORITY_COMPILE))])
def test_derived_training(benchmark, request, settings, gan_data, variant):
    config = train_config(settings.size)
    g_iters = 5 if settings.full else 1
    info = new_info("derived_training", variant, f"gf {config.gf_dim}, df {config.df_dim}, {g_iters} G iterations",
                    gf_dim=config.gf_dim, df_dim=config.df_dim, dis_bs=config.dis_bs, gen_bs=config.gen_bs,
                    n_critic=config.n_critic)
    reason = variant_skip_reason(variant, settings, ESTIMATE_S.get(variant, settings.compile_estimate_s))
    if reason is not None:
        skip_row(benchmark, request, info, reason)
    if variant == "compile":
        fresh_compile_state()
    try:
        runner = DerivedRunner(variant, config, gan_data, g_iters, settings.device, settings.compile_backend,
                               settings.compile_mode)
        flop = runner.flop_per_call()
        frames = dynamo_frames() if variant == "compile" else 0
        first, _ = timed(runner, settings.device)  # captures / compiles
        info["first_call_seconds"] = first
        median = measure(benchmark, settings, info, runner, rounds=5 if settings.full else 1, warmup_rounds=1,
                         flop=flop, items=g_iters, unit="G iterations")
    except Exception as exc:
        row_failed(benchmark, request, info, exc, variant)
    if runner.cache is not None:
        info.update(captures=runner.cache.stats.captures, graph_stats=runner.cache.stats.as_dict())
    if variant == "compile":
        info["recompiles"] = dynamo_frames() - frames
        if median is not None:
            info["compile_seconds"] = max(first - median, 0.0)
    benchmark.extra_info.update(info)
