"""What the command lines (`search`, `train`, `evaluate`) share: flags, device choice, error handling."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .config import config_from_dict, default_feature_net, field_docs, flag
from .data import DeviceImageData, load_images
from .distributed import SINGLE, World, start_world, stop_world
from .errors import UsageError
from .kernels import BACKEND_ENV, set_backend, triton_available
from .metrics import FeatureNet, load_feature_net
from .run_dir import (
    CHECKPOINT,
    CONFIG,
    LOG,
    create_run_dir,
    finished_result,
    locked_run_dir,
    parse_json,
    write_json,
)

C = typing.TypeVar("C")


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


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One `--kebab-case` flag per field of a config dataclass, default None (= the preset's value)."""
    docs = field_docs(config_cls)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # `str | None`
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        help_text = f"{docs.get(f.name, '')} (default: {f.default})"
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


def select_kernels(name: str, device: torch.device) -> None:
    """Run every fused op through backend `name` (--kernels) from now on; `triton` needs CUDA here."""
    if name == "triton" and not (device.type == "cuda" and triton_available()):
        raise UsageError(f"--kernels triton runs the Triton kernels on CUDA tensors, and this run is on "
                         f"{device.type}{'' if triton_available() else ' without triton installed'}; use "
                         f"--kernels auto or torch")
    set_backend(name)
    if device.type == "cuda":  # cuDNN times its algorithms per shape (in the engines' eager warm-ups)
        torch.backends.cudnn.benchmark = True



def resolve_device(name: str, world: World = SINGLE) -> torch.device:
    """auto = CUDA when present, else CPU; asking for CUDA without it is a usage error. Under torchrun a
    CUDA device is the rank's own GPU (`World.device`)."""
    if name == "auto":
        return world.device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    return world.device(torch.device(name))


def resume_dir(args: argparse.Namespace) -> Path | None:
    """The run folder `--resume` names (None without it); `--out` may only repeat that folder."""
    if not args.resume:
        return None
    if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UsageError("--out and --resume name different folders; --resume continues in place")
    return Path(args.resume)


def apply_resume_overrides(run_dir: Path, config: C, overrides: dict[str, object],
                           resumable: tuple[str, ...], source: Path | None = None) -> C:
    """A run's saved config (read from `source`) with the command line's `overrides`, which may only name
    `resumable` settings. Settings refused by this version's checks are named as the saved ones when the
    saved config alone is refused too (else the overrides are at fault)."""
    fixed = sorted(set(overrides) - set(resumable))
    if fixed:
        raise UsageError(f"--{flag(fixed[0])} cannot change when resuming {run_dir} (only "
                         f"{', '.join('--' + flag(n) for n in resumable)} can)")
    try:
        return dataclasses.replace(config, **overrides).validate()
    except UsageError as err:
        try:
            config.validate()
        except UsageError:
            raise UsageError(f"cannot resume {run_dir}: the settings saved in {source or run_dir} are refused: "
                             f"{err}") from None
        raise


def unstarted_run(run_dir: Path) -> dict | None:
    """What config.json holds in a run folder without a checkpoint (a run killed or crashed before its
    first one), or None when the folder has a checkpoint or no config.json (then `load_checkpoint`
    says what is there or missing). Such a run resumes as a fresh start with its saved settings."""
    path = run_dir / CONFIG
    if (run_dir / CHECKPOINT).exists() or not path.is_file():
        return None
    try:
        settings = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise UsageError(f"cannot resume {run_dir}: it holds no checkpoint, and its {CONFIG} is not readable "
                         f"({getattr(err, 'msg', None) or err})") from None
    if not isinstance(settings, dict):
        raise UsageError(f"cannot resume {run_dir}: it holds no checkpoint, and its {CONFIG} holds no settings")
    return settings


def unstarted_config(run_dir: Path, settings: dict, config_cls: type[C], overrides: dict[str, object],
                     resumable: tuple[str, ...], extra: tuple[str, ...]) -> C:
    """The config of an `unstarted_run` (its config.json's `settings`, less the `extra` entries that are no
    settings) with the command line's `overrides`, which may only name `resumable` settings."""
    try:
        saved = config_from_dict({k: v for k, v in settings.items() if k not in extra}, config_cls)
    except UsageError as err:
        raise UsageError(f"cannot resume {run_dir} from its {CONFIG}: {err}") from None
    return apply_resume_overrides(run_dir, saved, overrides, resumable, run_dir / CONFIG)


