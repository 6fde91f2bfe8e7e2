"""AutoGAN's generator search space: integer codes, architecture vectors, validation, names.

An architecture vector follows AutoGAN's format: 4 integers for cell 1 (conv, norm, up, shortcut),
then 5 for cells 2 and 3 (the same plus a skip-in bit mask). Stage s (0, 1, 2) searches cells
1..s+1, so vectors have length 4, 9 or 14.

The registry: every candidate op is named once below, with its label, in the decision's table. An
architecture vector holds indices into those tables; the code refers to the ops by these names (the
generator's modules, the derived model's pruning, the study's plots) and counts them from the tables
(`decision_sizes`, `search_space_size`, the controller's outputs). A new candidate op is one entry
here plus the module that runs it (for an upsampling op: its entry in models/generator.py's
`UPSAMPLERS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UsageError

CONV_POST = "post"  # post-activation block: up -> conv -> norm -> ReLU
CONV_PRE = "pre"  # pre-activation block: norm -> ReLU -> up -> conv
NORM_NONE = "none"
NORM_BN = "bn"  # BatchNorm
NORM_IN = "in"  # InstanceNorm without affine (AutoGAN's)
UP_BILINEAR = "bilinear"
UP_NEAREST = "nearest"
UP_DECONV = "deconv"  # 2x2 transposed conv, stride 2
SHORTCUT_NONE = "none"
SHORTCUT_YES = "yes"

# Each decision's candidates, op name -> label (plots, reports), in code order: code i is the i-th entry.
CONV_OPS = {CONV_POST: "post-activation conv", CONV_PRE: "pre-activation conv"}
NORM_OPS = {NORM_NONE: "no normalization", NORM_BN: "batch norm", NORM_IN: "instance norm"}
UP_OPS = {UP_BILINEAR: "bilinear upsampling", UP_NEAREST: "nearest upsampling", UP_DECONV: "deconv upsampling"}
SHORTCUT_OPS = {SHORTCUT_NONE: "no shortcut", SHORTCUT_YES: "shortcut"}
# The decisions every cell makes, in vector order (cells 2 and 3 add their skip-in mask after them).
CELL_DECISIONS: tuple[tuple[str, dict[str, str]], ...] = (
    ("conv", CONV_OPS), ("norm", NORM_OPS), ("up", UP_OPS), ("shortcut", SHORTCUT_OPS))
SKIP_DECISION = "skip-ins"

CONV_TYPES = tuple(CONV_OPS)
NORM_TYPES = tuple(NORM_OPS)
UP_TYPES = tuple(UP_OPS)
SHORTCUT_TYPES = tuple(SHORTCUT_OPS)

NUM_CELLS = 3
NUM_STAGES = NUM_CELLS
ARCH_LENGTHS = (4, 9, 14)  # vector length at stage 0, 1, 2


def decision_sizes(cell: int) -> tuple[int, ...]:
    """Number of choices of each decision of a cell (0-based); cell c has c earlier cells to skip from."""
    sizes = tuple(len(ops) for _, ops in CELL_DECISIONS)
    return sizes + ((2**cell,) if cell > 0 else ())


def cell_slice(cell: int) -> slice:
    """Where cell `cell` (0-based) sits in an architecture vector."""
    start = 0 if cell == 0 else ARCH_LENGTHS[cell - 1]
    return slice(start, ARCH_LENGTHS[cell])


def search_space_size(stage: int = NUM_STAGES - 1) -> int:
    """Number of distinct generators with `stage + 1` cells (36 x 72 x 144 = 373,248 for all three)."""
    total = 1
    for cell in range(stage + 1):
        for size in decision_sizes(cell):
            total *= size
    return total


@dataclass(frozen=True)
class CellChoice:
    """The decoded decisions of one cell."""

    conv: str  # one of CONV_TYPES
    norm: str  # one of NORM_TYPES
    up: str  # one of UP_TYPES
    shortcut: bool
    skip_from: tuple[int, ...]  # 1-based numbers of the earlier cells feeding a skip-in, ascending

    def __str__(self) -> str:
        parts = [self.conv, self.norm, self.up, "shortcut" if self.shortcut else "no-shortcut"]
        if self.skip_from:
            parts.append("skip<" + ",".join(f"c{c}" for c in self.skip_from))
        return " ".join(parts)


def validate_arch(arch: list[int] | tuple[int, ...], stage: int | None = None) -> tuple[int, ...]:
    """Check an architecture vector; raises UsageError naming the bad position. Returns it as a tuple."""
    try:
        values = tuple(int(v) for v in arch)
    except (TypeError, ValueError, OverflowError) as err:  # OverflowError: an infinite float (1e400 in JSON)
        raise UsageError(f"architecture must be a sequence of integers, got {arch!r}") from err
    if any(v != a for v, a in zip(values, arch, strict=True)):
        raise UsageError(f"architecture must hold integers, got {list(arch)}")
    if len(values) not in ARCH_LENGTHS:
        raise UsageError(f"architecture must have length 4, 9 or 14 (stage 0, 1, 2), got {len(values)}: "
                         f"{list(values)}")
    if stage is not None and len(values) != ARCH_LENGTHS[stage]:
        raise UsageError(f"stage {stage} needs an architecture of length {ARCH_LENGTHS[stage]}, "
                         f"got {len(values)}")
    names = (*(name for name, _ in CELL_DECISIONS), SKIP_DECISION)
    for cell in range(ARCH_LENGTHS.index(len(values)) + 1):
        codes = values[cell_slice(cell)]
        for decision, (code, size) in enumerate(zip(codes, decision_sizes(cell), strict=True)):
            if not 0 <= code < size:
                raise UsageError(f"architecture position {cell_slice(cell).start + decision}: cell "
                                 f"{cell + 1} {names[decision]} must be in 0..{size - 1}, got {code}")
    return values


def arch_stage(arch: tuple[int, ...] | list[int]) -> int:
    """The stage an architecture vector belongs to (0, 1 or 2)."""
    return ARCH_LENGTHS.index(len(validate_arch(arch)))


def arch_key(arch: Sequence[int]) -> tuple[int, ...]:
    """The one hashable form of an architecture vector, its integers as a tuple (the length tells the
    stage): every cache keyed by architecture uses it, the graph engine's training steps
    (engines/graph.py) and the reward's generator steps (nas/reward.py)."""
    return tuple(int(v) for v in arch)


