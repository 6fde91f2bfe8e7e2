"""The searched generator and the fixed spectral-normalized discriminator."""

from .discriminator import Discriminator
from .generator import SharedGenerator, sync_batch_norm
from .init import init_weights

__all__ = ["Discriminator", "SharedGenerator", "init_weights", "sync_batch_norm"]
