"""`python -m autogan_fast.evaluate`: IS and FID of a trained generator, or reference statistics of real data.

  python -m autogan_fast.evaluate --checkpoint RUN/best.pt [--num-images 50000] [--fid-stats F.npz]
  python -m autogan_fast.evaluate --checkpoint autogan_cifar10_a.pth --arch autogan_cifar10_a --fid-stats F.npz
  python -m autogan_fast.evaluate --dataset cifar10 --data-path P --save-stats F.npz

With --checkpoint (checkpoint.pt or best.pt of a `train` run) the EMA generator is scored exactly as
training scores it, so by default (the run's seed and image count) the numbers equal the ones
training logged at that iteration: image i's latent depends only on the seed and i
(`metrics.scoring.image_latents`), whatever the batch size or the number of processes. FID is against --fid-stats, or
else against the cached reference statistics of the run's dataset. The data and scoring flags
default to the run's own.
AutoGAN's own generator files (released `.pth` or its derived-training checkpoints) carry no settings:
give --arch; the dataset defaults to cifar10 (stl10 for a 48-px generator), the scoring flags to
50,000 images, 10 IS splits, batches of 250, seed 12345.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from .cli import run_cli
from .config import GAN_SIZE_LIMITS, InputSettings, TrainConfig, config_from_dict
from .data import load_images
from .errors import UsageError
from .flags import ArgumentParser, add_config_flags, explicit_values
from .jobs.inputs import resolve_device, select_kernels, torchrun_world
from .metrics import FeatureNet, load_feature_net
from .metrics.fid import load_fid_stats, save_fid_stats
from .metrics.reference import dataset_statistics, reference_statistics
from .metrics.scoring import score_generator
from .pretrained import RELEASED, read_generator_file, resolve_arch

FOLDER_RESOLUTION = 32  # image-folder datasets are loaded at this size unless --resolution says otherwise
# The bounds of the sizes (see config.GAN_SIZE_LIMITS): statistics are taken at the size of a generator's images,
# at most 8 x the largest --bottom-width; batches as large as training's --eval-batch-size may be.
MAX_RESOLUTION = 8 * GAN_SIZE_LIMITS["bottom_width"]
MAX_BATCH_SIZE = GAN_SIZE_LIMITS["eval_batch_size"]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m autogan_fast.evaluate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", metavar="PT", help="checkpoint.pt or best.pt of a train run, or an AutoGAN "
                                                           "generator file (.pth, with --arch): score its generator "
                                                           "(the EMA one when present)")
    parser.add_argument("--arch", nargs="+", metavar="ARCH",
                        help="with --checkpoint: the generator's architecture, 14 integers (separate words or one "
                             "quoted string) or a released name (" + ", ".join(RELEASED) + "); needed for "
                             "AutoGAN's files, checked against a train checkpoint's own")
    parser.add_argument("--save-stats", metavar="NPZ", help="write reference statistics (mu, sigma; TTUR .npz) "
                                                            "of the real data to this file")
    parser.add_argument("--num-images", type=int, help="with --checkpoint: generated images to score "
                                                       "(default: the run's --num-eval-imgs)")
    parser.add_argument("--fid-stats", metavar="NPZ", help="with --checkpoint: reference statistics to score "
                                                           "FID against (default: the dataset's cached ones)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the run's --eval-batch-size, "
                                                       "else 250)")
    parser.add_argument("--resolution", type=int, metavar="PX", help="with --save-stats: image size the "
                                                                     "statistics are taken at (default: the data's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_config_flags(parser, InputSettings)  # the flags every command shares, as train and search have them
    return parser


def checked_fid_stats(path: str, feature_net: FeatureNet) -> tuple[np.ndarray, np.ndarray]:
    """Statistics from `path`, which must have the feature network's dimension."""
    mu, sigma = load_fid_stats(path)
    if mu.shape[0] != feature_net.num_features:
        raise UsageError(f"FID statistics file {path} has {mu.shape[0]}-d features but feature network "
                         f"{feature_net.name} gives {feature_net.num_features}; use statistics of the same network")
    return mu, sigma


