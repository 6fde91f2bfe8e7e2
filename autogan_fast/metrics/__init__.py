"""Feature networks (embedded digits classifier, Inception-v3) and the IS / FID metrics."""

from __future__ import annotations

import torch

from ..distributed import SINGLE, World
from ..errors import UsageError
from .feature_net import FeatureNet


def load_feature_net(name: str, device: torch.device | str = "cpu",
                     inception_weights: str | None = None, world: World = SINGLE) -> FeatureNet:
    """The feature network `name` ("digits" or "inception"), in eval mode on `device`. Under torchrun rank 0
    loads it first: the digits net is trained and cached on first use, and the other ranks read that cache."""
    return world.main_first(lambda: _load_feature_net(name, device, inception_weights))


def _load_feature_net(name: str, device: torch.device | str, inception_weights: str | None) -> FeatureNet:
    if name == "digits":
        from .digits_net import load_digits_net

        return load_digits_net(device)
    if name == "inception":
        from .inception import load_inception_v3

        return load_inception_v3(inception_weights, device=device)
    raise UsageError(f"unknown feature network {name!r}: choose digits or inception")


__all__ = ["FeatureNet", "load_feature_net"]
