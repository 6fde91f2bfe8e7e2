"""The search as a job (`drive` runs it): AutoGAN's architecture search (`nas.loop`) in a run folder."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import torch

from ..config import SearchConfig, TrainConfig, flag, preset_config
from ..distributed import World
from ..engines.graph import resolve_engine
from ..errors import UsageError
from ..nas.loop import CHECKPOINT_FORMAT, SearchState, run_search
from ..runs.checkpoint import check_entries, load_checkpoint
from ..runs.folder import RESULT
from ..search_space import arch_to_str
from ..tensorboard import ScalarLogger
from .driver import Job
from .inputs import Inputs, open_inputs

# The entries of a search checkpoint and their types, checked before a resume uses any.
CHECKPOINT_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "search_iter": int, "stage": int, "gan": dict, "controller": dict, "ctrl_opt": dict,
    "g_window": dict, "d_window": dict, "fixed_z": torch.Tensor, "beams": (dict, type(None)), "best": dict,
    "wall_seconds": (int, float), "rng": dict,
}


def search_checkpoint(path: Path) -> dict:
    """The search checkpoint at `path`, refused in one line unless it is one of this version's search whose
    entries a resume (or a proxy rescoring) needs are there, with their types."""
    saved = load_checkpoint(path)
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a checkpoint of this version's search "
                         f"(format {saved.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    check_entries(saved, path, CHECKPOINT_ENTRIES)
    if saved["search_iter"] < 0 or saved["stage"] not in (0, 1, 2):
        raise UsageError(f"corrupt checkpoint {path}: search iteration {saved['search_iter']} at stage "
                         f"{saved['stage']}")
    grown = saved["config"].get("search_mode") != "slas" and saved["stage"] > 0  # then it has its beams
    if (saved["beams"] is not None) != grown:
        raise UsageError(f"corrupt checkpoint {path}: {'no' if grown else 'unexpected'} beams at stage "
                         f"{saved['stage']}")
    best = saved["best"].get("inception_score", "missing")
    if not (best is None or isinstance(best, float)):
        raise UsageError(f"corrupt checkpoint {path}: its stage-best Inception Score is {best!r}")
    return saved


class SearchJob(Job):
    """A search run: `SearchConfig`, `SearchState`, `nas.loop.run_search`, result.json's ranked archs."""

    config_cls = SearchConfig
    counter = "search_iter"
    limit = "max_search_iter"
    # Settings a resumed run may change: where things are and how long to go on. Others shape the state.
    resumable = ("max_search_iter", "data_path", "inception_weights", "device", "eval_batch_size", "engine",
                 "graph_cache_size", "reward_precision", "reward_feature_batch", "kernels")

    def __init__(self, config: SearchConfig, saved: dict | None = None, preset: str = "demo"):
        super().__init__(config, saved, preset)
        self.explicit: set[str] = set()  # the settings its command line gave (the rest are the preset's)

    @classmethod
    def prepare(cls, overrides: dict[str, object], preset: str = "demo", resume: Path | None = None) -> SearchJob:
        """A new search: `preset` with `overrides` (the settings given); or the run folder `resume` continued,
        `overrides` naming only `resumable` settings. Refused in one line naming the first bad setting."""
        if resume is None:
            job = cls(cls.new_config(preset, overrides), None, preset)
        else:
            job = cls.resumed(resume, overrides, preset)
        job.explicit = set(overrides)
        return job

    @classmethod
    def checked_checkpoint(cls, path: Path) -> dict:
        return search_checkpoint(path)

    def join(self, world: World, fresh: bool) -> None:
        if fresh and world.distributed and "ctrl_sample_batch" not in self.explicit:
            self.config = dataclasses.replace(self.config, ctrl_sample_batch=world.size)  # one reward per rank

    def finished_message(self, run_dir: Path) -> str:
        return (f"the search in {run_dir} is finished ({self.config.max_search_iter} iterations); give a larger "
                f"--max-search-iter to search on")

    def open(self, world: World) -> Inputs:
        device, data, feature_net = open_inputs(self.config, self.config.bottom_width * 8, world)
        return Inputs(device, data, feature_net, resolve_engine(self.config.engine, device, world.size))

    def create_state(self, inputs: Inputs, world: World) -> SearchState:
        return SearchState.create(self.config, inputs.device, inputs.engine, world)

    def restore_state(self, inputs: Inputs, world: World) -> SearchState:
        return SearchState.from_state_dict(self.saved, self.config, inputs.device, inputs.engine, world)

    def header(self, state: SearchState, inputs: Inputs, run_dir: Path, world: World) -> str:
        return f"{super().header(state, inputs, run_dir, world)}  engine: {inputs.engine}  feature net: " \
               f"{inputs.feature_net.name}"

    def loop(self, state: SearchState, inputs: Inputs, run_dir: Path, stop_after: int | None, quiet: bool,
             curves: ScalarLogger) -> dict | None:
        return run_search(state, inputs.data, inputs.feature_net, run_dir, inputs.device, stop_after=stop_after,
                          quiet=quiet, curves=curves)

    def stopped_at(self, state: SearchState) -> int:
        return state.search_iter - 1

    def report(self, result: dict, run_dir: Path, as_json: bool, finished_before: bool) -> None:
        if as_json:
            print(json.dumps({**result, "run_dir": str(run_dir)}))
            return
        print(f"run folder: {run_dir}  ({result['wall_seconds']:.0f} s on {result['device']})")
        if not result.get("finding", True):
            stages = ", ".join(map(str, result["collapsed_stages"]))
            print(f"NO FINDING: the shared GAN collapsed (or hovered near the floor) at stage {stages}; the "
                  f"ranking below scores noise around one mode (see log.jsonl's collapse events)")
        for rank, entry in enumerate(result["archs"], 1):
            print(f"{rank}. IS {entry['inception_score']:.3f}  {arch_to_str(entry['arch'])}")
        print(f"train the best from scratch: {train_command(self.config, run_dir)}")


def train_command(config: SearchConfig, run_dir: Path) -> str:
    """The `train` command line for the search's top architecture: the train preset that fits (demo on
    the digits, paper otherwise) plus every data / scoring / size setting of the search that differs."""
    preset = "demo" if config.dataset == "digits" else "paper"
    base = preset_config(preset, TrainConfig)
    words = ["python -m autogan_fast.train", f"--preset {preset}",
             f"--arch-from {shlex.quote(str(run_dir / RESULT))}"]
    for name in ("dataset", "data_path", "split", "feature_net", "inception_weights", "bottom_width"):
        value = getattr(config, name)
        if value != getattr(base, name):
            words.append(f"--{flag(name)} {shlex.quote(str(value))}")
    return " ".join(words)


__all__ = ["SearchJob", "search_checkpoint", "train_command"]
