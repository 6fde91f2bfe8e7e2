"""AutoGAN's weight init (`weights_init` with init_type xavier_uniform)."""

from torch import nn


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform conv / deconv / linear weights, BatchNorm gamma ~ N(1, 0.02), beta 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, 1.0)  # biases keep PyTorch's default, as in AutoGAN
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
