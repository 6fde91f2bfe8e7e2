"""`python -m autogan_fast.train`: train a discovered architecture from scratch (AutoGAN's derived training).

Default: the demo preset on the embedded digits (seconds on a CPU) with AutoGAN's published CIFAR-10
generator. `--preset paper` is AutoGAN's derived-training setting on CIFAR-10. The architecture comes
from `--arch` or from a search's result.json (`--arch-from`, `--rank`). Every `--val-freq` generator
iterations the EMA generator is scored (IS, and FID against the training data's cached statistics),
a sample grid is saved and the run is checkpointed; `--resume DIR` continues a stopped run exactly.
"""

from __future__ import annotations

from pathlib import Path

from .cli import run_cli, run_command
from .config import PRESET_NAMES, TRAIN_PRESETS, TrainConfig, flag
from .errors import UsageError
from .flags import ArgumentParser, add_config_flags, add_run_flags, explicit_values
from .jobs.train import PAPER_ARCH, TrainJob, arch_from_result
from .pretrained import RELEASED, resolve_arch


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m autogan_fast.train", description=__doc__.splitlines()[0])
    demo = ", ".join(f"{flag(k)} {v}" for k, v in TRAIN_PRESETS["demo"].items())
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help=f"base settings: demo (CPU-sized, embedded digits: {demo}) or paper (AutoGAN's "
                             f"derived training on CIFAR-10: the defaults shown below)")
    parser.add_argument("--arch", nargs="+", metavar="ARCH",
                        help="the architecture to train: 14 integers (separate words or one quoted string) or a "
                             "released generator's name (" + ", ".join(RELEASED) + "; the name gives only the "
                             "architecture, not the bottom width) (default: AutoGAN's published CIFAR-10 "
                             "generator, " + " ".join(map(str, PAPER_ARCH)) + ")")
    parser.add_argument("--arch-from", metavar="RESULT_JSON",
                        help="take the architecture from a search's result.json (or its run folder)")
    parser.add_argument("--rank", type=int, metavar="K", help="with --arch-from: the K-th best architecture "
                                                              "(1-based, default 1)")
    add_run_flags(parser, stop_after="stop after the first checkpoint at G iteration ITER or later")
    add_config_flags(parser, TrainConfig)
    return parser


def chosen_arch(args) -> tuple[int, ...]:
    """--arch, or --arch-from with --rank (default 1), or AutoGAN's published CIFAR-10 generator."""
    if args.arch is not None and args.arch_from is not None:
        raise UsageError("give --arch or --arch-from, not both")
    if args.rank is not None and args.arch_from is None:
        raise UsageError("--rank picks from --arch-from RESULT.json; give that too")
    if args.arch_from is not None:
        return arch_from_result(Path(args.arch_from), 1 if args.rank is None else args.rank)
    if args.arch is None:
        return PAPER_ARCH
    try:
        return resolve_arch(args.arch)  # 14 ints (one string or separate words) or a released generator's name
    except UsageError as err:
        raise UsageError(f"--arch: {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = explicit_values(args, TrainConfig)

    def make_job(resume: Path | None) -> TrainJob:
        if resume is None:
            config = TrainJob.new_config(args.preset, overrides)
            return TrainJob(config, chosen_arch(args), preset=args.preset)
        if args.arch is not None or args.arch_from is not None or args.rank is not None:
            raise UsageError(f"the architecture cannot change when resuming {resume}; drop --arch, "
                             f"--arch-from and --rank")
        return TrainJob.resumed(resume, overrides, args.preset)

    return run_command(args, make_job)


if __name__ == "__main__":
    run_cli(main)
