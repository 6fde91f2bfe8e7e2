"""The feature-network interface behind the Inception Score, FID and the search reward.

A feature network maps uint8 RGB images of any resolution to pooled features (for FID) and class
logits (for IS). Two implementations sit behind it: the embedded digits classifier and Inception-v3.
"""

from __future__ import annotations

import abc

import torch
from torch import nn


class FeatureNet(nn.Module, abc.ABC):
    """uint8 images (N, 3, H, W) -> (features (N, num_features), logits (N, num_classes)), float32."""

    name: str  # short identifier, used in cache keys of reference statistics
    num_features: int
    num_classes: int

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_uint8_images(images: torch.Tensor) -> None:
    """The input contract of every feature network: (N, 3, H, W) uint8."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 of shape (N, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
