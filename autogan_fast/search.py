"""`python -m autogan_fast.search`: AutoGAN's architecture search, the main job.

Default: the demo preset on the embedded digits (minutes on a CPU). `--preset paper` is the paper's
released search on CIFAR-10 scored by Inception-v3. `--resume DIR` continues a stopped run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

from .cli import (
    ArgumentParser,
    add_config_flags,
    add_run_flags,
    apply_resume_overrides,
    explicit_values,
    finished_run,
    open_inputs,
    open_run_folder,
    resume_dir,
    run_cli,
    torchrun_world,
    unstarted_config,
    unstarted_run,
)
from .config import PRESET_NAMES, SearchConfig, TrainConfig, config_from_dict, flag, preset_config
from .distributed import World
from .engines.graph import resolve_engine
from .errors import UsageError
from .nas.loop import CHECKPOINT_FORMAT, SearchState, run_search
from .run_dir import (
    CHECKPOINT,
    LOG,
    JsonlLog,
    check_entries,
    load_checkpoint,
    locked_run_dir,
    restoring,
)
from .search_space import arch_to_str
from .tensorboard import check_tensorboard, scalar_logger

# Settings a resumed run may change: where things are and how long to go on. Others shape the state.
RESUMABLE_OVERRIDES = ("max_search_iter", "data_path", "inception_weights", "device", "eval_batch_size", "engine",
                       "graph_cache_size", "reward_precision", "reward_feature_batch", "kernels")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m autogan_fast.search", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help="base settings: demo (CPU-sized, embedded digits) or paper (AutoGAN's released search)")
    add_run_flags(parser, stop_after="stop after checkpointing search iteration ITER")
    add_config_flags(parser, SearchConfig)
    return parser


# The entries of a search checkpoint and their types, checked before a resume uses any.
CHECKPOINT_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "search_iter": int, "stage": int, "gan": dict, "controller": dict, "ctrl_opt": dict,
    "g_window": dict, "d_window": dict, "fixed_z": torch.Tensor, "beams": (dict, type(None)), "best": dict,
    "wall_seconds": (int, float), "rng": dict,
}


def resumed_checkpoint(run_dir: Path) -> dict:
    """The checkpoint in `run_dir`, refused in one line unless it is one of this version's search whose
    entries a resume needs are there, with their types."""
    path = run_dir / CHECKPOINT
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


def resumed_config(run_dir: Path, state: dict, overrides: dict[str, object]) -> SearchConfig:
    path = run_dir / CHECKPOINT
    try:
        config = config_from_dict(state["config"])
    except UsageError as err:
        raise UsageError(f"corrupt checkpoint {path}: {err}") from None
    return apply_resume_overrides(run_dir, config, overrides, RESUMABLE_OVERRIDES, path)


def train_command(config: SearchConfig, run_dir: Path) -> str:
    """The `train` command line for the search's top architecture: the train preset that fits (demo on
    the digits, paper otherwise) plus every data / scoring / size setting of the search that differs."""
    preset = "demo" if config.dataset == "digits" else "paper"
    base = preset_config(preset, TrainConfig)
    words = ["python -m autogan_fast.train", f"--preset {preset}",
             f"--arch-from {shlex.quote(str(run_dir / 'result.json'))}"]
    for name in ("dataset", "data_path", "split", "feature_net", "inception_weights", "bottom_width"):
        value = getattr(config, name)
        if value != getattr(base, name):
            words.append(f"--{flag(name)} {shlex.quote(str(value))}")
    return " ".join(words)


def new_run_config(args) -> SearchConfig:
    """The settings of a new run from its parsed flags, refused in one line naming the first bad one (a
    study checks its searches' flags with it before it makes its folder)."""
    return preset_config(args.preset, **explicit_values(args, SearchConfig)).validate()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = explicit_values(args, SearchConfig)
    run_dir = resume_dir(args)
    preset = args.preset
    saved = None
    if run_dir is None:
        config = new_run_config(args)
    elif (unstarted := unstarted_run(run_dir)) is not None:  # stopped before its first checkpoint: start afresh
        config = unstarted_config(run_dir, unstarted, SearchConfig, overrides, RESUMABLE_OVERRIDES, ("preset",))
        preset = unstarted.get("preset", preset)
    else:
        saved = resumed_checkpoint(run_dir)
        config = resumed_config(run_dir, saved, overrides)
    if args.stop_after is not None and args.stop_after < 0:
        raise UsageError(f"--stop-after must be >= 0, got {args.stop_after}")

    with torchrun_world(config.device) as world:
        if run_dir is None and world.distributed and "ctrl_sample_batch" not in overrides:
            config = dataclasses.replace(config, ctrl_sample_batch=world.size)  # one reward per rank
        return run_command(args, config, saved, run_dir, world, preset)


def run_command(args, config: SearchConfig, saved: dict | None, run_dir: Path | None, world: World,
                preset: str = "demo") -> int:
    """`main` once the settings are known, in its torchrun world (a single process without torchrun).

    `saved` is the checkpoint to resume, None for a new run (`run_dir` None) or for a resumed run folder
    that holds none yet (started afresh in `run_dir`, with its saved settings). The run folder is locked
    from the moment it is known to the end (`locked_run_dir`): a resumed one before anything else, a new
    one as soon as it is made. Resuming a finished run prints its result and writes nothing.
    """
    # Everything that can fail on bad input runs before the run folder is written (a resumed one is locked
    # first, before its log is read: another run may be writing there).
    world.check_divides(gen_bs=config.gen_bs, dis_bs=config.dis_bs)
    if args.tensorboard:
        check_tensorboard()
    with contextlib.ExitStack() as lock:  # the run folder's lock, held to the end once taken
        if run_dir is not None:
            lock.enter_context(locked_run_dir(run_dir, world))
        if saved is not None and saved["search_iter"] >= config.max_search_iter:
            result = finished_run(run_dir, world, "search_iter", saved["search_iter"],
                                  f"the search in {run_dir} is finished ({config.max_search_iter} iterations); "
                                  f"give a larger --max-search-iter to search on")
            if result is not None:
                if world.is_main:
                    print_result(args, config, result, run_dir)
                return 0
        device, data, feature_net = open_inputs(config, config.bottom_width * 8, world)
        engine = resolve_engine(config.engine, device, world.size)

        settings = {**dataclasses.asdict(config), "preset": preset}  # config.json
        run_dir, fresh = open_run_folder(lock, args.out, run_dir, saved, settings, world)
        if fresh:
            state = SearchState.create(config, device, engine, world)
        else:
            with restoring(run_dir / CHECKPOINT):
                state = SearchState.from_state_dict(saved, config, device, engine, world)
            if world.is_main:
                JsonlLog(run_dir / LOG).truncate_from(state.search_iter)
        quiet = args.quiet or not world.is_main
        if not quiet:
            ranks = f"  ranks: {world.size}" if world.distributed else ""
            print(f"run folder: {run_dir}  device: {device}{ranks}  engine: {engine}  feature net: "
                  f"{feature_net.name}", file=sys.stderr)

        curves = scalar_logger(args.tensorboard and world.is_main, run_dir)
        try:
            result = run_search(state, data, feature_net, run_dir, device, stop_after=args.stop_after,
                                quiet=quiet, curves=curves)
        finally:
            curves.close()
    if not world.is_main:
        return 0
    if result is None:
        print(f"stopped after iteration {state.search_iter - 1}; continue with --resume {run_dir}",
              file=sys.stderr)
        return 0
    print_result(args, config, result, run_dir)
    return 0


def print_result(args, config: SearchConfig, result: dict, run_dir: Path) -> None:
    if args.json:
        print(json.dumps({**result, "run_dir": str(run_dir)}))
    else:
        print(f"run folder: {run_dir}  ({result['wall_seconds']:.0f} s on {result['device']})")
        if not result.get("finding", True):
            stages = ", ".join(map(str, result["collapsed_stages"]))
            print(f"NO FINDING: the shared GAN collapsed (or hovered near the floor) at stage {stages}; the "
                  f"ranking below scores noise around one mode (see log.jsonl's collapse events)")
        for rank, entry in enumerate(result["archs"], 1):
            print(f"{rank}. IS {entry['inception_score']:.3f}  {arch_to_str(entry['arch'])}")
        print(f"train the best from scratch: {train_command(config, run_dir)}")


if __name__ == "__main__":
    run_cli(main)
