"""`python -m autogan_fast.search`: AutoGAN's architecture search, the main job.

Default: the demo preset on the embedded digits (minutes on a CPU). `--preset paper` is the paper's
released search on CIFAR-10 scored by Inception-v3. `--resume DIR` continues a stopped run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from .cli import ArgumentParser, add_config_flags, explicit_values, resolve_device, run_cli
from .config import PRESETS, SearchConfig, config_from_dict, flag, preset_config
from .data import DeviceImageData, load_images
from .errors import UsageError
from .metrics import load_feature_net
from .run_dir import CHECKPOINT, CONFIG, LOG, JsonlLog, create_run_dir, load_checkpoint, write_json
from .search_loop import SearchState, run_search
from .search_space import arch_to_str

# Settings a resumed run may change: where things are and how long to go on. Others shape the state.
RESUMABLE_OVERRIDES = ("max_search_iter", "data_path", "inception_weights", "device", "eval_batch_size")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m autogan_fast.search", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                        help="base settings: demo (CPU-sized, embedded digits) or paper (AutoGAN's released search)")
    parser.add_argument("--out", help="run folder to create (default: a new numbered folder under runs/)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR with the settings saved there")
    parser.add_argument("--stop-after", type=int, metavar="ITER",
                        help="stop after checkpointing search iteration ITER (continue later with --resume)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-iteration lines")
    add_config_flags(parser, SearchConfig)
    return parser


def resumed_config(run_dir: Path, state: dict, overrides: dict[str, object]) -> SearchConfig:
    config = config_from_dict(state["config"])
    fixed = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
    if fixed:
        raise UsageError(f"--{flag(fixed[0])} cannot change when resuming {run_dir} (only "
                         f"{', '.join('--' + flag(n) for n in RESUMABLE_OVERRIDES)} can)")
    return dataclasses.replace(config, **overrides).validate()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = explicit_values(args, SearchConfig)
    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise UsageError("--out and --resume name different folders; --resume continues in place")
        run_dir = Path(args.resume)
        saved = load_checkpoint(run_dir / CHECKPOINT)
        config = resumed_config(run_dir, saved, overrides)
    else:
        config = preset_config(args.preset, **overrides).validate()
        saved = None
    if args.stop_after is not None and args.stop_after < 0:
        raise UsageError(f"--stop-after must be >= 0, got {args.stop_after}")

    # Everything that can fail on bad input runs before the run folder is touched.
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    images = load_images(config.dataset, config.data_path, config.split, resolution=config.bottom_width * 8)
    data = DeviceImageData(images, device)
    feature_net = load_feature_net(config.resolved_feature_net(), device, config.inception_weights)

    if saved is None:
        run_dir = create_run_dir(args.out)
        write_json(run_dir / CONFIG, {**dataclasses.asdict(config), "preset": args.preset})
        state = SearchState.create(config, device)
    else:
        state = SearchState.from_state_dict(saved, config, device)
        JsonlLog(run_dir / LOG).truncate_from(state.search_iter)
    if not args.quiet:
        print(f"run folder: {run_dir}  device: {device}  feature net: {feature_net.name}", file=sys.stderr)

    result = run_search(state, data, feature_net, run_dir, device, stop_after=args.stop_after, quiet=args.quiet)
    if result is None:
        print(f"stopped after iteration {state.search_iter - 1}; continue with --resume {run_dir}",
              file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps({**result, "run_dir": str(run_dir)}))
    else:
        print(f"run folder: {run_dir}  ({result['wall_seconds']:.0f} s on {result['device']})")
        for rank, entry in enumerate(result["archs"], 1):
            print(f"{rank}. IS {entry['inception_score']:.3f}  {arch_to_str(entry['arch'])}")
    return 0


if __name__ == "__main__":
    run_cli(main)
