import math
from pathlib import Path

import numpy as np
import pytest

from autogan_fast.errors import UsageError
from autogan_fast.search_space import (
    ARCH_LENGTHS,
    CELL_DECISIONS,
    CONV_TYPES,
    NORM_TYPES,
    SHORTCUT_TYPES,
    UP_TYPES,
    CellChoice,
    arch_key,
    arch_stage,
    arch_to_str,
    decision_sizes,
    decode_arch,
    parse_arch,
    search_space_size,
    validate_arch,
)

PAPER_CIFAR10_ARCH = [1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3]


def test_paper_arch_decodes_as_the_paper_describes():
    cells = decode_arch(PAPER_CIFAR10_ARCH)
    assert cells == [
        CellChoice("pre", "none", "nearest", True, ()),
        CellChoice("pre", "none", "bilinear", True, (1,)),
        CellChoice("pre", "none", "nearest", False, (1, 2)),
    ]


@pytest.mark.parametrize("mask, skip_from", [
    (0, ()),       # no skip-in
    (1, (2,)),     # bit 0 = the most recent earlier cell (cell 2 for cell 3)
    (2, (1,)),     # bit 1 = the cell before it
    (3, (1, 2)),   # both
])
def test_skip_mask_bit_order_for_cell_3(mask, skip_from):
    arch = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, mask]
    assert decode_arch(arch)[2].skip_from == skip_from


def test_search_space_size_matches_the_paper():
    assert [search_space_size(s) for s in range(3)] == [36, 36 * 72, 373_248]


@pytest.mark.parametrize("arch, message", [
    ([0, 0, 0], "length 4, 9 or 14"),                         # too short
    ([0] * 10, "length 4, 9 or 14"),                          # between stages
    ([2, 0, 0, 0], "position 0: cell 1 conv must be in 0..1"),  # conv out of range
    ([0, 3, 0, 0], "position 1: cell 1 norm"),                # norm out of range
    ([0, 0, 3, 0], "position 2: cell 1 up"),                  # upsampling out of range
    ([0, 0, 0, 2], "position 3: cell 1 shortcut"),            # shortcut is a bit
    ([0, 0, 0, 0, 0, 0, 0, 0, 2], "position 8: cell 2 skip-ins must be in 0..1"),  # cell 2 has one earlier cell
    ([0] * 13 + [4], "position 13: cell 3 skip-ins must be in 0..3"),             # two earlier cells
    ([0, 0, -1, 0], "position 2"),                            # negative
    ([0, 0, 0.5, 0], "integers"),                             # not an integer
])
def test_invalid_archs_name_the_culprit(arch, message):
    with pytest.raises(UsageError, match=message):
        validate_arch(arch)


def test_stage_of_each_length():
    assert [arch_stage([0] * n) for n in ARCH_LENGTHS] == [0, 1, 2]
    with pytest.raises(UsageError, match="stage 1 needs an architecture of length 9"):
        validate_arch([0] * 14, stage=1)


def test_parse_accepts_autogan_print_forms_and_round_trips():
    assert parse_arch("1 0 1 1 1 0 0 1 1 1 0 1 0 3") == tuple(PAPER_CIFAR10_ARCH)
    assert parse_arch("[1, 0, 1, 1]") == (1, 0, 1, 1)
    with pytest.raises(UsageError, match="integers separated"):
        parse_arch("1 0 x 1")


def test_readable_string():
    text = arch_to_str(PAPER_CIFAR10_ARCH)
    assert text.startswith("[1 0 1 1 | 1 0 0 1 1 | 1 0 1 0 3]")
    assert "c3: pre none nearest no-shortcut skip<c1,c2" in text


def test_the_registry_holds_autogans_codes_in_order():
    """The names an architecture vector's codes stand for, in AutoGAN's order (its released vectors and
    checkpoints depend on it); the counts come from the same tables."""
    assert CONV_TYPES == ("post", "pre") and NORM_TYPES == ("none", "bn", "in")
    assert UP_TYPES == ("bilinear", "nearest", "deconv") and SHORTCUT_TYPES == ("none", "yes")
    assert [name for name, _ in CELL_DECISIONS] == ["conv", "norm", "up", "shortcut"]
    assert decision_sizes(0) == tuple(len(ops) for _, ops in CELL_DECISIONS)
    per_cell = math.prod(len(ops) for _, ops in CELL_DECISIONS)
    assert search_space_size(2) == per_cell**3 * 2 * 4  # skip-in masks: 2 for cell 2, 4 for cell 3
    assert all(label for _, ops in CELL_DECISIONS for label in ops.values())  # each op has its plot label


def test_the_readme_lists_the_upsampling_codes_of_the_registry():
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    listing = ", ".join(f"{code} {name}" for code, name in enumerate(UP_TYPES))
    assert f"upsampling ({listing})" in readme


def test_arch_key_is_one_hashable_form_of_an_architecture():
    """The engine's and the reward's graph caches key an architecture by it: a list, a tuple and numpy
    integers of one architecture are one key; the length (the stage) tells stages apart."""
    key = arch_key([1, 0, 1, 1])
    assert key == (1, 0, 1, 1) and hash(key) == hash(arch_key((1, 0, 1, 1)))
    assert arch_key(np.array([1, 0, 1, 1])) == key and all(type(v) is int for v in arch_key(np.array([1, 0])))
    assert arch_key([1, 0, 1, 1, 0, 0, 0, 0, 0]) != arch_key([1, 0, 1, 1])
