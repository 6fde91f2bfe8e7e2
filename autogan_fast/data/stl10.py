"""STL-10 from its binary folder (`stl10_binary/`), as uint8 (N, 3, 96, 96).

`unlabeled_X.bin`, `train_X.bin` and `test_X.bin` are headerless: 3 x 96 x 96 bytes per image, the R, G
and B planes one after another, each plane stored column-major (Fortran order, as the dataset was
written from MATLAB). Read as (N, 3, 96, 96) in C order, a plane comes out as (W, H), so H and W are
swapped back here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autogan_fast.errors import UsageError

FOLDER_NAME = "stl10_binary"
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "unlabeled": ("unlabeled_X.bin",),
    "train": ("train_X.bin",),
    # Same order as torchvision's STL10(split="train+unlabeled"): the labeled images first.
    "train+unlabeled": ("train_X.bin", "unlabeled_X.bin"),
    "test": ("test_X.bin",),
}
IMAGE_BYTES = 3 * 96 * 96  # 27,648
# Images copied per step: bounds the extra memory of the transposing copy to about 110 MB, while the
# unlabeled split alone is 2.8 GB.
_CHUNK = 4096


def resolve_stl10_folder(path: str | Path) -> Path:
    """`stl10_binary/` itself, or a folder that contains it -> the binary folder."""
    path = Path(path).expanduser()
    if (path / FOLDER_NAME).is_dir():
        return path / FOLDER_NAME
    if path.is_dir():
        return path
    raise UsageError(f"STL-10 folder not found: {path} (pass {FOLDER_NAME}/ or the folder holding it)")


def _count_images(file: Path) -> int:
    """Number of images in one `*_X.bin` file, checked from its size (the format has no header)."""
    if not file.is_file():
        raise UsageError(f"STL-10 image file missing: {file} (expected the binary version of STL-10, "
                         f"stl10_binary.tar.gz extracted)")
    size = file.stat().st_size
    if size == 0 or size % IMAGE_BYTES != 0:
        raise UsageError(f"STL-10 image file {file} has {size} bytes, not a positive multiple of "
                         f"{IMAGE_BYTES} (3 x 96 x 96): truncated or not an STL-10 *_X.bin file")
    return size // IMAGE_BYTES


def _read_into(file: Path, out: torch.Tensor) -> None:
    """Read all images of `file` into `out` (n, 3, 96, 96), turning column-major planes row-major."""
    try:
        with open(file, "rb") as f:
            for i in range(0, out.shape[0], _CHUNK):
                n = min(_CHUNK, out.shape[0] - i)
                # fromfile on the open handle reads the next n images into a fresh, writable array.
                block = np.fromfile(f, dtype=np.uint8, count=n * IMAGE_BYTES)
                if block.size != n * IMAGE_BYTES:
                    raise UsageError(f"STL-10 image file {file} ended early (changed while being read?)")
                # (n, 3, W, H) -> (n, 3, H, W): copy_ writes the transposed view into the output.
                out[i:i + n].copy_(torch.from_numpy(block).view(n, 3, 96, 96).transpose(2, 3))
    except OSError as e:
        raise UsageError(f"cannot read STL-10 image file {file}: {e}") from None


def load_stl10(path: str | Path, split: str = "unlabeled") -> torch.Tensor:
    """STL-10 images of one split as a uint8 tensor (N, 3, 96, 96), row-major planes, in file order.

    Args:
        path: the `stl10_binary/` folder, or its parent.
        split: "unlabeled" (100,000), "train" (5,000), "train+unlabeled" (105,000) or "test" (8,000).

    Raises:
        UsageError: unknown split, missing folder or file, or a file whose size is not a whole number
            of images; the message names it.
    """
    if split not in SPLIT_FILES:
        raise UsageError(f"unknown STL-10 split {split!r}; choose one of {', '.join(SPLIT_FILES)}")
    folder = resolve_stl10_folder(path)
    files = [folder / name for name in SPLIT_FILES[split]]
    counts = [_count_images(file) for file in files]  # every file checked before the big allocation
    out = torch.empty((sum(counts), 3, 96, 96), dtype=torch.uint8)
    start = 0
    for file, n in zip(files, counts, strict=True):
        _read_into(file, out[start:start + n])
        start += n
    return out
