"""The one driver of a resumable run: a job (search, training, proxy rescoring) in its run folder.

A job is its typed settings (`config`), a state with `create` / `state_dict` / `load_state_dict`
(`SearchState`, `TrainState`), its loop and its result. The driver owns what every job does alike: the
run folder's lock, the choice between a new run, a folder that holds no checkpoint yet (started afresh
with its saved settings), a finished run (its result printed, nothing written) and a resume; opening
the inputs before anything is written; the curves, the progress lines and the result's printing.

    job = SearchJob.prepare(overrides, preset, resume)   # a new run's settings, or a run folder's
    result = run_job(job, RunRequest(out, resume))       # in its torchrun world (one process without)
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..config import config_from_dict, flag, preset_config
from ..distributed import SINGLE, World
from ..errors import UsageError
from ..runs.checkpoint import parse_json, restoring, write_json
from ..runs.folder import CHECKPOINT, CONFIG, LOG, JsonlLog, create_run_dir, finished_result, locked_run_dir
from ..tensorboard import ScalarLogger, check_tensorboard, scalar_logger
from .inputs import Inputs, torchrun_world

C = typing.TypeVar("C")


@dataclass(frozen=True)
class RunRequest:
    """What is asked of a run besides its settings: which folder, how far, how loud."""

    out: str | None = None  # run folder to create (None: a new numbered folder under runs/)
    resume: Path | None = None  # run folder to continue with the settings saved there (None: a new run)
    stop_after: int | None = None  # stop after the first checkpoint at or past this count (the job's counter)
    quiet: bool = False  # no progress bars or progress lines on stderr
    as_json: bool = False  # the result printed as JSON on stdout
    tensorboard: bool = False  # also log the curves to RUN/tensorboard

    def check(self) -> None:
        if self.stop_after is not None and self.stop_after < 0:
            raise UsageError(f"--stop-after must be >= 0, got {self.stop_after}")


class Job:
    """One kind of resumable run. A subclass names its settings and counter and fills in the hooks below;
    an instance is one run's settings and, when it resumes, the checkpoint it continues (`saved`)."""

    config_cls: ClassVar[type]  # its typed settings (SearchConfig, TrainConfig)
    counter: ClassVar[str]  # the progress count its checkpoint and log carry ("search_iter", "iter")
    limit: ClassVar[str | None] = None  # the setting its counter runs to ("max_search_iter"; None: one pass)
    resumable: ClassVar[tuple[str, ...]] = ()  # settings a resumed run may change (where, how long, how scored)
    record_extras: ClassVar[tuple[str, ...]] = ("preset",)  # config.json entries that are not settings

    def __init__(self, config: typing.Any, saved: dict | None = None, preset: str = "demo"):
        self.config = config  # the run's settings
        self.saved = saved  # the checkpoint a resume continues (None: the run starts fresh)
        self.preset = preset  # the preset its settings started from (recorded in config.json)

    def join(self, world: World, fresh: bool) -> None:
        """Fit a new run's (`fresh`) settings to the torchrun world it runs in (by default: as they are)."""

    @classmethod
    def new_config(cls, preset: str, overrides: dict[str, object]) -> typing.Any:
        """A new run's settings: `preset` with `overrides` (the settings given), refused in one line naming the
        first bad one (a study checks its sub-runs' settings with it before it makes its folder)."""
        return preset_config(preset, cls.config_cls, **overrides).validate()

    # --- a run folder resumed: its checkpoint, or its config.json when it holds none yet

    @classmethod
    def resumed(cls, run_dir: Path, overrides: dict[str, object], preset: str = "demo") -> Job:
        """The job continuing `run_dir`, with the command line's `overrides` (only `resumable` settings)."""
        unstarted = unstarted_run(run_dir)
        if unstarted is not None:  # stopped before its first checkpoint: start afresh with the saved settings
            config = unstarted_config(run_dir, unstarted, cls.config_cls, overrides, cls.resumable,
                                      cls.record_extras)
            return cls.from_record(config, unstarted, run_dir, unstarted.get("preset", preset))
        path = run_dir / CHECKPOINT
        saved = cls.checked_checkpoint(path)
        config = cls.checkpoint_config(saved, path)
        return cls.from_checkpoint(apply_resume_overrides(run_dir, config, overrides, cls.resumable, path), saved,
                                   preset)

    @classmethod
    def checkpoint_config(cls, saved: dict, path: Path) -> typing.Any:
        """The settings a checkpoint (read from `path`) was saved with, refused in one line if damaged."""
        try:
            return config_from_dict(saved["config"], cls.config_cls)
        except UsageError as err:
            raise UsageError(f"corrupt checkpoint {path}: {err}") from None

    @classmethod
    def checked_checkpoint(cls, path: Path) -> dict:
        """The checkpoint at `path`, refused in one line unless it holds what a resume needs."""
        raise NotImplementedError

    @classmethod
    def from_record(cls, config: typing.Any, record: dict, run_dir: Path, preset: str) -> Job:
        """A fresh start in an unstarted run folder; `record` is its config.json."""
        return cls(config, None, preset)

    @classmethod
    def from_checkpoint(cls, config: typing.Any, saved: dict, preset: str) -> Job:
        return cls(config, saved, preset)

    # --- the hooks `drive` calls, in this order

    def check(self, world: World) -> None:
        """Refuse (UsageError) what this world cannot run, before anything is opened."""
        world.check_divides(gen_bs=self.config.gen_bs, dis_bs=self.config.dis_bs)

    def finished(self) -> bool:
        """Whether the checkpoint resumed is the run's last (then its result is printed, nothing written)."""
        return self.saved is not None and self.saved[self.counter] >= getattr(self.config, self.limit)

    def finished_message(self, run_dir: Path) -> str:
        raise NotImplementedError

    def open(self, world: World) -> Inputs:
        """Device, data, feature network and engine; every refusal before the run folder is written."""
        raise NotImplementedError

    def record(self) -> dict:
        """What config.json holds: the settings, the preset (and what else the job resumes from)."""
        return {**dataclasses.asdict(self.config), "preset": self.preset}

    def create_state(self, inputs: Inputs, world: World) -> typing.Any:
        raise NotImplementedError

    def restore_state(self, inputs: Inputs, world: World) -> typing.Any:
        """The state continuing `self.saved` (the driver turns a misfit into one line naming the checkpoint)."""
        raise NotImplementedError

    def resume_point(self, state: typing.Any) -> int:
        """The count from which the log's events are dropped when resuming (they are redone)."""
        return getattr(state, self.counter)

    def header(self, state: typing.Any, inputs: Inputs, run_dir: Path, world: World) -> str:
        """The line(s) printed on stderr before the loop starts (not with --quiet)."""
        ranks = f"  ranks: {world.size}" if world.distributed else ""
        return f"run folder: {run_dir}  device: {inputs.device}{ranks}"

    def loop(self, state: typing.Any, inputs: Inputs, run_dir: Path, stop_after: int | None, quiet: bool,
             curves: ScalarLogger) -> dict | None:
        """Run to the end (the result, also written to result.json) or until `stop_after` (None)."""
        raise NotImplementedError

    def stopped_at(self, state: typing.Any) -> int:
        """The last count done when the loop stopped early (said in the `--resume` hint)."""
        return getattr(state, self.counter)

    def report(self, result: dict, run_dir: Path, as_json: bool, finished_before: bool) -> None:
        """Print the result on stdout (`finished_before`: a resumed finished run's saved result)."""
        raise NotImplementedError


