"""The run folder: config.json, log.jsonl, atomic checkpoints, PNG sample grids, result.json."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.json"
RESULT = "result.json"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then `os.replace`: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with `weights_only=True`; UsageError naming the file if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"corrupt checkpoint {path}: {first_line}") from err
    if not isinstance(state, dict) or "format" not in state:
        raise UsageError(f"corrupt checkpoint {path}: not a checkpoint of this program")
    return state


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


def create_run_dir(out: str | None) -> Path:
    """`--out DIR` must not hold a run already (that needs --resume); None = a new numbered folder."""
    if out is None:
        return new_run_dir()
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--out {path} already exists and is not empty; use --resume {path} to continue "
                         f"that run, or choose another folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
        if not self.enabled:
            return
        line = json.dumps({"event": event, self.counter: count, **fields})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def truncate_from(self, step: int) -> None:
        """Drop events whose counter is >= step (work after the last checkpoint, redone on resume)."""
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [ln for ln in lines if ln.strip() and json.loads(ln).get(self.counter, 0) < step]
        atomic_write(self.path, lambda f: f.write("".join(ln + "\n" for ln in kept).encode()))

    def read(self) -> list[dict]:
        return [json.loads(ln) for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def save_image_grid(path: Path, images: torch.Tensor, min_cell: int = 32) -> None:
    """uint8 (N, 3, H, W) with N square -> one PNG grid; small images are enlarged (nearest) to `min_cell`."""
    from PIL import Image

    n, _, h, w = images.shape
    side = round(n ** 0.5)
    scale = max(1, -(-min_cell // h))
    array = images.cpu().numpy().transpose(0, 2, 3, 1)
    array = array.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    grid = np.full((side * (h + 2) + 2, side * (w + 2) + 2, 3), 255, dtype=np.uint8)
    for i, image in enumerate(array[: side * side]):
        r, c = divmod(i, side)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = image
    atomic_write(path, lambda f: Image.fromarray(grid).save(f, format="PNG"))
