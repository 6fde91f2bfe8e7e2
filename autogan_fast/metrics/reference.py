"""Reference statistics of a dataset: the (mu, sigma) that generated images' FID is measured against.

Real images go through exactly what generated ones do: uint8 at the generator's resolution ->
feature network -> one `InceptionStats` (splits=1) -> `fid_stats`. Computing them takes one pass over
the dataset (minutes for CIFAR-10 under Inception-v3), so they are cached as TTUR-format `.npz` files
under `$XDG_CACHE_HOME/autogan_fast/fid_stats/`, keyed by dataset, split, resolution, feature network
and the data folder's resolved path (hashed). The cache does not notice new files at the same path:
delete the folder's entry (or the whole cache folder) after changing a dataset in place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data import resize_uint8
from ..distributed import SINGLE, World
from ..kernels import InceptionStats
from .digits_net import default_cache_dir
from .feature_net import FeatureNet
from .fid import load_fid_stats, save_fid_stats


def dataset_statistics(images_uint8: torch.Tensor, feature_net: FeatureNet, resolution: int,
                       batch_size: int = 250, device: torch.device | str | None = None, world: World = SINGLE,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """FID statistics (mu (F,), sigma (F, F), float64) of uint8 (N, 3, H, W) images at `resolution`.

    Images are resized batch by batch on `device` (default: the images' device) with the same
    antialiased resize the training data gets, then fed to `feature_net` (already on `device`).
    Under torchrun rank r takes batches r, r + W, ... and every rank gets the statistics of all.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images_uint8.dtype} "
                         f"{tuple(images_uint8.shape)}")
    device = torch.device(device) if device is not None else images_uint8.device
    stats = InceptionStats(len(images_uint8), feature_net.num_features, feature_net.num_classes, splits=1,
                           device=device)
    for start in world.batch_starts(len(images_uint8), batch_size):
        batch = resize_uint8(images_uint8[start:start + batch_size].to(device), resolution)
        with torch.no_grad():
            stats.update(*feature_net(batch), start=start)
    if world.distributed:
        stats.all_reduce()
    return stats.fid_stats()  # host sync


def cache_path(dataset: str, split: str | None, resolution: int, feature_net_name: str,
               data_path: str | None, cache_dir: Path | None = None) -> Path:
    """Where the reference statistics of this (dataset, split, resolution, feature net, folder) live."""
    root = (default_cache_dir() if cache_dir is None else Path(cache_dir)) / "fid_stats"
    where = "embedded" if not data_path else hashlib.sha256(
        str(Path(data_path).expanduser().resolve()).encode()).hexdigest()[:12]
    parts = (dataset, split or "default", f"{resolution}px", feature_net_name, where)
    return root / ("_".join(re.sub(r"[^\w.+-]", "-", part) for part in parts) + ".npz")


def reference_statistics(dataset: str, data_path: str | None, split: str | None, resolution: int,
                         feature_net: FeatureNet, load_images: Callable[[], torch.Tensor],
                         batch_size: int = 250, device: torch.device | str | None = None,
                         cache_dir: Path | None = None, world: World = SINGLE) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's cached statistics; computed from `load_images()` (uint8) and cached on a miss.

    A cache entry that cannot be read or whose dimension does not match `feature_net` is recomputed
    and replaced (written atomically, so concurrent runs at worst compute it twice). Under torchrun
    rank 0 looks up (or computes and caches) them first and the other ranks then read its cache.
    """
    return world.main_first(lambda: _reference_statistics(
        dataset, data_path, split, resolution, feature_net, load_images, batch_size, device, cache_dir))


def _reference_statistics(dataset: str, data_path: str | None, split: str | None, resolution: int,
                          feature_net: FeatureNet, load_images: Callable[[], torch.Tensor], batch_size: int,
                          device: torch.device | str | None, cache_dir: Path | None,
                          ) -> tuple[np.ndarray, np.ndarray]:
    path = cache_path(dataset, split, resolution, feature_net.name, data_path, cache_dir)
    if path.is_file():
        try:
            mu, sigma = load_fid_stats(path)
            if mu.shape[0] == feature_net.num_features:
                return mu, sigma
        except ValueError:  # UsageError included: a damaged cache file is replaced below
            pass
    mu, sigma = dataset_statistics(load_images(), feature_net, resolution, batch_size, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_fid_stats(path, mu, sigma)
    return mu, sigma


__all__ = ["cache_path", "dataset_statistics", "reference_statistics"]
