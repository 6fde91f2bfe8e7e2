"""Inception-v3 as FID and IS define it: the TensorFlow graph of 2015-12-05, in plain PyTorch.

This is the network of the TTUR FID code and of the original Inception Score, as ported by pytorch-fid
(`FIDInceptionA/C/E`) and torch-fidelity (`FeatureExtractorInceptionV3`); it differs from torchvision's
ImageNet Inception-v3 in four places (see "TF graph" below): average pools that do not count
padding, a max pool in the last block, 1008 classes, and TF1's bilinear resize of the input.

It is self-contained rather than built on torchvision's `Inception3` because torchvision cannot be
installed beside our torch build (its wheels pin one exact torch version), and we need only the forward
pass, which is short. Parameter names are torchvision's (`Mixed_5b.branch1x1.conv.weight`, ...): the
code behind both published weight files uses them too (torch-fidelity's converter writes them, pytorch-fid
loads its file strictly into torchvision's `Inception3`), so loading is a name-for-name copy.

Weights are never downloaded: `load_inception_v3` reads torch-fidelity's or pytorch-fid's file from a
given path or from the torch hub cache where those libraries keep it, and otherwise says where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autogan_fast.errors import UsageError
from autogan_fast.metrics.feature_net import FeatureNet, check_uint8_images
from autogan_fast.safe_load import load_weights_only

INPUT_SIZE = 299
# The same weights (TF graph 2015-12-05, converted), published by two libraries; first found wins.
WEIGHTS_FILES: dict[str, str] = {
    "weights-inception-2015-12-05-6726825d.pth":
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth":
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
}


def resize_bilinear_tf1x(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF graph: bilinear resize exactly as TensorFlow 1.x `tf.image.resize_bilinear(align_corners=False)`.

    TF1 maps output pixel i to input coordinate i * (in / out): no half-pixel offset, so the image is
    anchored at its top-left corner and the last rows / columns repeat the border. PyTorch's
    `F.interpolate(align_corners=False)` uses half-pixel centres and gives different pixels, hence
    different FIDs. This is torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x(method="slow")`
    operation for operation (float32 coordinates, truncation, the same lerp order), so its output is
    bit-identical to torch-fidelity's on the CPU.

    Args:
        images: floating point (N, C, H, W).
        size: output (height, width).
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"expected a floating point (N, C, H, W) tensor, got {images.dtype} "
                         f"{tuple(images.shape)}")
    in_h, in_w = images.shape[2], images.shape[3]
    out_h, out_w = size

    def grid(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The scale is rounded to float32 before the multiply, as TF does and torch-fidelity copies. A
        # Python scalar, not a device tensor: `torch.tensor(..., device=cuda)` is a blocking host copy,
        # illegal inside the reward's captured graph. The product of two float32 values is exact in
        # double, so however the scalar is carried the rounded result is the float32 product.
        scale = float(np.float32(in_size / out_size))
        pos = torch.arange(0, out_size, 1, dtype=images.dtype, device=images.device) * scale
        lo = pos.long()  # truncation == floor: positions are >= 0
        hi = (lo + 1).clamp_max(in_size - 1)
        return lo, hi, pos - lo.float()

    x_lo, x_hi, dx = grid(in_w, out_w)
    y_lo, y_hi, dy = grid(in_h, out_h)
    rows_lo = images.index_select(2, y_lo)
    rows_hi = images.index_select(2, y_hi)
    in_00, in_01 = rows_lo.index_select(3, x_lo), rows_lo.index_select(3, x_hi)
    in_10, in_11 = rows_hi.index_select(3, x_lo), rows_hi.index_select(3, x_hi)
    dx = dx.view(1, 1, 1, out_w)
    in_0 = in_00 + (in_01 - in_00) * dx
    in_1 = in_10 + (in_11 - in_10) * dx
    return in_0 + (in_1 - in_0) * dy.view(1, 1, out_h, 1)


class _FrozenBatchNorm2d(nn.Module):
    """Inference-only batch norm, eps 1e-3 (TF's): the four tensors of both weight files, nothing else.

    `nn.BatchNorm2d` would add a `num_batches_tracked` counter, which one published file carries and
    the other lacks; this network is never trained, so it has no counter and the loader drops it.
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same kernel as nn.BatchNorm2d in eval mode, so results match the reference libraries.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)


