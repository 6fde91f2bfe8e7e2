"""Files a run writes and reads back: atomic writes, strict JSON, checkpoints (and the checks a resume
makes on them) and the random streams a checkpoint carries."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import UsageError
from ..safe_load import load_weights_only

# The temporary files `atomic_write` makes: ".<target name>.<mkstemp's 8 random characters>.tmp".
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def _umask() -> int:
    """The process's umask. Reading it means setting it, so it is set to a strict one for that instant:
    a file another thread creates meanwhile gets fewer permissions, never more."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then `os.replace`: never a half-written file.
    The file gets the permissions of one made by `open` (0666 less the umask), not mkstemp's 0600.

    A write the file system refuses (a full disk, a read-only folder) is a UsageError saying so and
    that the file it was to replace, if any, is intact; the temporary file is removed."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        refusal = file_system_refusal(err)
        if refusal is not None:
            kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
            raise UsageError(f"cannot write {path}: {refusal.strerror or refusal}; {kept}") from err
        raise


def file_system_refusal(err: BaseException) -> OSError | None:
    """The OSError behind a failed write: `err` itself, or the one a RuntimeError arose from. torch.save
    hides a refused write (ENOSPC on a full disk, EFBIG past `ulimit -f`: Python ignores SIGXFSZ, so the
    write fails instead of killing the process) behind its zip writer's "unexpected pos" RuntimeError,
    raised while closing the archive, with the OSError as its context."""
    seen = err
    while isinstance(seen, RuntimeError) and seen.__context__ is not None:
        seen = seen.__context__
    return seen if isinstance(seen, OSError) else None


def strict_json(value: object) -> object:
    """`value` with every float that is not finite (NaN, inf) as None: JSON has no such numbers (json.dumps
    would write bare NaN tokens, which strict readers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


class JsonNestingError(ValueError):
    """A JSON document nested deeper than Python's parser recurses (a `[` repeated 100,000 times): malformed
    input like any other, where json.loads raises a RecursionError that no caller expects."""

    msg = "nested too deeply to read"  # the field JSONDecodeError's callers read

    def __init__(self) -> None:
        super().__init__(self.msg)


def parse_json(text: str | bytes) -> object:
    """json.loads for every JSON file the commands read (config.json, result.json, the log's lines): what
    is not JSON, not UTF-8 or nested too deeply is a ValueError (JsonNestingError for the last), which the
    callers turn into one line naming the file."""
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonNestingError() from None


def write_json(path: Path, data: object) -> None:
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)
    atomic_write(path, lambda f: f.write((text + "\n").encode()))


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with `weights_only=True`; UsageError naming the file if missing, corrupt or foreign."""
    path = Path(path)
    state = load_weights_only(path, "checkpoint")
    if not isinstance(state, dict) or "format" not in state:
        raise UsageError(f"corrupt checkpoint {path}: not a checkpoint of this program")
    return state


def check_entries(state: dict, path: Path, entries: dict[str, type | tuple[type, ...]]) -> None:
    """UsageError ("corrupt checkpoint P: ...") unless checkpoint `state` holds each of `entries` with its type
    (`type(None)` in a tuple: may be None): a file torch loads can still lack what a resume needs."""
    for name, kind in entries.items():
        if name not in state:
            raise UsageError(f"corrupt checkpoint {path}: it has no {name!r} entry")
        if not isinstance(state[name], kind) or (kind is int and isinstance(state[name], bool)):
            raise UsageError(f"corrupt checkpoint {path}: its {name!r} entry is a {type(state[name]).__name__}")


@contextlib.contextmanager
def restoring(path: Path) -> Iterator[None]:
    """Turn what restoring a run from checkpoint `path` raises on contents that do not fit (a missing entry,
    a tensor of another shape, a random state of another kind) into a one-line UsageError naming the file.
    Out-of-memory is not the file's fault and passes through."""
    try:
        yield
    except (UsageError, torch.OutOfMemoryError):
        raise
    except KeyError as err:
        raise UsageError(f"corrupt checkpoint {path}: it has no {err.args[0]!r} entry where one is needed") from err
    except (IndexError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        reason = " ".join(lines[:2]) + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
        raise UsageError(f"corrupt checkpoint {path}: {reason}") from err


def rng_state(device: torch.device | None = None) -> dict:
    """Every global random stream (CPU, and each CUDA device when present), for a checkpoint; also the
    run's CUDA device's alone ("cuda_run": `device`'s, the stream the run drew from)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
        if device is not None and device.type == "cuda":
            state["cuda_run"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Put back the streams `rng_state` saved (CUDA ones only where CUDA is present); a CUDA `device`
    gets the saved run's stream, so a run continues on another GPU, and every torchrun rank continues
    rank 0's."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
        if "cuda_run" in state and device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_run"], device)
