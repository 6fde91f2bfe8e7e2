"""The searched generator and the fixed spectral-normalized discriminator."""

import torch
from torch import nn

from .discriminator import Discriminator
from .generator import SharedGenerator, sync_batch_norm
from .init import init_deconvs_as_nearest, init_weights


def initialized_gan(gen: nn.Module, df_dim: int, device: torch.device, across_ranks: bool = False,
                    ) -> tuple[nn.Module, Discriminator]:
    """`gen` (just built) and a new discriminator, both with AutoGAN's init, SN on every D layer, on
    `device`. `across_ranks` (torchrun): G's batch norms take global-batch statistics. The draws run in
    one fixed order (D built after G, then the inits, then SN's vectors), so a seed gives one GAN."""
    if across_ranks:
        sync_batch_norm(gen)
    dis = Discriminator(df_dim)
    init_weights(gen)
    init_weights(dis)
    dis.apply_spectral_norm()  # after init, so weight_orig holds the xavier weights
    return gen.to(device), dis.to(device)


__all__ = ["Discriminator", "SharedGenerator", "init_deconvs_as_nearest", "init_weights", "initialized_gan",
           "sync_batch_norm"]
