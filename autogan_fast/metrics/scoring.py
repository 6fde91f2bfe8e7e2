"""Scoring a generator: IS and FID of its images, as training logs them and `evaluate` reports them."""

from __future__ import annotations

import numpy as np
import torch

from ..engine import generator_statistics
from ..models import SharedGenerator
from .feature_net import FeatureNet
from .fid import frechet_distance


def score_generator(gen: SharedGenerator, feature_net: FeatureNet, reference: tuple[np.ndarray, np.ndarray],
                    num_images: int, batch_size: int, splits: int, seed: int, device: torch.device,
                    ) -> dict[str, float]:
    """IS (mean, std over splits) and FID against `reference` (mu, sigma) of `num_images` images of `gen`.

    `gen` runs in eval mode. Its noise comes from the global generator re-seeded with `seed` inside
    a fork (the caller's random state is left as it was), so scoring never disturbs training and
    `evaluate` reproduces the numbers training logged.
    """
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        stats = generator_statistics(gen, feature_net, num_images, gen.latent_dim, batch_size, splits, device)
    inception_score, inception_score_std = stats.inception_score()  # host sync
    mu, sigma = stats.fid_stats()  # host sync
    return {"inception_score": inception_score, "inception_score_std": inception_score_std,
            "fid": frechet_distance(mu, sigma, *reference)}


__all__ = ["score_generator"]
