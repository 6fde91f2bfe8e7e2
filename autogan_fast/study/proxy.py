"""The proxy score of any architecture: its reward on a finished search's shared GAN.

The search ranks architectures by this number (the Inception Score of the weight-sharing generator set to
the architecture, from `rl_num_eval_img` images). Proxy-vs-final asks whether it predicts what the
architecture scores when trained from scratch: this module scores a given list of architectures on a
search's final checkpoint with the search's own reward, into a run folder of its own (config.json,
result.json), so a study resumes past it like past any run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..cli import resolve_device, select_kernels
from ..config import config_from_dict
from ..errors import UsageError
from ..metrics import load_feature_net
from ..nas.loop import SearchState, score_archs
from ..nas.reward import RewardPipeline
from ..run_dir import CHECKPOINT, CONFIG, RESULT, restoring, write_json
from ..search import resumed_checkpoint
from ..search_space import validate_arch


def rescore(search_dir: Path, archs: list[list[int]], out_dir: Path, seed: int) -> dict:
    """Score every architecture in `archs` (14 integers each) on the final shared GAN of the finished search
    in `search_dir`; write `out_dir`/config.json and, last, result.json (atomically). Returns the result."""
    saved = resumed_checkpoint(search_dir)
    try:
        config = config_from_dict(saved["config"])
    except UsageError as err:
        raise UsageError(f"corrupt checkpoint {search_dir / CHECKPOINT}: {err}") from None
    if saved["search_iter"] < config.max_search_iter:
        raise UsageError(f"{search_dir}: the search is not finished ({saved['search_iter']} of "
                         f"{config.max_search_iter} iterations); its shared GAN is no final proxy")
    archs = [list(validate_arch(arch, stage=2)) for arch in archs]
    device = resolve_device(config.device)
    select_kernels(config.kernels, device)
    feature_net = load_feature_net(config.resolved_feature_net(), device, config.inception_weights)
    with restoring(search_dir / CHECKPOINT):
        state = SearchState.from_state_dict(saved, config, device, "eager")  # rescoring needs no graphs
    state.reward = RewardPipeline(feature_net, config.rl_num_eval_img, config.eval_batch_size, config.is_splits,
                                  config.latent_dim, device, config.reward_precision,
                                  feature_batch=config.reward_feature_batch)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / CONFIG, {"search_run": str(search_dir), "archs": archs, "seed": seed})
    torch.manual_seed(seed)  # the reward's noise: the same draws for a rerun
    scores = score_archs(state, archs, feature_net, device)  # host sync: one per architecture
    result = {"search_run": str(search_dir), "rl_num_eval_img": config.rl_num_eval_img,
              "archs": [{"arch": arch, "proxy_is": value} for arch, value in zip(archs, scores, strict=True)]}
    write_json(out_dir / RESULT, result)
    return result


__all__ = ["rescore"]
