"""The generator of one discovered architecture, for training from scratch (AutoGAN's derived training).

It is the search's `SharedGenerator` (same cells, blocks and fused upsample-conv path) with the
14-integer architecture fixed at construction and every branch that architecture never runs removed:
the other conv-block type of each cell, unused norms and deconvs, the shortcut and skip-in layers it
does not use. What remains is exactly the network AutoGAN
builds for a derived architecture, with `SharedGenerator`'s parameter names, so a state dict of
the derived generator loads into a shared one (strict=False) and runs the same forward. Its forward
is `gen(z)`; `gen(z, arch)` with its own architecture works too (code written for the search's
generator: sample grids, the reward), any other architecture is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..search_space import (
    ARCH_LENGTHS,
    CONV_PRE,
    NORM_BN,
    NUM_CELLS,
    UP_DECONV,
    CellChoice,
    decode_arch,
    validate_arch,
)
from . import SharedGenerator
from .generator import Cell

FULL_ARCH_LENGTH = ARCH_LENGTHS[-1]  # all three cells (stage 2)


def prune_cell(cell: Cell, choice: CellChoice) -> None:
    """Drop the layers of `cell` that `choice` never runs (set to None: no parameters, no state)."""
    if choice.conv == CONV_PRE:
        cell.post1 = cell.post2 = None
        used = (cell.pre1, cell.pre2)
    else:
        cell.pre1 = cell.pre2 = None
        used = (cell.post1, cell.post2)
    for block in used:
        if choice.norm != NORM_BN:
            block.norms.bn = None  # the other norms (none, IN without affine) hold no parameters
        if choice.up != UP_DECONV:
            block.deconv = None
    if not choice.shortcut:
        cell.shortcut_conv = None
    if not (choice.shortcut and choice.up == UP_DECONV):
        cell.shortcut_deconv = None
    for earlier in range(1, len(cell.skip_convs) + 1):  # 1-based earlier cell numbers
        if earlier not in choice.skip_from:
            cell.skip_convs[earlier - 1] = None
        if earlier not in choice.skip_from or choice.up != UP_DECONV:
            cell.skip_deconvs[earlier - 1] = None


class DerivedGenerator(SharedGenerator):
    """Generator of one fixed 3-cell architecture; outputs `bottom_width * 8` pixels.

    Args:
        arch: 14 integers (AutoGAN's format, e.g. `1 0 1 1 1 0 0 1 1 1 0 1 0 3`).
        latent_dim, gf_dim, bottom_width: as `SharedGenerator`.

    Raises:
        UsageError: `arch` is not a valid 14-integer architecture.
    """

    def __init__(self, arch: Sequence[int], latent_dim: int = 128, gf_dim: int = 256, bottom_width: int = 4):
        arch = validate_arch(arch, stage=NUM_CELLS - 1)
        super().__init__(latent_dim, gf_dim, bottom_width)
        self.arch = arch  # fixed: what this generator is, as its sizes are
        self.choices = tuple(decode_arch(arch))
        for cell, choice in zip(self.cells, self.choices, strict=True):
            prune_cell(cell, choice)

    def forward(self, z: torch.Tensor, arch: Sequence[int] | None = None) -> torch.Tensor:
        """Images of the fixed architecture from latents `z`. `arch`, when given (by code written for the
        search's generator), must be that architecture: ValueError otherwise."""
        if arch is not None and tuple(arch) != self.arch:
            raise ValueError(f"a derived generator's architecture is fixed to {list(self.arch)}, "
                             f"got {list(arch)}")
        return self.run_cells(z, self.choices)

    @property
    def output_size(self) -> int:
        """Side of the generated images in pixels."""
        return self.output_resolution(NUM_CELLS - 1)


__all__ = ["FULL_ARCH_LENGTH", "DerivedGenerator", "prune_cell"]