def decode_cell(arch: tuple[int, ...] | list[int], cell: int) -> CellChoice:
    """Decode cell `cell` (0-based). Skip mask bit 0 is the most recent earlier cell (AutoGAN's order)."""
    codes = arch[cell_slice(cell)]
    mask = codes[4] if cell > 0 else 0
    # Bit b of the mask selects earlier cell number (cell - b), 1-based (cell itself is 0-based).
    skip_from = tuple(sorted(cell - bit for bit in range(cell) if mask >> bit & 1))
    return CellChoice(CONV_TYPES[codes[0]], NORM_TYPES[codes[1]], UP_TYPES[codes[2]],
                      SHORTCUT_TYPES[codes[3]] == SHORTCUT_YES, skip_from)


def decode_arch(arch: tuple[int, ...] | list[int]) -> list[CellChoice]:
    """Validate and decode every cell present in the vector."""
    values = validate_arch(arch)
    return [decode_cell(values, cell) for cell in range(arch_stage(values) + 1)]


def arch_to_str(arch: tuple[int, ...] | list[int]) -> str:
    """Readable one-line form: `[1 0 1 1 | ...] c1: pre none nearest shortcut; c2: ...`."""
    cells = decode_arch(arch)
    codes = " | ".join(" ".join(str(v) for v in arch[cell_slice(c)]) for c in range(len(cells)))
    return f"[{codes}] " + "; ".join(f"c{i + 1}: {cell}" for i, cell in enumerate(cells))


def parse_arch(text: str) -> tuple[int, ...]:
    """Parse `1 0 1 1 ...` or `1,0,1,1,...` (as AutoGAN prints them) into a validated vector."""
    tokens = text.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError as err:
        raise UsageError(f"architecture must be integers separated by spaces or commas, got {text!r}") from err
    return validate_arch(values)
