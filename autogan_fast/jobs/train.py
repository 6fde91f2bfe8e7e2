"""Derived training as a job (`drive` runs it): a discovered architecture trained from scratch
(`training.loop`) in a run folder, scored against the data's reference statistics."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from ..config import TrainConfig
from ..distributed import World
from ..engines.graph import resolve_engine
from ..errors import UsageError
from ..metrics.reference import reference_statistics
from ..nas.collapse import COLLAPSE_IS
from ..pretrained import check_train_checkpoint
from ..runs.checkpoint import check_entries, load_checkpoint, parse_json
from ..runs.folder import CONFIG, RESULT
from ..search_space import arch_to_str, validate_arch
from ..tensorboard import ScalarLogger
from ..training.loop import TrainState, train
from .driver import Job
from .inputs import Inputs, open_inputs

# AutoGAN's best CIFAR-10 generator (the paper's Figure 3), trained when no architecture is given.
PAPER_ARCH = (1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3)

# The entries of a train checkpoint and their types, checked before a resume uses any.
CHECKPOINT_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "arch": list, "iter": int, "gen": dict, "ema": dict, "dis": dict, "gen_opt": dict,
    "dis_opt": dict, "fixed_z": torch.Tensor, "metrics": (dict, type(None)), "best": (dict, type(None)),
    "wall_seconds": (int, float), "rng": dict, "real_batches": (dict, type(None)),
}


def arch_from_result(path: Path, rank: int) -> tuple[int, ...]:
    """The architecture ranked `rank` (1-based) in a search's result.json (a run folder means its result.json)."""
    if path.is_dir():
        path = path / RESULT
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--arch-from {path}: no such file (give a search run's result.json)") from None
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON or nested too deeply
        raise UsageError(f"--arch-from {path}: not a search result.json ({err})") from None
    archs = data.get("archs") if isinstance(data, dict) else None
    if not isinstance(archs, list) or not all(isinstance(e, dict) and "arch" in e for e in archs):
        raise UsageError(f"--arch-from {path}: not a search result.json (no list of 'archs' with an 'arch' each)")
    if not 1 <= rank <= len(archs):
        raise UsageError(f"--rank {rank} is out of range: {path} ranks {len(archs)} architectures "
                         f"(1..{len(archs)})")
    try:
        return validate_arch(archs[rank - 1]["arch"], stage=2)
    except UsageError as err:
        raise UsageError(f"--arch-from {path} rank {rank}: {err}") from None


class TrainJob(Job):
    """A derived-training run: `TrainConfig` and an architecture, `TrainState`, `training.loop.train`,
    result.json's final scores."""

    config_cls = TrainConfig
    counter = "iter"
    limit = "max_iter"
    # Settings a resumed run may change: where things are, how long to go on and how it is scored.
    resumable = ("max_iter", "data_path", "inception_weights", "device", "engine", "eval_batch_size",
                 "val_freq", "num_eval_imgs", "kernels")
    record_extras = ("arch", "preset")

    def __init__(self, config: TrainConfig, arch: tuple[int, ...], saved: dict | None = None,
                 preset: str = "demo"):
        super().__init__(config, saved, preset)
        self.arch = arch  # the architecture trained (14 integers)

    @classmethod
    def checked_checkpoint(cls, path: Path) -> dict:
        saved = load_checkpoint(path)
        check_train_checkpoint(saved, path)
        check_entries(saved, path, CHECKPOINT_ENTRIES)
        if saved["iter"] < 0 or (saved["best"] is not None and not isinstance(saved["best"].get("fid"), float)):
            raise UsageError(f"corrupt checkpoint {path}: iteration {saved['iter']}, best metrics {saved['best']}")
        try:
            validate_arch(saved["arch"], stage=2)
        except UsageError as err:
            raise UsageError(f"corrupt checkpoint {path}: {err}") from None
        return saved

    @classmethod
    def from_record(cls, config: TrainConfig, record: dict, run_dir: Path, preset: str) -> TrainJob:
        try:
            arch = validate_arch(record.get("arch", ()), stage=2)
        except UsageError as err:
            raise UsageError(f"cannot resume {run_dir} from its {CONFIG}: {err}") from None
        return cls(config, arch, None, preset)

    @classmethod
    def from_checkpoint(cls, config: TrainConfig, saved: dict, preset: str) -> TrainJob:
        return cls(config, tuple(saved["arch"]), saved, preset)

    def finished_message(self, run_dir: Path) -> str:
        return (f"the training in {run_dir} is finished ({self.config.max_iter} G iterations); give a larger "
                f"--max-iter to train on")

    def open(self, world: World) -> Inputs:
        config = self.config
        resolution = config.bottom_width * 8
        device, data, feature_net = open_inputs(config, resolution, world)
        engine = resolve_engine(config.engine, device, world.size)
        reference = reference_statistics(config.dataset, config.data_path, config.split, resolution, feature_net,
                                         lambda: data.images, config.eval_batch_size, device, world=world)
        return Inputs(device, data, feature_net, engine, reference)

    def record(self) -> dict:
        return {**dataclasses.asdict(self.config), "arch": list(self.arch), "preset": self.preset}

    def create_state(self, inputs: Inputs, world: World) -> TrainState:
        return TrainState.create(self.config, self.arch, inputs.device, inputs.engine, world)

    def restore_state(self, inputs: Inputs, world: World) -> TrainState:
        return TrainState.from_state_dict(self.saved, self.config, inputs.device, inputs.engine, world)

    def resume_point(self, state: TrainState) -> int:
        return state.iter + 1  # the checkpoint's own evaluation is logged: kept

    def header(self, state: TrainState, inputs: Inputs, run_dir: Path, world: World) -> str:
        params = sum(p.numel() for p in state.gen.parameters())
        return (f"{super().header(state, inputs, run_dir, world)}  feature net: {inputs.feature_net.name}  G: "
                f"{params:,} parameters\narch: {arch_to_str(self.arch)}")

    def loop(self, state: TrainState, inputs: Inputs, run_dir: Path, stop_after: int | None, quiet: bool,
             curves: ScalarLogger) -> dict | None:
        return train(state, inputs.data, inputs.feature_net, inputs.reference, run_dir, inputs.device,
                     stop_after=stop_after, quiet=quiet, curves=curves)

    def report(self, result: dict, run_dir: Path, as_json: bool, finished_before: bool) -> None:
        if result.get("collapsed") and not finished_before:  # a warning even with --quiet: it changes the score
            print(collapse_warning(result), file=sys.stderr)
        if as_json:
            print(json.dumps({**result, "run_dir": str(run_dir)}))
            return
        best = result["best"]
        print(f"run folder: {run_dir}  ({result['wall_seconds']:.0f} s on {result['device']})")
        print(f"IS {result['inception_score']:.3f} ± {result['inception_score_std']:.3f}  FID {result['fid']:.3f}  "
              f"(EMA generator, iteration {result['iter']}, {result['num_eval_imgs']} images)")
        tail = result.get("tail_mean")  # absent from results of runs finished before it was added
        if tail is not None:
            print(f"mean of the last {tail['evals']} evaluations: IS {tail['inception_score']:.3f}  FID "
                  f"{tail['fid']:.3f} (the final score to rank architectures by)")
        print(f"best FID {best['fid']:.3f} at iteration {best['iter']} (best.pt)")
        if result.get("collapsed"):  # absent from results of runs finished before it was added
            print(f"COLLAPSED: its last evaluations scored IS below {COLLAPSE_IS}; the scores above rank no "
                  f"architecture")


def collapse_warning(result: dict) -> str:
    return (f"warning: the training collapsed (IS {result['inception_score']:.3f} at its last evaluation; the "
            f"search's collapse test: IS below {COLLAPSE_IS} at the last evaluations): its images fall into about "
            f"one class, so its scores rank no architecture; result.json says \"collapsed\": true (lower --g-lr "
            f"/ --d-lr)")


__all__ = ["PAPER_ARCH", "TrainJob", "arch_from_result", "collapse_warning"]
