"""AutoGAN's derived generator as its authors wrote it, and its files as they saved them, for the tests.

Written from AutoGAN's `models/building_blocks.py` (`Cell`) and `models/autogan_cifar10_a.py`
(`Generator`), independently of `autogan_fast`: the same module and parameter names, the same
forward, in-place skip-in add included (so run it under `torch.no_grad()`, as their evaluation does).
"""

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NORMS = {0: None, 1: "bn", 2: "in"}
UP_MODES = {0: "bilinear", 1: "nearest"}


class AuthorsCell(nn.Module):
    """AutoGAN's derived cell: pre-activation, the upsampling by interpolation."""

    def __init__(self, ch: int, up_mode: str, num_skip_in: int, short_cut: bool, norm: str | None):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.up_mode = up_mode
        self.norm = norm
        if norm == "bn":
            self.n1, self.n2 = nn.BatchNorm2d(ch), nn.BatchNorm2d(ch)
        elif norm == "in":
            self.n1, self.n2 = nn.InstanceNorm2d(ch), nn.InstanceNorm2d(ch)
        self.c_sc = nn.Conv2d(ch, ch, kernel_size=1) if short_cut else None
        self.skip_in_ops = nn.ModuleList(nn.Conv2d(ch, ch, 1) for _ in range(num_skip_in)) if num_skip_in else None

    def forward(self, x, skip_ft=()):
        residual = self.n1(x) if self.norm else x
        h = F.interpolate(F.relu(residual), scale_factor=2, mode=self.up_mode)
        _, _, ht, wt = h.size()
        h = self.c1(h)
        h_skip_out = h
        if self.skip_in_ops:
            assert len(self.skip_in_ops) == len(skip_ft)
            for ft, skip_in_op in zip(skip_ft, self.skip_in_ops, strict=True):
                h += skip_in_op(F.interpolate(ft, size=(ht, wt), mode=self.up_mode))  # also changes h_skip_out
        if self.norm:
            h = self.n2(h)
        final_out = self.c2(F.relu(h))
        if self.c_sc:
            final_out += self.c_sc(F.interpolate(x, scale_factor=2, mode=self.up_mode))
        return h_skip_out, final_out


class AuthorsGenerator(nn.Module):
    """AutoGAN's derived generator of a 14-integer architecture (pre-activation cells only)."""

    def __init__(self, arch, latent_dim: int, gf_dim: int, bottom_width: int):
        super().__init__()
        self.ch, self.bottom_width = gf_dim, bottom_width
        self.l1 = nn.Linear(latent_dim, bottom_width ** 2 * gf_dim)
        self.skips_of = []  # per cell: 0-based indices of the earlier cells it takes skip outputs from
        for c, start in enumerate((0, 4, 9)):
            conv, norm, up, short_cut = arch[start:start + 4]
            assert conv == 1, "AutoGAN's derived cells are pre-activation"
            mask = arch[start + 4] if c else 0
            # mask bit b selects the earlier cell b + 1 steps back; AutoGAN passes them oldest first
            self.skips_of.append(sorted(c - 1 - b for b in range(c) if mask >> b & 1))
            self.add_module(f"cell{c + 1}", AuthorsCell(gf_dim, UP_MODES[up], len(self.skips_of[c]),
                                                        bool(short_cut), NORMS[norm]))
        self.to_rgb = nn.Sequential(nn.BatchNorm2d(gf_dim), nn.ReLU(), nn.Conv2d(gf_dim, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        h = self.l1(z).view(-1, self.ch, self.bottom_width, self.bottom_width)
        skip_outs = []
        for c, cell in enumerate((self.cell1, self.cell2, self.cell3)):
            skip_out, h = cell(h, tuple(skip_outs[i] for i in self.skips_of[c]))
            skip_outs.append(skip_out)
        return self.to_rgb(h)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics (so eval mode uses all of them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(1000 + seed)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=gen)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.15)
    return model


def full_checkpoint(gen: AuthorsGenerator, gen_model: str = "autogan_cifar10_a") -> dict:
    """What AutoGAN's `train_derived.py` saves: `gen` is the averaged (EMA) generator."""
    other = {k: v + 1.0 if v.is_floating_point() else v for k, v in gen.state_dict().items()}  # the raw G
    optimizer = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.0, 0.9))
    for p in gen.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return {
        "epoch": 320, "gen_model": gen_model, "dis_model": gen_model,
        "gen_state_dict": other, "dis_state_dict": {"l5.weight_orig": torch.randn(1, 8)},
        "avg_gen_state_dict": gen.state_dict(), "gen_optimizer": optimizer.state_dict(),
        "dis_optimizer": optimizer.state_dict(), "best_fid": np.float64(12.42),
        "path_helper": {"prefix": "logs/autogan_cifar10_a_2019_08_01", "ckpt_path": "logs/Model"},
    }


def save_as_torch1(obj: object, path: Path) -> bytes:
    """Save as torch 1.x with numpy 1 wrote it: legacy (non-zip) format, pickle protocol 2, numpy 1's names.

    Protocol 2 spells a global as `c<module>\\n<name>\\n` (no length prefix, no offsets into the
    pickle), so numpy 2's module name can be rewritten in place. Returns the file's bytes.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue().replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
    Path(path).write_bytes(data)
    return data
