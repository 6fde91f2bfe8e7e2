"""Row `reward`: the search reward, Inception Score of 5,000 generated images (full size), per call.

Variants: `eager` is the eager reward (`metrics.scoring.inception_score`: literal PyTorch ops, exact fp32) and
`fp32` / `tf32` / `bf16` the device pipeline (`RewardPipeline`: noise, generator, uint8, feature net and
IS statistics over static buffers, captured as CUDA graphs on a GPU) at each reward precision. Each
call scores the next of 20 distinct stage-2 architectures of a fresh shared GAN (after one warm-up
architecture), seeded by index, so every variant scores the same images; `spearman_vs_fp32` is the
rank correlation of a precision's 20 rewards with fp32's (the rule that may move the default
precision: >= 0.98). The eager reward runs on 3 of them (`max_rel_err_vs_eager` of the others there).
With no Inception weights file the network is randomly initialised (`feature_net` says so).
"""

from __future__ import annotations

import pytest

from autogan_fast.nas.reward import spearman

from .flops import feature_net_flops_per_image
from .harness import PRIORITY_ENGINE, measure, new_info, row_failed, skip_row, synced_perf_counter, variant_skip_reason
from .workloads import RewardRunner, mean_reward_flops, reward_feature_net, reward_gan, shared_config, stream_archs

pytestmark = pytest.mark.benchmark(timer=synced_perf_counter)

ESTIMATE_S = {"eager": 8.0, "fp32": 35.0, "tf32": 10.0, "bf16": 7.0}  # full size on an H100
PEAK_PRECISION = {"eager": "fp32", "fp32": "fp32", "tf32": "tf32", "bf16": "bf16"}


N_ARCHS = {"full": 20, "tiny": 3}  # scored architectures per precision variant (after one warm-up)


@pytest.fixture(scope="module")
def reward_setup(settings):
    """The rows' shared state, built by the first row that runs (a row the budget skips builds nothing):
    a callable returning (config, net, note, archs, gan, flop)."""
    built: list = []

    def get():
        if not built:
            config = shared_config(settings.size)
            net, note, px = reward_feature_net(settings.size, settings.device)
            archs = stream_archs(2, N_ARCHS[settings.size] + 1, config.hid_size, seed=7, distinct=True)  # [0]: warm-up
            gan = reward_gan(config, settings.device)
            per_image = feature_net_flops_per_image(net, px, settings.device)
            flop = mean_reward_flops(gan, config, archs[1:], per_image, settings.device)
            built.append((config, net, note, archs, gan, flop))
        return built[0]

    yield get
    built.clear()


@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.priority(PRIORITY_ENGINE))
                                     for v in ("eager", "fp32", "tf32", "bf16")])
def test_reward(benchmark, request, settings, reward_setup, variant):
    config = shared_config(settings.size)
    rounds = 3 if variant == "eager" else N_ARCHS[settings.size]
    info = new_info("reward", variant, f"IS of {config.rl_num_eval_img} images",
                    images=config.rl_num_eval_img, batch_size=config.eval_batch_size, splits=config.is_splits,
                    architectures=rounds, precision="fp32 (exact)" if variant == "eager" else variant)
    reason = variant_skip_reason(variant, settings, ESTIMATE_S[variant])
    if reason is not None:
        skip_row(benchmark, request, info, reason)
    try:
        config, net, note, archs, gan, flop = reward_setup()
        info["feature_net"] = note
        runner = RewardRunner(variant, config, gan.gen, net, archs, settings.device)
        measure(benchmark, settings, info, runner, rounds=rounds, warmup_rounds=1, flop=flop,
                peak_precision=PEAK_PRECISION[variant], items=config.rl_num_eval_img, unit="images")
    except Exception as exc:
        row_failed(benchmark, request, info, exc, variant)
    rewards = [runner.rewards[i] for i in range(1, rounds + 1)]
    info["rewards"] = rewards
    cache = settings.cache
    if variant == "eager":
        cache["reward_eager"] = rewards
    else:
        eager = cache.get("reward_eager")
        if eager:
            info["max_rel_err_vs_eager"] = max(abs(r - e) / abs(e) for r, e in zip(rewards, eager, strict=False))
        if variant == "fp32":
            cache["reward_fp32"] = rewards
            info["spearman_vs_fp32"] = 1.0
        elif cache.get("reward_fp32") is not None and len(rewards) >= 2:
            info["spearman_vs_fp32"] = spearman(cache["reward_fp32"], rewards)
        if runner.cache is not None:
            info["graph_stats"] = runner.cache.stats.as_dict()
            info["captures"] = runner.cache.stats.captures
    benchmark.extra_info.update(info)
