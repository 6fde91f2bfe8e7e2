"""Row `reward`: the search reward, Inception Score of 5,000 generated images (full size), per call, per stage.

Variants: `eager` is the eager reward (`metrics.scoring.inception_score`: literal PyTorch ops, exact fp32) and
`fp32` / `tf32` / `bf16` the device pipeline (`RewardPipeline`: noise, generator, uint8, feature net and
IS statistics over static buffers, captured as CUDA graphs on a GPU) at each reward precision.
Labels: one per stage at the search's batch (`search_batch`: the projection's input; each call scores the
next of the architectures a fresh stage-s controller samples, distinct, after one warm-up architecture,
seeded by index, so every variant scores the same images), and at stage 2 the pipeline precisions at
other feature batches. `spearman_vs_fp32` is the rank correlation of a precision's rewards with fp32's
at stage 2's search batch (the rule that may move the default precision: >= 0.98 over >= 20
architectures with trained weights; here over `architectures`, so with random weights it tests numerics
only). The eager reward runs on fewer architectures (`max_rel_err_vs_eager` of the others there).
With no Inception weights file the network is randomly initialised (`feature_net` says so).
"""

from __future__ import annotations

import dataclasses

import pytest

from autogan_fast.nas.reward import spearman

from .flops import feature_net_flops_per_image
from .harness import (
    PRIORITY_END_TO_END,
    PRIORITY_ENGINE,
    measure,
    new_info,
    row_failed,
    skip_row,
    synced_perf_counter,
    variant_skip_reason,
)
from .workloads import (
    RewardRunner,
    mean_reward_flops,
    reward_feature_net,
    reward_gan,
    shared_config,
    stage_label,
    stream_archs,
)

pytestmark = pytest.mark.benchmark(timer=synced_perf_counter)

ESTIMATE_S = {"eager": 3.0, "fp32": 3.0, "tf32": 1.6, "bf16": 1.4}  # seconds per reward, full size on an H100
PEAK_PRECISION = {"eager": "fp32", "fp32": "fp32", "tf32": "tf32", "bf16": "bf16"}
# Architectures scored per row (after one warm-up): (stage 2 at the search batch, the other rows), eager fewer.
N_ARCHS = {"full": (6, 3), "tiny": (3, 2)}
N_ARCHS_EAGER = {"full": (3, 2), "tiny": (2, 1)}
EXTRA_BATCHES = {"full": (500, 1000), "tiny": (5, 20)}  # stage 2 feature batches beside the search's


@pytest.fixture(scope="module")
def reward_setup(settings):
    """The rows' shared state, built by the first row that runs (a row the budget skips builds nothing):
    a callable returning (net, note, gan, per_image_flops)."""
    built: list = []

    def get():
        if not built:
            net, note, px = reward_feature_net(settings.size, settings.device)
            gan = reward_gan(shared_config(settings.size), settings.device)
            built.append((net, note, gan, feature_net_flops_per_image(net, px, settings.device)))
        return built[0]

    yield get
    built.clear()


def _params():
    """Stage 2 at the search batch first (eager, then fp32 before the precisions compared with it), the
    other stages' projection inputs next, then tf32 and the larger batches."""
    first = [(2, None, v) for v in ("eager", "fp32", "bf16")]
    first += [(s, None, v) for s in (0, 1) for v in ("eager", "fp32", "bf16")]
    later = [(2, None, "tf32")] + [(2, b, v) for b in ("x1", "x2") for v in ("fp32", "tf32", "bf16")]
    for i, (stage, batch, variant) in enumerate(first + later):
        yield pytest.param(stage, batch, variant, id=f"stage{stage}-{batch or 'search'}-{variant}",
                           marks=pytest.mark.priority(PRIORITY_ENGINE if i < len(first) else PRIORITY_END_TO_END))


@pytest.mark.parametrize(("stage", "batch", "variant"), list(_params()))
def test_reward(benchmark, request, settings, reward_setup, stage, batch, variant):
    config = shared_config(settings.size)
    search_batch = batch is None
    if not search_batch:  # "x1", "x2": the extra batches in order
        config = dataclasses.replace(config, eval_batch_size=EXTRA_BATCHES[settings.size][int(batch[1:]) - 1])
    main = stage == 2 and search_batch
    counts = N_ARCHS_EAGER if variant == "eager" else N_ARCHS
    rounds = counts[settings.size][0 if main else 1]
    info = new_info("reward", variant, f"{stage_label(stage, config)}: IS of {config.rl_num_eval_img} images, "
                    f"batch {config.eval_batch_size}", stage=stage, search_batch=search_batch,
                    images=config.rl_num_eval_img, batch_size=config.eval_batch_size, splits=config.is_splits,
                    architectures=rounds, precision="fp32 (exact)" if variant == "eager" else variant)
    reason = variant_skip_reason(variant, settings, ESTIMATE_S[variant] * (rounds + 1))
    if reason is not None:
        skip_row(benchmark, request, info, reason)
    try:
        net, note, gan, per_image = reward_setup()
        info["feature_net"] = note
        archs = stream_archs(stage, max(N_ARCHS[settings.size]) + 1, config.hid_size, seed=7, distinct=True)
        flop = mean_reward_flops(gan, config, stage, archs[1:rounds + 1], per_image, settings.device)
        runner = RewardRunner(variant, config, gan.gen, net, archs, settings.device)
        measure(benchmark, settings, info, runner, rounds=rounds, warmup_rounds=1, flop=flop,
                peak_precision=PEAK_PRECISION[variant], items=config.rl_num_eval_img, unit="images")
    except Exception as exc:
        row_failed(benchmark, request, info, exc, variant)
    rewards = [runner.rewards[i] for i in range(1, rounds + 1)]
    info["rewards"] = rewards
    cache = settings.cache.setdefault(("reward", stage, config.eval_batch_size), {})
    if variant == "eager":
        cache["eager"] = rewards
    else:
        eager = cache.get("eager")
        if eager:
            info["max_rel_err_vs_eager"] = max(abs(r - e) / abs(e) for r, e in zip(rewards, eager, strict=False))
        if variant == "fp32":
            cache["fp32"] = rewards
            if main:
                info["spearman_vs_fp32"] = 1.0
        elif main and cache.get("fp32") is not None and len(rewards) >= 2:
            info["spearman_vs_fp32"] = spearman(cache["fp32"], rewards)
        if runner.cache is not None:
            info["graph_stats"] = runner.cache.stats.as_dict()
            info["captures"] = runner.cache.stats.captures
    benchmark.extra_info.update(info)
