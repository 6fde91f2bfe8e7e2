"""AutoGAN's shared (weight-sharing) generator: every choice of the search space, picked per step.

Linear(latent -> bottom_width^2 * gf) -> cells (each doubles the resolution) -> BN -> ReLU ->
3x3 conv to RGB -> tanh. At stage s the image is taken after cell s+1 through the one to-RGB head
all stages share (as AutoGAN's `shared_gan.py`). Weights are shared by every architecture: each cell
holds a pre- and a post-activation block and all norms and upsamplers; the architecture is an argument of
the forward, `gen(z, arch)`, which picks the path (and so the stage: the output resolution).

Nearest-x2 upsampling followed by the 3x3 conv runs as one fused op (`upsample_conv2d`: four 2x2
phase convolutions, no upsampled tensor), with the pre-activation (ReLU, or BatchNorm folded to a
per-channel affine then ReLU) fused into its input load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_sum
from ..kernels import bilinear_upsample, upsample_conv2d
from ..search_space import (
    CONV_PRE,
    NORM_BN,
    NORM_IN,
    NORM_NONE,
    NUM_CELLS,
    UP_BILINEAR,
    UP_DECONV,
    UP_NEAREST,
    CellChoice,
    decode_arch,
)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics can span the ranks of a torchrun job.

    With `across_ranks` set (by `sync_batch_norm`, under torchrun) the batch mean and variance are
    those of the global batch, all ranks' rows together, as in one process: the gradient and the
    running statistics are then the single-process ones, and identical on every rank (so the EMA
    generator, which copies them, is too). Per-rank statistics would instead normalize each rank's
    B / W rows on their own: a different model at every world size. `nn.SyncBatchNorm` does the same
    but runs on CUDA only, and the fused upsample-conv path needs the statistics as an affine anyway.
    """

    across_ranks = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.across_ranks):
            return super().forward(x)
        scale, shift = batch_norm_as_affine(self, x)
        return x * scale[:, None, None] + shift[:, None, None]


def sync_batch_norm(module: nn.Module) -> None:
    """Make every `BatchNorm2d` of `module` take its training statistics over all ranks (needs an
    initialized default process group)."""
    for m in module.modules():
        if isinstance(m, BatchNorm2d):
            m.across_ranks = True


def batch_moments(x: torch.Tensor, across_ranks: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and population variance of x (N, C, H, W), and the element count per channel;
    `across_ranks`: of the rows of every rank together (two differentiable all-reduces of C values).
    Accumulated in at least fp32 (bf16 activations under autocast: --precision bf16)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # low-precision activations accumulate in fp32; fp32 / fp64 stay as they are
    if not across_ranks:
        return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False), x.numel() // x.shape[1]
    count = x.numel() // x.shape[1] * torch.distributed.get_world_size()
    mean = all_reduce_sum(x.sum(dim=(0, 2, 3))) / count
    var = all_reduce_sum((x - mean[:, None, None]).square().sum(dim=(0, 2, 3))) / count
    return mean, var, count