def positive(name: str, value: int | None, limit: int) -> None:
    """UsageError unless `value` (None: not given) is in 1..limit."""
    if value is not None and value <= 0:
        raise UsageError(f"--{name} must be positive, got {value}")
    if value is not None and value > limit:
        raise UsageError(f"--{name} must be at most {limit:,} (a bound far above real use), got {value:,}")


def evaluate_checkpoint(args, shared: dict[str, object]) -> tuple[dict, bool]:
    """IS and FID of the checkpoint's (EMA) generator; `shared` overrides the run's data and scoring flags.
    Also returns whether this process reports them (rank 0 of a torchrun job: every rank holds them)."""
    if args.resolution is not None:
        raise UsageError("--resolution only applies with --save-stats")
    path = Path(args.checkpoint)
    arch = None if args.arch is None else " ".join(args.arch)
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
    num_images = config.num_eval_imgs if args.num_images is None else args.num_images
    if num_images < max(config.is_splits, 2):
        raise UsageError(f"--num-images must be at least {max(config.is_splits, 2)} (IS splits, FID "
                         f"covariance), got {num_images}")
    batch_size = args.batch_size or config.eval_batch_size

    with torchrun_world(config.device) as world:  # under torchrun the ranks share the images
        device = resolve_device(config.device, world)
        select_kernels(config.kernels, device)
        feature_net = load_feature_net(config.resolved_feature_net(), device, config.inception_weights, world)
        gen.to(device)
        if args.fid_stats is not None:
            reference = checked_fid_stats(args.fid_stats, feature_net)
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


def save_statistics(args, shared: dict[str, object]) -> tuple[dict, bool]:
    """Reference statistics of the real data, written to --save-stats (under torchrun the ranks share
    the images and rank 0 writes). Also returns whether this process reports the result (rank 0)."""
    for name in ("num_images", "fid_stats", "arch"):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name.replace('_', '-')} only applies with --checkpoint")
    positive("resolution", args.resolution, MAX_RESOLUTION)
    config = TrainConfig(**shared)
    config.validate_inputs()
    out = Path(args.save_stats).expanduser()
    if not out.parent.is_dir():
        raise UsageError(f"cannot write FID statistics {out}: folder {out.parent} does not exist")
    torch.manual_seed(config.seed)
    images = load_images(config.dataset, config.data_path, config.split, args.resolution or FOLDER_RESOLUTION)
    resolution = args.resolution or images.shape[-1]
    with torchrun_world(config.device) as world:
        device = resolve_device(config.device, world)
        select_kernels(config.kernels, device)
        feature_net = load_feature_net(config.resolved_feature_net(), device, config.inception_weights, world)
        mu, sigma = dataset_statistics(images, feature_net, resolution,
                                       args.batch_size or config.eval_batch_size, device, world)
    if world.is_main:
        save_fid_stats(out, mu, sigma)
    result = {"fid_stats": str(out), "dataset": config.dataset, "num_images": len(images),
              "resolution": resolution, "feature_net": feature_net.name, "num_features": int(mu.shape[0])}
    return result, world.is_main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.checkpoint is None) == (args.save_stats is None):
        raise UsageError("give --checkpoint PT (score a trained generator) or --save-stats NPZ (reference "
                         "statistics of real data), exactly one of them")
    positive("batch-size", args.batch_size, MAX_BATCH_SIZE)
    shared = explicit_values(args, InputSettings)
    if args.checkpoint is not None:
        result, reports = evaluate_checkpoint(args, shared)
        if not reports:
            return 0
        if args.json:
            print(json.dumps({k: result[k] for k in ("inception_score", "inception_score_std", "fid")}))
        else:
            print(f"IS {result['inception_score']:.3f} ± {result['inception_score_std']:.3f}  "
                  f"FID {result['fid']:.3f}  ({result['generator']}, {result['num_images']} images)")
    else:
        result, reports = save_statistics(args, shared)
        if not reports:
            return 0
        if args.json:
            print(json.dumps(result))
        else:
            print(f"wrote {result['fid_stats']}: {result['num_features']}-d {result['feature_net']} statistics "
                  f"of {result['num_images']} {result['dataset']} images at {result['resolution']} px")
    return 0


if __name__ == "__main__":
    run_cli(main)
