"""The fused-op cases (AutoGAN's shapes): grouped spectral norm, upsample+conv, bilinear upsample,
Inception statistics.

Each case builds fresh state per variant:
    triton   the fused op through its public API under `use_backend("triton")`; CUDA only
    eager    the literal PyTorch ops, `use_backend("torch")`: `torch.nn.utils.spectral_norm` hooks of the
             discriminator's 11 layers; `F.interpolate(nearest)` + cuDNN `F.conv2d`;
             `F.interpolate(bilinear)`; the float64 formulas of `inception_stats_update_ref` through
             `InceptionStats.update`
    compile  `torch.compile(mode="default", dynamic=False)` of the eager reference
Forward timings run with autograd recording (inputs require grad), as in a training step;
forward+backward is `torch.autograd.grad` of the outputs with fixed random output gradients.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm as TorchSpectralNorm

from autogan_fast.kernels import (
    InceptionStats,
    SpectralNormGroup,
    bilinear_upsample,
    bilinear_upsample_ref,
    inception_stats_update_ref,
    spectral_norm,
    spectral_norm_weight_ref,
    upsample_conv2d,
    upsample_conv2d_ref,
)
from autogan_fast.kernels.inception_stats import InceptionTotals
from autogan_fast.models.discriminator import STAGE_BLOCKS, Discriminator

# The speed targets: min speedup of the triton row over the eager row.
SN_TARGET = 5.0  # grouped SN of the whole discriminator vs torch.nn.utils.spectral_norm, fwd+bwd
UPCONV_TARGET = 1.5  # upsample + conv fwd+bwd vs interpolate + cuDNN conv, 16->32 px, 128 ch, batch 64 / 128
STATS_TARGET = 3.0  # Inception stats update vs eager torch float64, batch 100 / 250 / 500
BILINEAR_TARGET = 3.0  # bilinear upsample fwd+bwd vs PyTorch's NCHW kernel (issue 23), every shape


@dataclass
class Bench:
    """The callables one variant is timed with."""

    fwd: Callable[[], Any]
    fwd_bwd: Callable[[], Any] | None  # None: the op has no backward


@dataclass
class Case:
    op: str
    label: str  # short human form of the shape, for the table
    shape: dict[str, Any]  # the shape as recorded in the results
    build: Callable[[str], Bench]
    flatten: Callable[[Any], torch.Tensor]  # a first output -> 1-D float64, for the cross-check
    target: float | None = None  # min speedup of triton over eager on `metric`; None: extra row
    metric: str = "fwd_bwd"  # the pass the target is on
    compile: bool = False  # whether the compile row runs (compile warm-ups cost most of the budget)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _compile(fn: Callable, backend: str) -> Callable:
    """The compile rows: default mode (no max-autotune), one static-shape graph per case."""
    return torch.compile(fn, mode="default" if backend == "inductor" else None, dynamic=False, backend=backend)


def _sn_ref_all(weights, us, vs):
    """torch.nn.utils.spectral_norm's compute_weight for every layer (the graph torch.compile gets)."""
    return [spectral_norm_weight_ref(w, u, v, 1, 1e-12, True) for w, u, v in zip(weights, us, vs, strict=True)]


def _torch_sn_hook(module: nn.Module):
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, TorchSpectralNorm):
            return hook
    raise RuntimeError(f"{type(module).__name__} has no torch spectral_norm hook")


