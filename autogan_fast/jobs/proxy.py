"""The proxy score of any architecture as a job (`drive` runs it): its reward on a finished search's shared GAN.

The search ranks architectures by this number (the Inception Score of the weight-sharing generator set to
the architecture, from `rl_num_eval_img` images). Proxy-vs-final asks whether it predicts what the
architecture scores when trained from scratch: this job scores a given list of architectures on a
search's final checkpoint with the search's own reward, into a run folder of its own (config.json,
result.json), so a study resumes past it like past any run. One pass, no checkpoint: a folder without
its result is scored afresh (the same numbers: the noise is seeded).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import SearchConfig
from ..distributed import World
from ..errors import UsageError
from ..metrics import load_feature_net
from ..nas.loop import SearchState, score_archs
from ..nas.reward import RewardPipeline
from ..runs.checkpoint import restoring, write_json
from ..runs.folder import CHECKPOINT, RESULT
from ..search_space import validate_arch
from ..tensorboard import ScalarLogger
from .driver import Job
from .inputs import Inputs, resolve_device, select_kernels
from .search import search_checkpoint


class ProxyJob(Job):
    """Rescoring `archs` (14 integers each) on the final shared GAN of the finished search in `search_dir`."""

    config_cls = SearchConfig
    counter = "search_iter"

    def __init__(self, search_dir: Path, archs: list[list[int]], seed: int):
        path = search_dir / CHECKPOINT
        saved = search_checkpoint(path)
        config = self.checkpoint_config(saved, path)
        if saved["search_iter"] < config.max_search_iter:
            raise UsageError(f"{search_dir}: the search is not finished ({saved['search_iter']} of "
                             f"{config.max_search_iter} iterations); its shared GAN is no final proxy")
        super().__init__(config)  # no checkpoint of its own: every run of it starts fresh
        self.search_dir = search_dir  # the search whose shared GAN scores
        self.search_state = saved  # that search's final checkpoint
        self.archs = [list(validate_arch(arch, stage=2)) for arch in archs]  # the architectures scored
        self.seed = seed  # the reward noise's seed

    def open(self, world: World) -> Inputs:
        device = resolve_device(self.config.device)
        select_kernels(self.config.kernels, device)
        feature_net = load_feature_net(self.config.resolved_feature_net(), device, self.config.inception_weights)
        return Inputs(device, None, feature_net)

    def record(self) -> dict:
        return {"search_run": str(self.search_dir), "archs": self.archs, "seed": self.seed}

    def create_state(self, inputs: Inputs, world: World) -> SearchState:
        config = self.config
        with restoring(self.search_dir / CHECKPOINT):
            state = SearchState.from_state_dict(self.search_state, config, inputs.device, "eager")  # no graphs
        state.reward = RewardPipeline(inputs.feature_net, config.rl_num_eval_img, config.eval_batch_size,
                                      config.is_splits, config.latent_dim, inputs.device, config.reward_precision,
                                      feature_batch=config.reward_feature_batch)
        return state

    def loop(self, state: SearchState, inputs: Inputs, run_dir: Path, stop_after: int | None, quiet: bool,
             curves: ScalarLogger) -> dict:
        torch.manual_seed(self.seed)  # the reward's noise: the same draws for a rerun
        scores = score_archs(state, self.archs, inputs.feature_net, inputs.device)  # host sync: one per arch
        result = {"search_run": str(self.search_dir), "rl_num_eval_img": self.config.rl_num_eval_img,
                  "archs": [{"arch": arch, "proxy_is": value} for arch, value in zip(self.archs, scores, strict=True)]}
        write_json(run_dir / RESULT, result)
        return result

    def report(self, result: dict, run_dir: Path, as_json: bool, finished_before: bool) -> None:
        if as_json:
            print(json.dumps({**result, "run_dir": str(run_dir)}))
        else:
            for entry in result["archs"]:
                print(f"proxy IS {entry['proxy_is']:.3f}  {entry['arch']}")


__all__ = ["ProxyJob"]
