"""Sample grids: a generator's images from a fixed latent batch as one PNG (samples/ of a run folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import quantize_images
from ..runs.checkpoint import atomic_write


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


def save_samples(gen: torch.nn.Module, arch: list[int], fixed_z: torch.Tensor, path: Path) -> None:
    """A PNG grid of `arch`'s images from the fixed latent batch (G in eval mode): `gen` is the search's
    shared generator or a derived one of that architecture."""
    was_training = gen.training
    gen.eval()
    with torch.no_grad():
        images = quantize_images(gen(fixed_z, arch))
    gen.train(was_training)
    path.parent.mkdir(exist_ok=True)
    save_image_grid(path, images)