def drive(job: Job, request: RunRequest, world: World = SINGLE) -> dict | None:
    """Run `job` as `request` asks, in its torchrun world (a single process without torchrun); returns the
    result, or None when stopped early (and on ranks other than 0).

    Everything that can fail on bad input runs before the run folder is written. The folder is locked
    from the moment it is known to the end (`locked_run_dir`): a resumed one before anything else (before
    its log is read: another run may be writing there), a new one as soon as it is made.
    """
    job.check(world)
    if request.tensorboard:
        check_tensorboard()
    run_dir = request.resume
    with contextlib.ExitStack() as lock:  # the run folder's lock, held to the end once taken
        if run_dir is not None:
            lock.enter_context(locked_run_dir(run_dir, world))
        if job.finished():
            result = finished_run(run_dir, world, job.counter, job.saved[job.counter], job.finished_message(run_dir))
            if result is not None:
                if world.is_main:
                    job.report(result, run_dir, request.as_json, finished_before=True)
                return result
        inputs = job.open(world)
        run_dir, fresh = open_run_folder(lock, request.out, run_dir, job.saved, job.record(), world)
        if fresh:
            state = job.create_state(inputs, world)
        else:
            with restoring(run_dir / CHECKPOINT):
                state = job.restore_state(inputs, world)
            if world.is_main:
                JsonlLog(run_dir / LOG, counter=job.counter).truncate_from(job.resume_point(state))
        quiet = request.quiet or not world.is_main
        if not quiet:
            print(job.header(state, inputs, run_dir, world), file=sys.stderr)
        curves = scalar_logger(request.tensorboard and world.is_main, run_dir)
        try:
            result = job.loop(state, inputs, run_dir, request.stop_after, quiet, curves)
        finally:
            curves.close()
    if not world.is_main:
        return None
    if result is None:
        print(f"stopped after iteration {job.stopped_at(state)}; continue with --resume {run_dir}", file=sys.stderr)
        return None
    job.report(result, run_dir, request.as_json, finished_before=False)
    return result


def run_job(job: Job, request: RunRequest) -> dict | None:
    """`drive` `job` in the torchrun world it starts (a single process without torchrun), its new run's
    settings fitted to that world first (`Job.join`)."""
    with torchrun_world(job.config.device) as world:
        job.join(world, fresh=request.resume is None)
        return drive(job, request, world)


# ---------------------------------------------------------------------------------------------
# The run folder's states: new, unstarted (no checkpoint yet), resumed, finished


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
    first one), or None when the folder has a checkpoint or no config.json (then the checkpoint's check
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


def open_run_folder(lock: contextlib.ExitStack, out: str | None, run_dir: Path | None, saved: dict | None,
                    settings: dict, world: World = SINGLE) -> tuple[Path, bool]:
    """The folder a run writes, and whether the run starts fresh (else it continues `saved`): a new folder
    made from `out` (`run_dir` None) by rank 0 and locked until `lock` closes; `run_dir` restarted with
    `settings` when it holds no checkpoint yet (`saved` None; the caller holds its lock); or `run_dir` as
    it is."""
    if run_dir is None:
        run_dir = world.on_main(lambda: create_run_dir(out, settings))
        lock.enter_context(locked_run_dir(run_dir, world))
        return run_dir, True
    if saved is None:
        restart_run_folder(run_dir, settings, world)
        return run_dir, True
    return run_dir, False


def finished_run(run_dir: Path, world: World, counter: str, done: int, message: str) -> dict | None:
    """The saved result of a finished run that is being resumed, after `message` on stderr (rank 0); None
    when the run is not finished after all (killed between logging `done` and writing its result)."""
    result = world.on_main(lambda: finished_result(run_dir, counter, done))
    if result is not None and world.is_main:
        print(message, file=sys.stderr)
    return result


__all__ = ["Job", "RunRequest", "apply_resume_overrides", "drive", "run_job"]
