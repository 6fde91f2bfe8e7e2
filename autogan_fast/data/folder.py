"""A folder of PNG / JPEG images, as uint8 (N, 3, R, R): any photo collection becomes a training set.

Each image is converted to RGB, center-cropped to a square (the largest one, so nothing is stretched)
and resized to R x R with Pillow's LANCZOS filter. LANCZOS because the usual case is shrinking photos by
large factors (1024 -> 32): Pillow widens the filter with the scale factor, so it anti-aliases, and of
its filters Lanczos keeps the most detail with the least aliasing; it is also what StyleGAN2-ADA's
`dataset_tool.py` uses to prepare image folders, so a folder read here matches data prepared there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autogan_fast.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_image_files(folder: str | Path) -> list[Path]:
    """Every PNG / JPEG under `folder` (suffix case-insensitive, recursive), sorted by relative path.

    Sorting the relative POSIX paths makes the order, and so the tensor, the same on every file
    system. Names starting with "." are skipped, files and folders alike: they are editor, VCS and
    macOS metadata (`._photo.jpg` is an AppleDouble resource fork, not a JPEG), never the dataset.
    Symbolic links to folders are not followed, so a link cycle cannot make the walk endless. An
    image name on anything but a regular file (or a link to one) is a UsageError naming it.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UsageError(f"image folder not found: {root}")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        found += [(rel / name).as_posix() for name in filenames
                  if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)]
    files = [root / rel for rel in sorted(found)]
    for file in files:
        if not file.is_file():  # opening a FIFO waits for a writer forever; no device or socket is an image
            raise UsageError(f"{file} is {_file_kind(file)}, not an image file; remove it from the image folder")
    return files


def _file_kind(file: Path) -> str:
    try:
        mode = file.stat().st_mode
    except OSError:
        return "a broken link"
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"


def _load_square(file: Path, resolution: int) -> np.ndarray:
    """One image file -> (R, R, 3) uint8: RGB, center-cropped to a square, resized with LANCZOS."""
    try:
        with Image.open(file) as img:
            # convert() decodes the whole file, so truncated data fails here, inside the try.
            rgb = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # Pillow reports broken files as UnidentifiedImageError (an OSError), OSError ("image file is
        # truncated"), and for some malformed PNG chunks SyntaxError or ValueError.
        raise UsageError(f"cannot read image {file}: {e}") from None
    width, height = rgb.size
    side = min(width, height)
    if (width, height) != (side, side):
        left, top = (width - side) // 2, (height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    if side != resolution:  # an image already at size stays bit-exact
        rgb = rgb.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.array(rgb, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays


def load_image_folder(path: str | Path, resolution: int) -> torch.Tensor:
    """All PNG / JPEG images under `path` as a uint8 tensor (N, 3, resolution, resolution).

    Order: sorted relative paths (see `list_image_files`). Grayscale, palette and RGBA images are
    converted to RGB (alpha is dropped, not composited).

    Raises:
        UsageError: bad resolution, missing folder, a folder with no images, or an image Pillow cannot
            read; the message names the folder or file.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise UsageError(f"image resolution must be a positive integer, got {resolution!r}")
    files = list_image_files(path)
    if not files:
        raise UsageError(f"no PNG or JPEG images found under {Path(path).expanduser()}")
    out = torch.empty((len(files), 3, resolution, resolution), dtype=torch.uint8)
    for i, file in enumerate(files):
        out[i] = torch.from_numpy(_load_square(file, resolution)).permute(2, 0, 1)
    return out
