"""Row `search_iteration`: a stated fraction of one search iteration at paper settings, and the projected
wall time of the whole 65-iteration paper search on this machine.

One call: 117 of the paper iteration's 11,715 D steps (1%) of shared training at each of the three
stages (a stream of controller samples, sampled before the timing), then 1 of the 30 controller steps
(a REINFORCE update scored by one reward of 5,000 images) at stage 2; CIFAR-shaped synthetic data. The
GAN, the controllers and the graph caches persist across calls, as across a search's iterations; the
first call (captures) is the warm-up. `projected_paper_search_seconds` = sum over stages of
iterations x (shared time / fraction + 30 x reward time) + the 30 rewards of the two grows and the final
top-k, from the median part times (`projection` lists them). The reward runs at the search's default
precision (`reward_precision`); the eager variant is the eager engine with the eager fp32 reward.
"""

from __future__ import annotations

import pytest

from .flops import feature_net_flops_per_image
from .harness import (
    PRIORITY_COMPILE,
    PRIORITY_END_TO_END,
    measure,
    new_info,
    row_failed,
    skip_row,
    synced_perf_counter,
    variant_skip_reason,
)
from .workloads import SearchRunner, reward_feature_net, search_plan, shared_config

pytestmark = pytest.mark.benchmark(timer=synced_perf_counter)

ESTIMATE_S = {"eager": 14.0, "triton": 10.0, "graph": 8.0}
SEARCH_TARGET_S = 30 * 60


@pytest.mark.parametrize("variant", [
    pytest.param("eager", marks=pytest.mark.priority(PRIORITY_END_TO_END)),
    pytest.param("graph", marks=pytest.mark.priority(PRIORITY_END_TO_END)),
    pytest.param("triton", marks=pytest.mark.priority(PRIORITY_END_TO_END + 1)),
    pytest.param("compile", marks=pytest.mark.priority(PRIORITY_COMPILE)),
])
def test_search_iteration(benchmark, request, settings, gan_data, variant):
    config = shared_config(settings.size)
    plan = search_plan(settings.size)
    info = new_info("search_iteration", variant, plan.label(), fraction_of_shared_training=plan.fraction,
                    ctrl_steps=plan.ctrl_steps, data="CIFAR-shaped synthetic uint8 (torch.randint), "
                    f"{len(gan_data)} images", target_seconds=SEARCH_TARGET_S)
    if variant == "compile":
        skip_row(benchmark, request, info, "not run: torch.compile recompiles for every new architecture of the "
                 "search's stream (see the gan_unit rows' compile_seconds and recompiles)")
    reason = variant_skip_reason(variant, settings, ESTIMATE_S[variant])
    if reason is not None:
        skip_row(benchmark, request, info, reason)
    warmup, rounds = 1, 2 if settings.full else 1
    runner = None
    try:
        net, note, px = reward_feature_net(settings.size, settings.device)
        info["feature_net"] = note
        runner = SearchRunner(variant, config, gan_data, net, plan, warmup + rounds, settings.device)
        flop = runner.flop_per_call(feature_net_flops_per_image(net, px, settings.device))
        measure(benchmark, settings, info, runner, rounds=rounds, warmup_rounds=warmup, flop=flop,
                peak_precision="tf32")
        info.update(runner.projection(skip_first=warmup))
        info["first_call_seconds"] = sum(runner.parts[0].values())
    except Exception as exc:
        row_failed(benchmark, request, info, exc, variant)
    finally:
        if runner is not None:
            runner.close()
    if runner.graphs is not None:
        info.update(captures=runner.graphs.stats.captures, graph_stats={
            "shared": runner.graphs.stats.as_dict(), "reward": runner.reward_graphs.stats.as_dict()})
    benchmark.extra_info.update(info)
