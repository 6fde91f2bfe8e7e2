"""The run folder: its files' names, making it, the lock a command holds on it while it runs, its event
log (log.jsonl) and a finished run's result."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from ..distributed import SINGLE, World
from ..errors import UsageError
from ..kernels import autoselect_choices
from .checkpoint import TEMP_NAME, atomic_write, parse_json, strict_json, write_json

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.json"
RESULT = "result.json"
LOCK = ".lock"
SAMPLES = "samples"


def new_run_dir(root: Path = Path("runs")) -> Path:
    """A new numbered folder `runs/NNNNN` (never an existing one)."""
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"(\d+)", p.name))]
    number = max(numbers, default=-1) + 1
    while True:
        path = root / f"{number:05d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def create_run_dir(out: str | None, settings: dict) -> Path:
    """A new run folder holding config.json (`settings`). `--out DIR` must not hold a run already (that
    needs --resume); None = a new numbered folder under runs/.

    A folder the file system refuses (read-only, under a file, a full disk) is a UsageError, and the
    folders made here are removed again: nothing is left half-made."""
    path = Path("runs") if out is None else Path(out)
    if out is not None and path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a folder; choose another folder")
    if out is not None and path.exists() and any(path.iterdir()):
        raise UsageError(f"--out {path} already exists and is not empty; use --resume {path} to continue "
                         f"that run, or choose another folder")
    made = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    try:
        run_dir = new_run_dir(path) if out is None else path
        if out is None:
            made.insert(0, run_dir)
        else:
            path.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, settings)
    except (OSError, UsageError) as err:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"cannot create run folder {path}: {err.strerror or err}") from None
    return run_dir


class RunLock:
    """An exclusive lock on a run folder, so two commands never run in one folder (two `--resume` of one
    run would both append to its log and overwrite each other's checkpoints).

    `fcntl.flock` on the folder's `.lock` file: in the standard library, and the kernel releases the
    lock when its holder dies, so a killed run never leaves a stale lock behind (the `filelock` package
    would add a dependency for the same thing on Linux). The holder writes its pid and host into the
    file for the refusal to name. The file stays when the lock is released: removing it would let a
    process that opened the old file and one that creates a new one both hold "the" lock.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; UsageError naming the holder when another process has it.

        The file is opened without following a symbolic link (O_NOFOLLOW) and must be a regular file:
        the holder truncates and writes it, so a `.lock` linked to another file would overwrite that file,
        and a FIFO would block the open."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:  # O_NOFOLLOW's refusal of a symbolic link
                raise UsageError(f"cannot lock run folder {self.path.parent}: {self.path} is a symbolic link, not "
                                 f"a lock file; remove it") from None
            raise UsageError(f"cannot lock run folder {self.path.parent}: {err.strerror} ({self.path})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(f"cannot lock run folder {self.path.parent}: {self.path} is not a regular file; "
                             f"remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 256).decode(errors="replace").split()
            os.close(fd)
            who = f"pid {holder[0]} on {holder[1]}" if len(holder) == 2 else "another process"
            raise UsageError(f"run folder {self.path.parent} is in use by another run ({who}, holding "
                             f"{self.path}); wait for it to end, or stop it first") from None
        except OSError as err:
            os.close(fd)
            raise UsageError(f"cannot lock run folder {self.path.parent}: {err.strerror} ({self.path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def locked_run_dir(run_dir: Path, world: World = SINGLE) -> Iterator[None]:
    """Hold `run_dir`'s `RunLock` while the body runs. Under torchrun rank 0 alone holds it (the rank
    that writes the folder), and its refusal stops every rank with the same message. With the lock
    held, the temporary files of atomic writes a killed run left behind are removed."""
    lock = RunLock(run_dir)

    def take() -> None:
        lock.acquire()
        remove_stale_temp_files(run_dir)

    world.on_main(take)
    try:
        yield
    finally:
        lock.release()


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete `atomic_write`'s temporary files in `run_dir` and its samples folder: with the folder's lock
    held no write is under way, so any there is the leftover of a run killed mid-write."""
    for folder in (run_dir, run_dir / SAMPLES):
        if folder.is_dir():
            for path in folder.iterdir():
                if TEMP_NAME.fullmatch(path.name) and path.is_file():
                    path.unlink(missing_ok=True)


def finished_result(run_dir: Path, counter: str, count: int) -> dict | None:
    """The result of the run in `run_dir` if it ended at `count` (its checkpoint's counter), else None.
    Ended means its log holds that `done` event and its result.json is readable: a run killed between
    writing the two has not ended, and a resume completes it."""
    try:
        result = parse_json((run_dir / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or not (run_dir / LOG).is_file():
        return None
    log = JsonlLog(run_dir / LOG, counter)
    return result if any(e.get("event") == "done" and e.get(counter) == count for e in log.read()) else None


class JsonlLog:
    """Appends one JSON object per line, flushed at once so a crash loses nothing logged.

    Every event carries the run's progress counter under the name `counter`: "search_iter" for the
    search, "iter" (generator iterations) for derived training.
    """

    def __init__(self, path: Path, counter: str = "search_iter", enabled: bool = True):
        self.path = Path(path)
        self.counter = counter
        self.enabled = enabled  # False: writes nothing (the ranks of a torchrun job other than 0)

    def write(self, event: str, count: int, /, **fields: object) -> None:
        """Append one event; a float that is not finite is logged as null (strict JSON, see `strict_json`).
        An append the file system refuses is a UsageError (a line it cut off is dropped on resume)."""
        if not self.enabled:
            return
        line = json.dumps(strict_json({"event": event, self.counter: count, **fields}), allow_nan=False)
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as err:
            raise UsageError(f"cannot append to {self.path}: {err.strerror or err}") from err

    def truncate_from(self, step: int) -> None:
        """Drop events whose counter is >= step (work after the last checkpoint, redone on resume) and
        any `done` event (a resumed run is not done; it logs `done` again when it is)."""
        if not self.path.exists():
            return
        kept = [line for line, event in self._lines()
                if event.get(self.counter, 0) < step and event.get("event") != "done"]
        atomic_write(self.path, lambda f: f.write(b"".join(line + b"\n" for line in kept)))

    def read(self) -> list[dict]:
        return [event for _, event in self._lines()]

    def _lines(self) -> list[tuple[bytes, dict]]:
        """Each logged line with its event. A final line that is not a JSON object is what a kill in the
        middle of an append leaves: it is dropped with a one-line warning on stderr (the checkpoint says
        what is redone). A bad line before the last is damage no kill makes: a UsageError naming the
        file and the line."""
        numbered = [(number, line) for number, line in enumerate(self.path.read_bytes().split(b"\n"), 1)
                    if line.strip()]
        kept = []
        for number, line in numbered:
            try:
                event = parse_json(line)
                reason = f"a JSON {type(event).__name__}, not an object"
            except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
                event, reason = None, getattr(err, "msg", "not UTF-8 text")
            if isinstance(event, dict):
                kept.append((line, event))
            elif number == numbered[-1][0]:
                print(f"warning: {self.path} line {number} is cut off (the run was stopped while logging it); "
                      f"dropped it", file=sys.stderr)
            else:
                raise UsageError(f"{self.path} line {number} is not a logged event ({reason}); repair or "
                                 f"delete that line")
        return kept


def log_kernel_choices(log: JsonlLog, count: int, logged: int) -> int:
    """Append a `kernel_choices` event with the choices `--kernels auto` made since the first `logged` ones
    (fused kernel or reference per op and shape, with both timings); returns how many are logged now."""
    choices = autoselect_choices()
    if len(choices) > logged:
        log.write("kernel_choices", count, choices=choices[logged:])
    return len(choices)


def device_name(device: torch.device) -> str:
    """The name result.json gives the machine: the GPU's, or "cpu"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"
