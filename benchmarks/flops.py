"""Analytic FLOP counts: run the model once and add up its convolutions, linears and matmuls.

`FlopCounter` is a `TorchFunctionMode`: it sees every `F.conv2d`, `F.conv_transpose2d`, `F.linear` and
matmul-family call (those of `nn.Conv2d` / `nn.ConvTranspose2d` / `nn.Linear` modules included) and adds
2 x multiply-adds from the shapes: no hand tables, and nothing the model does is missed. Count under
`use_backend("torch")`: the fused upsample+conv then runs its reference (nearest x2 + the 3x3 conv at
the large size), so it is counted as the conv it replaces; the Triton ops are invisible to the mode.
Elementwise work, norms and pooling are not counted (the usual convention).

A call whose output requires grad counts 3x (forward, input gradient, weight gradient: the usual
estimate); count forward passes under `torch.no_grad()` and apply the multipliers yourself where a step
mixes both (the GAN steps below). Inception-v3 at 299 px counts 5.7 G multiply-adds per image (11.4
GFLOP), the published figure; tests/test_benchmarks.py checks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.overrides import TorchFunctionMode

from autogan_fast.kernels import use_backend

_MATMULS = {"mm", "matmul", "__matmul__", "__rmatmul__", "addmm", "mv", "addmv", "dot", "bmm", "baddbmm"}


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


def call_flops(name: str, args: Sequence, kwargs: dict, out) -> int:
    """2 x multiply-adds of one call, from its arguments' and output's shapes (0 for other functions)."""
    if not isinstance(out, torch.Tensor):
        return 0
    if name == "conv2d":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        _, cin_per_group, kh, kw = weight.shape
        return 2 * out.numel() * cin_per_group * kh * kw
    if name == "conv_transpose2d":
        x = args[0]
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        _, cout_per_group, kh, kw = weight.shape
        return 2 * x.numel() * cout_per_group * kh * kw
    if name == "linear":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return 2 * out.numel() * weight.shape[1]
    if name in _MATMULS:
        first = args[1] if name in ("addmm", "addmv", "baddbmm") else args[0]
        if name == "__rmatmul__":
            first = args[1]
        k = _shape(first)[-1] if _shape(first) else 1
        return 2 * max(out.numel(), 1) * k
    return 0


class FlopCounter(TorchFunctionMode):
    """`with FlopCounter() as c: ...` then `c.flop`: FLOPs of the convs, linears and matmuls run inside."""

    def __init__(self):
        super().__init__()
        self.flop = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flop = call_flops(getattr(func, "__name__", ""), args, kwargs, out)
        if flop:
            grad = isinstance(out, torch.Tensor) and out.requires_grad and torch.is_grad_enabled()
            self.flop += flop * (3 if grad else 1)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (run under the torch backend, see the module docstring)."""
    with use_backend("torch"), FlopCounter() as counter:
        fn()
    return counter.flop


def feature_net_flops_per_image(net: torch.nn.Module, image_size: int, device: torch.device) -> int:
    """Forward FLOPs of a feature network for one uint8 image of `image_size` pixels."""
    images = torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8, device=device)
    with torch.no_grad():
        return count_flops(lambda: net(images))


class GanFlops:
    """FLOPs of the GAN steps of one generator / discriminator pair, per architecture (cached).

    D step: G forward on `dis_bs` noise (no grad) + D forward and backward on 2 x dis_bs images.
    G step: G and D forward and backward on `gen_bs` images. Forward passes are counted in eval mode
    without grad (nothing changes: running statistics and spectral-norm vectors stay as they are); a
    generator forward is counted at batch 2 and scaled (every counted op is linear in the batch).
    """

    def __init__(self, gen: torch.nn.Module, dis: torch.nn.Module, stage: int, latent_dim: int, dis_bs: int,
                 gen_bs: int, n_critic: int, device: torch.device):
        self.gen, self.dis, self.stage = gen, dis, stage
        self.latent_dim, self.dis_bs, self.gen_bs, self.n_critic = latent_dim, dis_bs, gen_bs, n_critic
        self.device = device
        self._g: dict[tuple[int, ...], int] = {}
        self._d: dict[int, int] = {}

    def g_forward(self, arch: Sequence[int], batch: int) -> int:
        key = tuple(arch)
        if key not in self._g:
            z = torch.zeros(2, self.latent_dim, device=self.device)
            was = self.gen.training
            self.gen.eval()
            try:
                with torch.no_grad():
                    self._g[key] = count_flops(lambda: self.gen(z, list(arch))) // 2
            finally:
                self.gen.train(was)
        return self._g[key] * batch

    def image_size(self) -> int:
        return self.gen.output_resolution(self.stage)

    def d_forward(self, batch: int) -> int:
        if batch not in self._d:
            size = self.image_size()
            x = torch.zeros(batch, 3, size, size, device=self.device)
            was, stage = self.dis.training, self.dis.stage
            self.dis.stage = self.stage
            self.dis.eval()
            try:
                with torch.no_grad():
                    self._d[batch] = count_flops(lambda: self.dis(x))
            finally:
                self.dis.train(was)
                self.dis.stage = stage
        return self._d[batch]

    def d_step(self, arch: Sequence[int]) -> int:
        return self.g_forward(arch, self.dis_bs) + 3 * self.d_forward(2 * self.dis_bs)

    def g_step(self, arch: Sequence[int]) -> int:
        return 3 * (self.g_forward(arch, self.gen_bs) + self.d_forward(self.gen_bs))

    def steps(self, archs: Sequence[Sequence[int]]) -> int:
        """A run of D steps, one per architecture, with the G step on D steps 0, n_critic, ..."""
        return sum(self.d_step(a) for a in archs) + sum(self.g_step(archs[i]) for i in range(0, len(archs),
                                                                                              self.n_critic))


def reward_flops(gan_flops: GanFlops, arch: Sequence[int], num_images: int, batch_size: int,
                 feature_flops_per_image: int) -> int:
    """One reward: full batches generated (no grad), every image through the feature network."""
    generated = math.ceil(num_images / batch_size) * batch_size
    return gan_flops.g_forward(arch, generated) + num_images * feature_flops_per_image