class _BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              bias=False)
        self.bn = _FrozenBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3_tf(x: torch.Tensor) -> torch.Tensor:
    """TF graph: the branch average pool divides by the number of real pixels, not counting padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _InceptionA(nn.Module):
    """35x35 block (Mixed_5b..5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = _BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = _BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = _BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3_tf(x))
        return torch.cat([b1, b5, b3, bp], 1)


class _InceptionB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = _BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = _BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3d, bp], 1)


class _InceptionC(nn.Module):
    """17x17 block (Mixed_6b..6e): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = _BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = _BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = layer(b7d)
        bp = self.branch_pool(_avg_pool_3x3_tf(x))
        return torch.cat([b1, b7, b7d, bp], 1)


class _InceptionD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = _BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = _BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = _BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class _InceptionE(nn.Module):
    """8x8 block (Mixed_7b, 7c): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    TF graph: Mixed_7b pools by average (without padding), Mixed_7c by max, a quirk of the 2015 graph.
    """

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = _BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = _BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = _BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_3x3_tf(x)
        bp = self.branch_pool(pool)
        return torch.cat([b1, b3, b3d, bp], 1)


class InceptionV3FeatureNet(FeatureNet):
    """uint8 (N, 3, H, W), any H and W -> (2048-d pool features, 1008 logits without the fc bias).

    The logits leave out the bias as torch-fidelity's "logits_unbiased" do, which its Inception Score
    uses (the TF IS code reads the pre-bias matmul). A freshly constructed network has random weights;
    `load_inception_v3` gives the real one.
    """

    name = "inception-v3-compat"
    num_features = 2048
    num_classes = 1008  # TF graph: ImageNet's 1000 classes plus 8 unused ones

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv2d(80, 192, 3)
        self.Mixed_5b = _InceptionA(192, pool_features=32)
        self.Mixed_5c = _InceptionA(256, pool_features=64)
        self.Mixed_5d = _InceptionA(288, pool_features=64)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, channels_7x7=128)
        self.Mixed_6c = _InceptionC(768, channels_7x7=160)
        self.Mixed_6d = _InceptionC(768, channels_7x7=160)
        self.Mixed_6e = _InceptionC(768, channels_7x7=192)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b = _InceptionE(1280, max_pool=False)
        self.Mixed_7c = _InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()  # uint8 inputs carry no gradient; the reward is REINFORCE, not backprop
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_uint8_images(images)
        x = images.to(torch.float32)
        if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):  # at 299 the TF1 resize is the identity, exactly
            x = resize_bilinear_tf1x(x, (INPUT_SIZE, INPUT_SIZE))
        x = (x - 128) / 128  # the graph multiplies by 1/128 = 0.0078125, an exact power of two
        x = self.Conv2d_1a_3x3(x)  # 149x149
        x = self.Conv2d_2a_3x3(x)  # 147x147
        x = self.Conv2d_2b_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 73x73
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)  # 71x71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 35x35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,  # -> 17x17
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):  # -> 8x8
            x = block(x)
        features = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        logits = features.mm(self.fc.weight.T)  # no bias: see the class docstring
        return features, logits


# --- weights -------------------------------------------------------------------------------------


def hub_checkpoints_dir() -> Path:
    """Where torch-fidelity and pytorch-fid cache their weights: `$TORCH_HOME/hub/checkpoints`.

    `torch.hub.get_dir()` applies torch's own rules (TORCH_HOME, else $XDG_CACHE_HOME/torch, else
    ~/.cache/torch), so this is the folder those libraries actually wrote to.
    """
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(weights_path: str | os.PathLike[str] | None = None) -> Path:
    """The weights file to load: `weights_path` (a file, or a folder holding one of the known files),
    else the first known file in `hub_checkpoints_dir()`. Never downloads.

    Raises:
        UsageError: the given path does not exist or holds no known file, or nothing is cached; the
            message names the expected files and the folder to put one in.
    """
    names = list(WEIGHTS_FILES)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            for name in names:
                if (path / name).is_file():
                    return path / name
            raise UsageError(f"no Inception-v3 weights in {path}: expected {names[0]} or {names[1]} there")
        raise UsageError(f"Inception-v3 weights file not found: {path}")
    folder = hub_checkpoints_dir()
    for name in names:
        if (folder / name).is_file():
            return folder / name
    sources = " or ".join(f"{name} (from {url})" for name, url in WEIGHTS_FILES.items())
    raise UsageError(f"Inception-v3 weights not found: put {sources} into {folder}/ "
                     f"(that is $TORCH_HOME/hub/checkpoints, where torch-fidelity and pytorch-fid cache "
                     f"them), or pass the file's path; nothing is downloaded automatically")


def _few(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def to_module_state_dict(raw: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                         source: Path) -> dict[str, torch.Tensor]:
    """A published state dict -> this module's keys, checked strictly (names and shapes).

    Both published files use torchvision's `Inception3` names, which this module shares. They differ
    in the batch norms' `num_batches_tracked` counters: pytorch-fid's file is the state dict of a
    torchvision model and may carry them, torch-fidelity's converter writes only the four BN tensors.
    A training counter means nothing to an inference network, so counters are dropped; every other
    key must match exactly.
    """
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise UsageError(f"Inception-v3 weights file {source} does not hold a state dict (name -> tensor)")
    state = {k: v for k, v in raw.items() if not k.endswith(".num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        hint = ""
        if any(k.startswith("blocks.") for k in unexpected):
            hint = (" (this looks like the state dict of pytorch-fid's InceptionV3 wrapper, which has no "
                    "classifier; use the published pt_inception-2015-12-05-6726825d.pth instead)")
        raise UsageError(f"Inception-v3 weights file {source} does not match the network: "
                         f"missing keys [{_few(missing)}], unexpected keys [{_few(unexpected)}]{hint}")
    bad = [f"{k} {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__} "
           f"!= {tuple(expected[k].shape)}" for k, v in state.items()
           if not isinstance(v, torch.Tensor) or v.shape != expected[k].shape]
    if bad:
        raise UsageError(f"Inception-v3 weights file {source} has tensors of the wrong shape: {_few(bad)}")
    return state


def load_inception_v3(weights_path: str | os.PathLike[str] | None = None,
                      device: str | torch.device = "cpu") -> InceptionV3FeatureNet:
    """The FID Inception-v3 with published weights, in eval mode, on `device`.

    Args:
        weights_path: torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` or pytorch-fid's
            `pt_inception-2015-12-05-6726825d.pth`, or a folder holding one; None looks in
            `$TORCH_HOME/hub/checkpoints/` (see `find_inception_weights`).
        device: where the network runs.

    Raises:
        UsageError: no weights file, or one that cannot be read or does not match the network (strict:
            missing or unexpected keys, wrong shapes); the message names the file.
    """
    path = find_inception_weights(weights_path)
    # weights_only: a checkpoint is a pickle, and only tensors and plain containers may come out.
    raw = load_weights_only(path, "Inception-v3 weights file")
    with torch.device("meta"):  # no random init of 24M parameters only to overwrite them
        net = InceptionV3FeatureNet()
    state = to_module_state_dict(raw, net.state_dict(), path)
    # assign=True adopts the loaded tensors as they are (a meta module has no storage to copy into).
    state = {k: v.to(device=device, dtype=torch.float32).contiguous() for k, v in state.items()}
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval()
