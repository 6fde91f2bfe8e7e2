"""Row `gan_unit`: one shared-GAN unit (n_critic = 5 D steps + 1 G step) at each stage, paper sizes.

Label "stage s (N px)": the D steps take their architectures in turn from a stream sampled by a fresh
stage-s controller (random beams for stages 1 and 2), the same stream for every variant, as the search
feeds `train_shared(_graph)`. The first pass over the stream is timed apart (`first_pass_seconds`): it
holds the graph captures (`captures`, `graph_stats`) and torch.compile's compiles; the rounds timed by
pytest-benchmark are the next passes (graphs replayed).
Label "stage 2 (32 px), one arch": the stream's first architecture only, so torch.compile compiles once
(each new architecture recompiles: `compile_seconds`); the graph variant's target vs compile is here.
The compile variant of a stream label runs only when the budget allows a recompile per architecture.
"""

from __future__ import annotations

import pytest

from .harness import (
    PRIORITY_COMPILE,
    PRIORITY_COMPILE_TARGET,
    PRIORITY_ENGINE,
    fresh_compile_state,
    measure,
    new_info,
    row_failed,
    skip_row,
    synced_perf_counter,
    timed,
    variant_skip_reason,
)
from .workloads import STAGES, UnitRunner, dynamo_frames, shared_config, stage_label, stream_archs

pytestmark = pytest.mark.benchmark(timer=synced_perf_counter)

GRAPH_TARGETS = [{"min_speedup": 4.0, "vs": "eager"}, {"min_speedup": 1.3, "vs": "compile"}]
# Expected seconds of one row on an H100 (for the budget): eager / fused / graph rows are short.
ESTIMATE_S = {"eager": 3.0, "triton": 3.0, "graph": 4.0}


def _params():
    for stage in STAGES:
        for one_arch in (False, True):
            if one_arch and stage != 2:
                continue
            for variant in ("eager", "triton", "graph", "compile"):
                if variant == "compile":
                    priority = PRIORITY_COMPILE_TARGET if one_arch else PRIORITY_COMPILE
                else:
                    priority = PRIORITY_ENGINE
                kind = "one-arch" if one_arch else "stream"
                yield pytest.param(stage, one_arch, variant, id=f"stage{stage}-{kind}-{variant}",
                                   marks=[pytest.mark.priority(priority)])


@pytest.mark.parametrize(("stage", "one_arch", "variant"), list(_params()))
def test_gan_unit(benchmark, request, settings, gan_data, stage, one_arch, variant):
    config = shared_config(settings.size)
    units = 6 if settings.full else 2  # units per pass over the stream
    passes = 2 if settings.full else 1  # timed passes
    stream = stream_archs(stage, units * config.n_critic, config.hid_size)
    if one_arch:
        stream = [stream[0]] * len(stream)
    distinct = len({tuple(a) for a in stream})
    label = stage_label(stage, config) + (", one arch" if one_arch else "")
    info = new_info("gan_unit", variant, label, stage=stage, archs_per_pass=len(stream), distinct_archs=distinct,
                    units_per_pass=units, d_steps_per_unit=config.n_critic, dis_bs=config.dis_bs,
                    gen_bs=config.gen_bs, gf_dim=config.gf_dim, df_dim=config.df_dim)
    if variant == "graph":
        info["target"] = GRAPH_TARGETS
    estimate = ESTIMATE_S.get(variant, distinct * settings.compile_estimate_s)
    reason = variant_skip_reason(variant, settings, estimate)
    if reason is not None:
        skip_row(benchmark, request, info, reason)

    device = settings.device
    if variant == "compile":
        fresh_compile_state()
    runner = None
    try:
        runner = UnitRunner(variant, config, gan_data, stage, stream, device, settings.compile_backend,
                            settings.compile_mode)
        flop = runner.flop_per_unit(units)  # counted before any step: eval-mode forwards, no grad
        frames = dynamo_frames()
        first_pass, _ = timed(lambda: [runner() for _ in range(units)], device)  # captures / compiles
        info.update(first_pass_seconds=first_pass, first_call_seconds=first_pass)
        median = measure(benchmark, settings, info, runner, rounds=units * passes, flop=flop,
                         items=config.n_critic, unit="D steps")
    except Exception as exc:
        row_failed(benchmark, request, info, exc, variant)
    finally:
        if runner is not None:
            runner.close()
    if runner.cache is not None:
        info.update(captures=runner.cache.stats.captures, graph_stats=runner.cache.stats.as_dict())
    if variant == "compile":
        info["recompiles"] = dynamo_frames() - frames
        if median is not None:
            info["compile_seconds"] = max(first_pass - units * median, 0.0)
            settings.compile_estimate_s = max(settings.compile_estimate_s, first_pass / distinct)
    benchmark.extra_info.update(info)
