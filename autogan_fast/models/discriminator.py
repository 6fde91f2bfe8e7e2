"""AutoGAN's discriminator: a spectral-normalized ResNet, fixed (not searched), growing by stage.

optimized block (3 -> df, downsample) -> block (downsample) -> block -> block -> ReLU -> global sum
pool -> SN linear -> 1. Stage s uses the first s+1 blocks plus the last, as AutoGAN's shared GAN.
The SN layers a stage uses are normalized by one grouped launch per forward (`SpectralNormGroup`):
the power iteration and W / sigma of up to 11 layers at once instead of ~13 small kernels per layer.
Layers a stage does not run take no power step, as with `torch.nn.utils.spectral_norm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import SpectralNormGroup, spectral_norm

STAGE_BLOCKS = (1, 2, 3)  # leading blocks used at stage 0, 1, 2 (the last block always runs)


class OptimizedDisBlock(nn.Module):
    """First block: conv -> ReLU -> conv -> avgpool, shortcut avgpool -> 1x1 conv (SNGAN's optimized block)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class DisBlock(nn.Module):
    """ReLU -> conv -> ReLU -> conv (-> avgpool); learnable 1x1 shortcut when it downsamples."""

    def __init__(self, channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c_sc = nn.Conv2d(channels, channels, 1) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        if not self.downsample:
            return h + x
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.c_sc(x), 2)


class Discriminator(nn.Module):
    """SN ResNet discriminator; `stage` (0, 1, 2) chooses how many leading blocks run."""

    def __init__(self, df_dim: int = 64):
        super().__init__()
        self.df_dim = df_dim
        self.blocks = nn.ModuleList([
            OptimizedDisBlock(3, df_dim),
            DisBlock(df_dim, downsample=True),
            DisBlock(df_dim, downsample=False),
        ])
        self.last_block = DisBlock(df_dim, downsample=False)
        self.l5 = nn.Linear(df_dim, 1, bias=False)
        self.stage = 0

    def stage_modules(self, stage: int) -> list[nn.Module]:
        return [*self.blocks[: STAGE_BLOCKS[stage]], self.last_block, self.l5]

    def apply_spectral_norm(self) -> None:
        """Wrap every conv and linear (after init, as AutoGAN does); one launch group per stage."""
        def sn_layers(modules: list[nn.Module]) -> list[nn.Module]:
            return [m for module in modules for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

        for layer in sn_layers([self]):
            spectral_norm(layer)
        self.sn_groups = [SpectralNormGroup(sn_layers(self.stage_modules(s))) for s in range(len(STAGE_BLOCKS))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sn_groups[self.stage].update(training=self.training)
        h = x
        for block in self.blocks[: STAGE_BLOCKS[self.stage]]:
            h = block(h)
        h = F.relu(self.last_block(h))
        return self.l5(h.sum(dim=(2, 3)))
