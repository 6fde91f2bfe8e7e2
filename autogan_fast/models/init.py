"""AutoGAN's weight init (`weights_init` with init_type xavier_uniform)."""

from torch import nn


def init_weights(module: nn.Module) -> None:
    """As AutoGAN's `weights_init` (matched by class name "Conv2d" and "BatchNorm2d"): xavier-uniform
    weights for Conv2d only, BatchNorm gamma ~ N(1, 0.02) and beta 0. ConvTranspose2d, Linear and all
    biases keep PyTorch's default init."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            nn.init.xavier_uniform_(m.weight, 1.0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
