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
import json
from pathlib import Path

from .cli import run_cli
from .config import GAN_SIZE_LIMITS, InputSettings
from .errors import UsageError
from .flags import ArgumentParser, add_config_flags, explicit_values
from .jobs.evaluate import save_statistics, score_checkpoint
from .pretrained import RELEASED

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


def positive(name: str, value: int | None, limit: int) -> None:
    """UsageError unless `value` (None: not given) is in 1..limit."""
    if value is not None and value <= 0:
        raise UsageError(f"--{name} must be positive, got {value}")
    if value is not None and value > limit:
        raise UsageError(f"--{name} must be at most {limit:,} (a bound far above real use), got {value:,}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.checkpoint is None) == (args.save_stats is None):
        raise UsageError("give --checkpoint PT (score a trained generator) or --save-stats NPZ (reference "
                         "statistics of real data), exactly one of them")
    positive("batch-size", args.batch_size, MAX_BATCH_SIZE)
    shared = explicit_values(args, InputSettings)
    if args.checkpoint is not None:
        if args.resolution is not None:
            raise UsageError("--resolution only applies with --save-stats")
        arch = None if args.arch is None else " ".join(args.arch)
        result, reports = score_checkpoint(Path(args.checkpoint), arch, shared, args.num_images, args.fid_stats,
                                           args.batch_size)
        if not reports:
            return 0
        if args.json:
            print(json.dumps({k: result[k] for k in ("inception_score", "inception_score_std", "fid")}))
        else:
            print(f"IS {result['inception_score']:.3f} ± {result['inception_score_std']:.3f}  "
                  f"FID {result['fid']:.3f}  ({result['generator']}, {result['num_images']} images)")
    else:
        for name in ("num_images", "fid_stats", "arch"):
            if getattr(args, name) is not None:
                raise UsageError(f"--{name.replace('_', '-')} only applies with --checkpoint")
        positive("resolution", args.resolution, MAX_RESOLUTION)
        result, reports = save_statistics(Path(args.save_stats), shared, args.resolution, args.batch_size)
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
