"""Flags: the one-line-error argument parser and one `--flag` per field of a typed config, for the commands
and for the settings a study passes on to its sub-runs (`--search-flags`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing

from .config import field_docs, flag
from .errors import UsageError
from .kernels import BACKEND_ENV


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (exit status 2), like every other bad input here.

    Flags must be spelled out (no abbreviations): a prefix that works today becomes ambiguous when a flag
    is added, and a check of a flag by its name (the study's reserved flags) must see the name."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.refusal_raises = False  # set by `parse_flags`: a refusal is a UsageError, not an exit

    def error(self, message: str) -> typing.NoReturn:
        if self.refusal_raises:
            raise UsageError(message)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_flags(self, argv: list[str]) -> argparse.Namespace:
        """`argv` parsed, a refusal raised as a UsageError with argparse's message (for flags a caller
        passes on, such as a study's `--search-flags`, whose refusal it words itself)."""
        self.refusal_raises = True
        try:
            return self.parse_args(argv)
        finally:
            self.refusal_raises = False


def add_config_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, config_cls: type,
                     only: tuple[str, ...] | None = None, show_defaults: bool = True) -> None:
    """One `--kebab-case` flag per field of a config dataclass (or of its fields named in `only`), default
    None (= the preset's value)."""
    docs = field_docs(config_cls)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if only is not None and f.name not in only:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # `str | None`
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        help_text = docs.get(f.name, "") + (f" (default: {f.default})" if show_defaults else "")
        if kind is bool:  # --name / --no-name, never a str2bool parser
            parser.add_argument(f"--{flag(f.name)}", dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(f"--{flag(f.name)}", dest=f.name, type=kind, default=None, help=help_text)


def add_run_flags(parser: argparse.ArgumentParser, stop_after: str) -> None:
    """The run-folder and output flags every long-running command shares."""
    parser.add_argument("--out", help="run folder to create (default: a new numbered folder under runs/)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR with the settings saved there")
    parser.add_argument("--stop-after", type=int, metavar="ITER", help=f"{stop_after} (continue with --resume)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines on stderr")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log the curves to RUN/tensorboard (needs the tb extra: TensorBoard)")


def explicit_values(args: argparse.Namespace, config_cls: type) -> dict[str, object]:
    """The config fields given on the command line; `$AUTOGAN_FAST_KERNELS` counts as `--kernels` when
    the flag is not given (it overrides a preset and a resumed run's setting alike)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
              if getattr(args, f.name, None) is not None}
    if hasattr(args, "kernels") and "kernels" not in values and os.environ.get(BACKEND_ENV):
        values["kernels"] = os.environ[BACKEND_ENV]
    return values