def sn_case(df: int, device: torch.device, *, target: float | None, compile_row: bool,
            compile_backend: str = "inductor") -> Case:
    """Every SN layer of AutoGAN's discriminator at its last stage (11 layers), normalized once."""
    torch.manual_seed(0)
    disc = Discriminator(df).to(device)
    layers = [m for block in disc.stage_modules(len(STAGE_BLOCKS) - 1) for m in block.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    shapes = [list(m.weight.shape) for m in layers]

    def build(variant: str) -> Bench:
        mods = copy.deepcopy(layers)
        torch.manual_seed(1)  # both spectral_norm functions draw u, v with the same RNG calls
        if variant == "triton":
            for m in mods:
                spectral_norm(m)
            group = SpectralNormGroup(mods)
            fwd = lambda: group.update(training=True)
        else:
            for m in mods:
                torch.nn.utils.spectral_norm(m)
            hooks = [_torch_sn_hook(m) for m in mods]
            if variant == "eager":
                def fwd():
                    for m, hook in zip(mods, hooks, strict=True):
                        hook(m, None)  # what the pre-hook does before each module forward
                    return [m.weight for m in mods]
            else:
                compiled = _compile(_sn_ref_all, compile_backend)
                ws, us, vs = ([getattr(m, name) for m in mods] for name in ("weight_orig", "weight_u", "weight_v"))
                fwd = lambda: compiled(ws, us, vs)
        params = [m.weight_orig for m in mods]
        gen = _generator(device, 2)
        grads = [torch.randn(p.shape, device=device, generator=gen) for p in params]
        return Bench(fwd, lambda: torch.autograd.grad(fwd(), params, grads))

    return Case("sn", f"D df={df}, {len(layers)} layers", {"df": df, "layers": shapes}, build,
                lambda out: torch.cat([w.detach().reshape(-1) for w in out]).double(),
                target=target, compile=compile_row)


def upconv_case(n: int, c: int, h: int, device: torch.device, *, target: float | None, compile_row: bool,
                compile_backend: str = "inductor") -> Case:
    """y = conv3x3(nearest_x2(x)) + bias, C -> C channels, h -> 2h pixels."""

    def build(variant: str) -> Bench:
        gen = _generator(device, 0)
        x = torch.randn(n, c, h, h, device=device, generator=gen).requires_grad_()
        w = (torch.randn(c, c, 3, 3, device=device, generator=gen) / (3 * math.sqrt(c))).requires_grad_()
        b = torch.randn(c, device=device, generator=gen).requires_grad_()
        gy = torch.randn(n, c, 2 * h, 2 * h, device=device, generator=gen)
        if variant == "triton":
            fwd = lambda: upsample_conv2d(x, w, b)
        elif variant == "eager":
            fwd = lambda: upsample_conv2d_ref(x, w, b)
        else:
            compiled = _compile(upsample_conv2d_ref, compile_backend)
            fwd = lambda: compiled(x, w, b)
        return Bench(fwd, lambda: torch.autograd.grad(fwd(), (x, w, b), gy))

    return Case("upconv", f"N={n} C={c} {h}->{2 * h}px", {"batch": n, "channels": c, "in_px": h, "out_px": 2 * h},
                build, lambda y: y.detach().reshape(-1).double(), target=target, compile=compile_row)


def bilinear_case(n: int, c: int, h: int, factor: int, device: torch.device, *, target: float | None,
                  compile_row: bool, compile_backend: str = "inductor") -> Case:
    """y = bilinear upsample of x by an integer factor (align_corners=False), h -> factor x h pixels."""

    def build(variant: str) -> Bench:
        gen = _generator(device, 0)
        x = torch.randn(n, c, h, h, device=device, generator=gen).requires_grad_()
        gy = torch.randn(n, c, factor * h, factor * h, device=device, generator=gen)
        if variant == "triton":
            fwd = lambda: bilinear_upsample(x, factor)
        elif variant == "eager":
            fwd = lambda: bilinear_upsample_ref(x, factor)
        else:
            compiled = _compile(bilinear_upsample_ref, compile_backend)
            fwd = lambda: compiled(x, factor)
        return Bench(fwd, lambda: torch.autograd.grad(fwd(), (x,), gy))

    return Case("bilinear", f"N={n} C={c} {h}->{factor * h}px x{factor}",
                {"batch": n, "channels": c, "in_px": h, "out_px": factor * h, "factor": factor},
                build, lambda y: y.detach().reshape(-1).double(), target=target, compile=compile_row)


def stats_case(b: int, f: int, c: int, device: torch.device, *, target: float | None, compile_row: bool,
               num_images: int = 5000, splits: int = 10, compile_backend: str = "inductor") -> Case:
    """One `InceptionStats.update` of B images; the batch straddles an IS split border, as it can in use."""
    offset = num_images // splits - b // 2  # image index of row 0

    def build(variant: str) -> Bench:
        gen = _generator(device, 0)
        features = torch.relu(torch.randn(b, f, device=device, generator=gen) + 0.5)  # pool features are >= 0
        logits = torch.randn(b, c, device=device, generator=gen) * 4
        if variant == "compile":
            kw = {"dtype": torch.float64, "device": device}
            totals = InceptionTotals(torch.zeros(f, **kw), torch.zeros(f, **kw), torch.zeros(f, f, **kw),
                                     torch.zeros(splits, c, **kw), torch.zeros(splits, **kw))
            compiled = _compile(inception_stats_update_ref, compile_backend)
            fwd = lambda: compiled(features, logits, totals, offset, num_images)
        else:
            stats = InceptionStats(num_images, f, c, splits, device=device)

            def fwd():
                stats.num_seen = offset  # reuse the accumulator: the same images again, at the same place
                stats.update(features, logits)
                return stats.totals
        return Bench(fwd, None)

    def flatten(t: InceptionTotals) -> torch.Tensor:
        # the kernel keeps X^T X on and above the diagonal only
        return torch.cat([t.feat_sum, torch.triu(t.xtx).reshape(-1), t.p_sum.reshape(-1), t.plogp_sum]).double()

    return Case("stats", f"B={b} F={f} C={c}", {"batch": b, "features": f, "classes": c, "splits": splits,
                                                  "num_images": num_images, "row_offset": offset},
                build, flatten, target=target, metric="fwd", compile=compile_row)



# (id, op, keyword arguments) per size: the issue-4 shapes (targets on the first rows of each op), or tiny
# ones for the CPU smoke test. Compile rows on 7 shapes only: their warm-ups cost most of the time.
CASES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "full": [
        ("sn-df64", "sn", dict(df=64, target=SN_TARGET, compile_row=True)),
        ("sn-df128", "sn", dict(df=128, target=SN_TARGET, compile_row=True)),
        ("upconv-b64", "upconv", dict(n=64, c=128, h=16, target=UPCONV_TARGET, compile_row=True)),
        ("upconv-b128", "upconv", dict(n=128, c=128, h=16, target=UPCONV_TARGET, compile_row=True)),
        ("upconv-8to16", "upconv", dict(n=64, c=128, h=8, target=None, compile_row=False)),  # extra: 8 -> 16 cell
        ("upconv-c256", "upconv", dict(n=64, c=256, h=16, target=None, compile_row=False)),  # extra: wider
        # the generator's x2 upsample (cells 8 -> 16, 16 -> 32) and the skip resize 8 -> 32 (cell 1 into cell 3)
        ("bilinear-b64-8to16", "bilinear", dict(n=64, c=128, h=8, factor=2, target=BILINEAR_TARGET, compile_row=False)),
        ("bilinear-b128-8to16", "bilinear", dict(n=128, c=128, h=8, factor=2, target=BILINEAR_TARGET,
                                                 compile_row=False)),
        ("bilinear-b64-16to32", "bilinear", dict(n=64, c=128, h=16, factor=2, target=BILINEAR_TARGET,
                                                 compile_row=False)),
        ("bilinear-b128-16to32", "bilinear", dict(n=128, c=128, h=16, factor=2, target=BILINEAR_TARGET,
                                                  compile_row=True)),
        ("bilinear-b64-skip8to32", "bilinear", dict(n=64, c=128, h=8, factor=4, target=BILINEAR_TARGET,
                                                    compile_row=True)),
        ("bilinear-b128-skip8to32", "bilinear", dict(n=128, c=128, h=8, factor=4, target=BILINEAR_TARGET,
                                                     compile_row=False)),
        ("stats-b100", "stats", dict(b=100, f=2048, c=1008, target=STATS_TARGET, compile_row=False)),
        ("stats-b250", "stats", dict(b=250, f=2048, c=1008, target=STATS_TARGET, compile_row=False)),
        ("stats-b500", "stats", dict(b=500, f=2048, c=1008, target=STATS_TARGET, compile_row=True)),
    ],
    "tiny": [
        ("sn-df8", "sn", dict(df=8, target=SN_TARGET, compile_row=True)),
        ("upconv-tiny", "upconv", dict(n=2, c=16, h=4, target=UPCONV_TARGET, compile_row=True)),
        ("bilinear-tiny", "bilinear", dict(n=2, c=4, h=4, factor=2, target=BILINEAR_TARGET, compile_row=True)),
        ("stats-tiny", "stats", dict(b=8, f=32, c=10, num_images=100, target=STATS_TARGET, compile_row=True)),
    ],
}


def make_case(op: str, kwargs: dict[str, Any], device: torch.device, compile_backend: str = "inductor") -> Case:
    factory = {"sn": sn_case, "upconv": upconv_case, "bilinear": bilinear_case, "stats": stats_case}[op]
    return factory(device=device, compile_backend=compile_backend, **kwargs)