def restart_run_folder(run_dir: Path, settings: dict, world: World = SINGLE) -> None:
    """Start the run in `run_dir` (an `unstarted_run`, locked by the caller) afresh: config.json rewritten
    with `settings` (a resumed run's overrides included), the log of the unfinished start dropped. Rank 0
    alone; its refusal stops every rank."""
    def restart() -> None:
        if (run_dir / CHECKPOINT).exists():  # the run that held the folder's lock until now wrote one
            raise UsageError(f"{run_dir} has a checkpoint now (another run wrote it); --resume {run_dir} again "
                             f"to continue from it")
        write_json(run_dir / CONFIG, settings)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / LOG).unlink()

    world.on_main(restart)


@contextlib.contextmanager
def torchrun_world(device_name: str) -> Iterator[World]:
    """The `World` this process runs in (joined under torchrun, see `distributed`), left at the end."""
    world = start_world(resolve_device(device_name))
    finished = False
    try:
        yield world
        finished = True
    finally:
        stop_world(world, finished)


def create_run_folder(out: str | None, settings: dict, world: World = SINGLE) -> Path:
    """A new run folder (`create_run_dir`) holding config.json (`settings`), made by rank 0 alone; its
    refusal (an `--out` that holds a run, a folder that cannot be written) stops every rank with the
    same message."""
    return world.on_main(lambda: create_run_dir(out, settings))


def open_run_folder(lock: contextlib.ExitStack, out: str | None, run_dir: Path | None, saved: dict | None,
                    settings: dict, world: World = SINGLE) -> tuple[Path, bool]:
    """The folder a command's run writes, and whether the run starts fresh (else it continues `saved`):
    a new folder made from `out` (`run_dir` None) and locked until `lock` closes; `run_dir` restarted
    with `settings` when it holds no checkpoint yet (`saved` None; the caller holds its lock); or
    `run_dir` as it is."""
    if run_dir is None:
        run_dir = create_run_folder(out, settings, world)
        lock.enter_context(locked_run_dir(run_dir, world))
        return run_dir, True
    if saved is None:
        restart_run_folder(run_dir, settings, world)
        return run_dir, True
    return run_dir, False


def open_inputs(config: typing.Any, resolution: int, world: World = SINGLE,
                ) -> tuple[torch.device, DeviceImageData, FeatureNet]:
    """Device, dataset (on the device) and feature network of a run, after seeding every random stream.

    `config` is any config with the shared settings (dataset, data_path, split, feature_net,
    inception_weights, kernels, device, seed). Everything here fails on bad input with a UsageError, so a
    command calls it before it creates its run folder. `resolution` only sizes image folders. Under
    torchrun every rank seeds alike (replicated streams) and uses its own GPU.
    """
    device = resolve_device(config.device, world)
    select_kernels(config.kernels, device)
    torch.manual_seed(config.seed)
    images = load_images(config.dataset, config.data_path, config.split, resolution=resolution)
    feature_net = load_feature_net(default_feature_net(config.dataset, config.feature_net), device,
                                   config.inception_weights, world)
    return device, DeviceImageData(images, device), feature_net


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a command line's main: bad input becomes one line on stderr and exit status 2 (a diverged run:
    exit status 3, `DivergedError`)."""
    spec = main.__globals__.get("__spec__")  # names the module also when it runs as `python -m`
    prog = spec.name if spec is not None else main.__module__
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: say which rank failed, and tell
        from torch.distributed.elastic.multiprocessing.errors import record  # torchrun its error message

        prog = f"{prog} (rank {os.environ.get('RANK', '?')})"
        main = record(main)
    try:
        code = main(argv)
    except UsageError as err:  # bad input (2), a run that diverged (3, DivergedError)
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = err.exit_status
    except OSError as err:  # the file system refused (a read-only or full disk): one line, as bad input
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint is intact (continue with --resume)", file=sys.stderr)
        code = 130
    sys.exit(code)


def finished_run(run_dir: Path, world: World, counter: str, done: int, message: str) -> dict | None:
    """The saved result of a finished run that is being resumed, after `message` on stderr (rank 0); None
    when the run is not finished after all (killed between logging `done` and writing its result)."""
    result = world.on_main(lambda: finished_result(run_dir, counter, done))
    if result is not None and world.is_main:
        print(message, file=sys.stderr)
    return result
