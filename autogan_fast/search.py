"""`python -m autogan_fast.search`: AutoGAN's architecture search, the main job.

Default: the demo preset on the embedded digits (minutes on a CPU). `--preset paper` is the paper's
released search on CIFAR-10 scored by Inception-v3. `--resume DIR` continues a stopped run.
"""

from __future__ import annotations

from .cli import run_cli, run_command
from .config import PRESET_NAMES, SearchConfig
from .flags import ArgumentParser, add_config_flags, add_run_flags, explicit_values
from .jobs.search import SearchJob


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m autogan_fast.search", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help="base settings: demo (CPU-sized, embedded digits) or paper (AutoGAN's released search)")
    add_run_flags(parser, stop_after="stop after checkpointing search iteration ITER")
    add_config_flags(parser, SearchConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = explicit_values(args, SearchConfig)
    return run_command(args, lambda resume: SearchJob.prepare(overrides, args.preset, resume))


if __name__ == "__main__":
    run_cli(main)
