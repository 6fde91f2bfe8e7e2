"""The one-pass jobs of `evaluate`: IS and FID of a trained generator, and reference statistics of real
data. They own no run folder (they write nothing but the statistics file asked for), so no driver runs
them: the command calls them with typed values and prints what they return."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig, config_from_dict
from ..data import load_images
from ..errors import UsageError
from ..metrics import FeatureNet, load_feature_net
from ..metrics.fid import load_fid_stats, save_fid_stats
from ..metrics.reference import dataset_statistics, reference_statistics
from ..metrics.scoring import score_generator
from ..pretrained import read_generator_file, resolve_arch
from .inputs import resolve_device, select_kernels, torchrun_world

FOLDER_RESOLUTION = 32  # image-folder datasets are loaded at this size unless a resolution is given


def checked_fid_stats(path: str, feature_net: FeatureNet) -> tuple[np.ndarray, np.ndarray]:
    """Statistics from `path`, which must have the feature network's dimension."""
    mu, sigma = load_fid_stats(path)
    if mu.shape[0] != feature_net.num_features:
        raise UsageError(f"FID statistics file {path} has {mu.shape[0]}-d features but feature network "
                         f"{feature_net.name} gives {feature_net.num_features}; use statistics of the same network")
    return mu, sigma


def score_checkpoint(path: Path, arch: str | None, shared: dict[str, object], num_images: int | None = None,
                     fid_stats: str | None = None, batch_size: int | None = None) -> tuple[dict, bool]:
    """IS and FID of the (EMA) generator in the file at `path` (a train checkpoint, or AutoGAN's file with
    `arch`); `shared` overrides the run's data and scoring settings, `num_images` / `batch_size` (None: the
    run's) how it is scored, `fid_stats` (None: the dataset's cached statistics) what FID is against.
    Also returns whether this process reports them (rank 0 of a torchrun job: every rank holds them)."""
    if arch is not None:
        try:
            resolve_arch(arch)
        except UsageError as err:
            raise UsageError(f"--arch: {err}") from None
    loaded = read_generator_file(path, arch)
    gen = loaded.generator
    if loaded.config is not None:  # a train checkpoint: its run's settings
        base = config_from_dict(loaded.config, TrainConfig)
    else:  # AutoGAN's file: the sizes from its tensors, the data and scoring flags from the command line
        base = TrainConfig(dataset="stl10" if gen.output_size == 48 else "cifar10", latent_dim=gen.latent_dim,
                           gf_dim=gen.gf_dim, bottom_width=gen.bottom_width)
    config = dataclasses.replace(base, **shared).validate()
    num_images = config.num_eval_imgs if num_images is None else num_images
    if num_images < max(config.is_splits, 2):
        raise UsageError(f"--num-images must be at least {max(config.is_splits, 2)} (IS splits, FID "
                         f"covariance), got {num_images}")
    batch_size = batch_size or config.eval_batch_size

    with torchrun_world(config.device) as world:  # under torchrun the ranks share the images
        device = resolve_device(config.device, world)
        select_kernels(config.kernels, device)
        feature_net = load_feature_net(config.resolved_feature_net(), device, config.inception_weights, world)
        gen.to(device)
        if fid_stats is not None:
            reference = checked_fid_stats(fid_stats, feature_net)
        else:
            resolution = gen.output_size
            reference = reference_statistics(
                config.dataset, config.data_path, config.split, resolution, feature_net,
                lambda: load_images(config.dataset, config.data_path, config.split, resolution), batch_size,
                device, world=world)
        metrics = score_generator(gen, feature_net, reference, num_images, batch_size, config.is_splits,
                                  config.seed, device, world)
    result = {**metrics, "checkpoint": str(path), "num_images": num_images, "generator": loaded.describe(path)}
    return result, world.is_main


def save_statistics(out: Path, shared: dict[str, object], resolution: int | None = None,
                    batch_size: int | None = None) -> tuple[dict, bool]:
    """Reference statistics of the real data (`shared`: its settings; `resolution` None: the data's own),
    written to `out` (under torchrun the ranks share the images and rank 0 writes). Also returns whether
    this process reports the result (rank 0)."""
    config = TrainConfig(**shared)
    config.validate_inputs()
    out = out.expanduser()
    if not out.parent.is_dir():
        raise UsageError(f"cannot write FID statistics {out}: folder {out.parent} does not exist")
    torch.manual_seed(config.seed)
    images = load_images(config.dataset, config.data_path, config.split, resolution or FOLDER_RESOLUTION)
    resolution = resolution or images.shape[-1]
    with torchrun_world(config.device) as world:
        device = resolve_device(config.device, world)
        select_kernels(config.kernels, device)
        feature_net = load_feature_net(config.resolved_feature_net(), device, config.inception_weights, world)
        mu, sigma = dataset_statistics(images, feature_net, resolution,
                                       batch_size or config.eval_batch_size, device, world)
    if world.is_main:
        save_fid_stats(out, mu, sigma)
    result = {"fid_stats": str(out), "dataset": config.dataset, "num_images": len(images),
              "resolution": resolution, "feature_net": feature_net.name, "num_features": int(mu.shape[0])}
    return result, world.is_main


__all__ = ["FOLDER_RESOLUTION", "checked_fid_stats", "save_statistics", "score_checkpoint"]