def batch_norm_as_affine(bn: nn.BatchNorm2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm2d(x) == x * scale[c] + shift[c]: returns (scale, shift), updating running stats in training.

    Lets the fused conv apply the norm on its input load. Gradients flow through the batch
    statistics exactly as through `F.batch_norm`.
    """
    if bn.training:
        mean, var, count = batch_moments(x, getattr(bn, "across_ranks", False))
        with torch.no_grad():
            bn.running_mean.lerp_(mean, bn.momentum)
            bn.running_var.lerp_(var * (count / max(count - 1, 1)), bn.momentum)
            bn.num_batches_tracked.add_(1)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = bn.weight * torch.rsqrt(var + bn.eps)
    return scale, bn.bias - mean * scale


def bilinear_by(x: torch.Tensor, factor: int, learned: nn.Module | None) -> torch.Tensor:
    return bilinear_upsample(x, factor)  # Triton on CUDA; elsewhere F.interpolate(align_corners=False)


def nearest_by(x: torch.Tensor, factor: int, learned: nn.Module | None) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def deconv_by(x: torch.Tensor, factor: int, learned: nn.Module | None) -> torch.Tensor:
    return learned(x)  # the place's stack of log2(factor) 2x2 stride-2 transposed convs


# How each upsampling op (search_space.UP_TYPES) enlarges a feature map by an integer factor (2 in a
# block or a shortcut, 2 or 4 for a skip-in): up(x, factor, learned), `learned` being the place's own
# learned upsampler (the deconv op's transposed convs; None where the place has none). One entry per
# op of search_space.UP_OPS (tests/test_models.py checks).
UPSAMPLERS: dict[str, Callable[[torch.Tensor, int, nn.Module | None], torch.Tensor]] = {
    UP_BILINEAR: bilinear_by,
    UP_NEAREST: nearest_by,
    UP_DECONV: deconv_by,
}


def upsample(x: torch.Tensor, up: str, factor: int, learned: nn.Module | None) -> torch.Tensor:
    """`x` enlarged `factor` times by upsampling op `up` (see UPSAMPLERS)."""
    return UPSAMPLERS[up](x, factor, learned)


class Norms(nn.Module):
    """The norm choices of one position: none, BatchNorm or InstanceNorm (AutoGAN: IN without affine)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = BatchNorm2d(channels)
        self.inn = nn.InstanceNorm2d(channels)

    def forward(self, x: torch.Tensor, norm: str) -> torch.Tensor:
        if norm == NORM_BN:
            return self.bn(x)
        if norm == NORM_IN:
            return self.inn(x)
        if norm == NORM_NONE:
            return x
        raise ValueError(f"unknown norm {norm!r}")


def fused_layout(conv: nn.Conv2d) -> bool:
    """Whether the fused upsample-conv takes this conv: NCHW nets only. Channels-last nets (--precision
    bf16) run nearest upsample + cuDNN's NHWC conv, the same maths: the fused kernels are NCHW, fp32."""
    return conv.weight.is_contiguous()


class PreActBlock(nn.Module):
    """norm -> ReLU -> (x2 upsample) -> 3x3 conv."""

    def __init__(self, in_ch: int, out_ch: int, upsamples: bool):
        super().__init__()
        self.upsamples = upsamples
        self.norms = Norms(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(in_ch, in_ch, 2, stride=2) if upsamples else None

    def forward(self, x: torch.Tensor, norm: str, up: str) -> torch.Tensor:
        if self.upsamples and up == UP_NEAREST and norm in (NORM_NONE, NORM_BN) and fused_layout(self.conv):
            if norm == NORM_BN:
                scale, shift = batch_norm_as_affine(self.norms.bn, x)
                return upsample_conv2d(x, self.conv.weight, self.conv.bias, scale=scale, shift=shift, relu=True)
            return upsample_conv2d(x, self.conv.weight, self.conv.bias, relu=True)
        h = F.relu(self.norms(x, norm))
        if self.upsamples:
            h = upsample(h, up, 2, self.deconv)
        return self.conv(h)


class PostActBlock(nn.Module):
    """(x2 upsample) -> 3x3 conv -> norm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, upsamples: bool):
        super().__init__()
        self.upsamples = upsamples
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(in_ch, in_ch, 2, stride=2) if upsamples else None
        self.norms = Norms(out_ch)

    def forward(self, x: torch.Tensor, norm: str, up: str) -> torch.Tensor:
        if self.upsamples and up == UP_NEAREST and fused_layout(self.conv):
            h = upsample_conv2d(x, self.conv.weight, self.conv.bias)
        else:
            h = self.conv(upsample(x, up, 2, self.deconv) if self.upsamples else x)
        return F.relu(self.norms(h, norm))


class Cell(nn.Module):
    """One generator cell: block 1 (upsamples), skip-ins, block 2, shortcut.

    The skip output a later cell receives is block 1's output WITH this cell's skip-in sums added, as
    in AutoGAN: its cells assign `h_skip_out = h` and then add the skip-ins to `h` in place. The same
    values here, without the in-place add (which breaks autograd on current torch).
    """

    def __init__(self, channels: int, num_skip_in: int):
        super().__init__()
        self.pre1 = PreActBlock(channels, channels, upsamples=True)
        self.post1 = PostActBlock(channels, channels, upsamples=True)
        self.pre2 = PreActBlock(channels, channels, upsamples=False)
        self.post2 = PostActBlock(channels, channels, upsamples=False)
        self.shortcut_deconv = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.shortcut_conv = nn.Conv2d(channels, channels, 1)
        # Skip-in from earlier cell i (1-based): resized to this cell's size (interpolation, or its own
        # stack of x2 deconvs: one per doubling), then a 1x1 conv. Cell i is num_skip_in + 1 - i doublings away.
        self.skip_convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_skip_in))
        self.skip_deconvs = nn.ModuleList(
            nn.Sequential(*(nn.ConvTranspose2d(channels, channels, 2, stride=2)
                            for _ in range(num_skip_in + 1 - earlier)))
            for earlier in range(1, num_skip_in + 1)
        )

    def resize_skip(self, feature: torch.Tensor, earlier: int, size: int, up: str) -> torch.Tensor:
        """Bring the skip output of earlier cell `earlier` (1-based) to `size` pixels."""
        # cells double the size: the factor is an integer (2 or 4), the deconvs' stack as many doublings
        return upsample(feature, up, size // feature.shape[-1], self.skip_deconvs[earlier - 1])

    def forward(self, x: torch.Tensor, skip_features: list[torch.Tensor], choice: CellChoice
                ) -> tuple[torch.Tensor, torch.Tensor]:
        block1, block2 = (self.pre1, self.pre2) if choice.conv == CONV_PRE else (self.post1, self.post2)
        h = block1(x, choice.norm, choice.up)
        size = h.shape[-1]
        for earlier in choice.skip_from:  # 1-based cell numbers; skip_convs[i] serves cell i + 1
            resized = self.resize_skip(skip_features[earlier - 1], earlier, size, choice.up)
            h = h + self.skip_convs[earlier - 1](resized)
        skip_out = h  # including the skip-ins (see the class docstring)
        out = block2(h, choice.norm, choice.up)
        if choice.shortcut:
            if choice.up == UP_NEAREST:  # a 1x1 conv commutes with nearest upsampling: run it small
                out = out + upsample(self.shortcut_conv(x), UP_NEAREST, 2, None)
            else:
                out = out + self.shortcut_conv(upsample(x, choice.up, 2, self.shortcut_deconv))
        return skip_out, out


class SharedGenerator(nn.Module):
    """Weight-sharing generator of the search: `gen(z, arch)` runs architecture `arch` (length 4, 9 or 14:
    its stage, and so the output resolution) on latents `z`."""

    def __init__(self, latent_dim: int = 128, gf_dim: int = 128, bottom_width: int = 4):
        super().__init__()
        self.latent_dim, self.gf_dim, self.bottom_width = latent_dim, gf_dim, bottom_width
        self.l1 = nn.Linear(latent_dim, bottom_width * bottom_width * gf_dim)
        self.cells = nn.ModuleList(Cell(gf_dim, num_skip_in=c) for c in range(NUM_CELLS))
        # one head for every stage (AutoGAN's `to_rgb`): state-dict keys to_rgb.0 (BN) and to_rgb.2 (conv)
        self.to_rgb = nn.Sequential(BatchNorm2d(gf_dim), nn.ReLU(), nn.Conv2d(gf_dim, 3, 3, padding=1), nn.Tanh())

    def output_resolution(self, stage: int) -> int:
        return self.bottom_width * 2 ** (stage + 1)

    def forward(self, z: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        """Images of architecture `arch` (validated: UsageError naming a bad position) from latents `z`.
        `arch` is a host sequence: choosing the path reads nothing from the device."""
        return self.run_cells(z, decode_arch(arch))

    def run_cells(self, z: torch.Tensor, choices: Sequence[CellChoice]) -> torch.Tensor:
        """The forward through the cells `choices` decode (one per cell of the stage)."""
        h = self.l1(z).view(-1, self.gf_dim, self.bottom_width, self.bottom_width)
        skip_features: list[torch.Tensor] = []
        for cell, choice in zip(self.cells, choices, strict=False):
            skip_out, h = cell(h, skip_features, choice)
            skip_features.append(skip_out)
        return self.to_rgb(h)
