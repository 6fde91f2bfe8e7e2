"""Trained generator files as a `DerivedGenerator`: AutoGAN's released ones and this project's `train` checkpoints.

    from autogan_fast import load_generator
    gen = load_generator("autogan_cifar10_a.pth", arch="autogan_cifar10_a", device="cuda")

Three layouts are read (always with `weights_only=True`):
- this project's `train` checkpoints (`checkpoint.pt`, `best.pt`): they carry their architecture and
  settings; the EMA generator is loaded when present;
- AutoGAN's full derived-training checkpoint: a dict holding `avg_gen_state_dict` (the EMA generator,
  loaded), `gen_state_dict`, `dis_state_dict`, `epoch`, `best_fid`, ...;
- AutoGAN's bare generator state dict (what its authors released as `autogan_cifar10_a.pth` & co).

AutoGAN's derived generator, by its own names: `l1` (Linear latent -> bw*bw*gf), `cell1..cell3`
(pre-activation cells: optional norm `n1`, ReLU, x2 upsample, 3x3 `c1`; 1x1 `skip_in_ops.i` on the
earlier skip outputs the cell uses, in increasing cell order; optional `n2`, ReLU, 3x3 `c2`; 1x1 `c_sc`
on the upsampled input), `to_rgb.0` BatchNorm, `to_rgb.2` 3x3 conv. Its files carry no architecture
and no sizes: the architecture is given (a released name or 14 integers), latent size, channels and
bottom width are read off the tensors. Its full checkpoints were written by torch 1.x (the legacy
file format) and hold a numpy float64 (`best_fid`): exactly the globals a numpy float64 needs are allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .models.derived import FULL_ARCH_LENGTH, DerivedGenerator
from .safe_load import load_weights_only
from .search_space import CONV_PRE, decode_arch, parse_arch, validate_arch

# What `train` writes (checkpoint.pt, best.pt). 2: one to-RGB head, skip outputs with skip-ins, epoch batches.
CHECKPOINT_FORMAT = "autogan_fast.train/2"


# The architectures of the generators AutoGAN's authors published (their files' names, less `.pth`).
RELEASED: dict[str, tuple[int, ...]] = {
    "autogan_cifar10_a": (1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3),  # the paper's CIFAR-10 row: IS 8.55, FID 12.42
    "autogan_cifar10_b": (1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 3),
    "autogan_cifar10_c": (1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3),
    # a at bottom width 6 (48 px), trained on STL-10: the paper's STL-10 row, IS 9.16, FID 31.01
    "autogan_cifar10_a2stl10": (1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3),
}


def resolve_arch(spec: str | Sequence[int] | Sequence[str]) -> tuple[int, ...]:
    """A released generator's name, 14 integers, or a string of them (`"1 0 1 1 ..."`, commas allowed).

    A sequence of strings (command-line tokens) is joined first, so `--arch 1 0 1 1 ...`, `--arch
    "1 0 1 1 ..."` and `--arch autogan_cifar10_a` all work. Raises UsageError naming the problem.
    """
    if not isinstance(spec, str) and all(isinstance(v, str) for v in spec):
        spec = " ".join(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text in RELEASED:
            return RELEASED[text]
        if re.search(r"[A-Za-z_]", text):
            raise UsageError(f"unknown architecture {text!r}: give 14 integers or one of {', '.join(RELEASED)}")
        arch = parse_arch(text)
    else:
        arch = validate_arch(spec)
    if len(arch) != FULL_ARCH_LENGTH:
        raise UsageError(f"a generator needs all three cells ({FULL_ARCH_LENGTH} integers), got {len(arch)}: "
                         f"{arch_text(arch)}")
    return arch


def arch_text(arch: Sequence[int]) -> str:
    """`1 0 1 1 ...`, as AutoGAN spells an architecture."""
    return " ".join(map(str, arch))


# ---------------------------------------------------------------------------------------------
# Reading a file


def _numpy_float64_globals() -> list:
    """The globals a pickled numpy float64 needs, under numpy 1's and numpy 2's module names."""
    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, type(np.dtype(np.float64))]  # the last is numpy.dtypes.Float64DType


def read_weights_file(path: Path) -> object:
    """`torch.load(path, weights_only=True)`, allowing numpy float64 too; UsageError naming the file otherwise."""
    return load_weights_only(path, "checkpoint", _numpy_float64_globals())


def check_train_checkpoint(state: object, path: Path) -> None:
    """UsageError unless `state` (loaded from `path`) was written by this program's training."""
    found = state.get("format") if isinstance(state, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a checkpoint of autogan_fast.train (format {found!r})")


def is_state_dict(value: object) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


# ---------------------------------------------------------------------------------------------
# AutoGAN's names


def authors_prefixes(arch: tuple[int, ...]) -> dict[str, str]:
    """Our parameter-name prefix -> AutoGAN's, for the layers `arch` uses (pre-activation cells only)."""
    prefixes = {"l1.": "l1.", "to_rgb.0.": "to_rgb.0.", "to_rgb.2.": "to_rgb.2."}  # to_rgb.0 BN, .2 conv
    for k, choice in enumerate(decode_arch(arch)):
        if choice.conv != CONV_PRE:
            raise UsageError(f"architecture {arch_text(arch)}: cell {k + 1} is post-activation, which AutoGAN's "
                             f"derived generators (pre-activation cells only) cannot hold")
        ours, theirs = f"cells.{k}.", f"cell{k + 1}."
        prefixes.update({ours + "pre1.conv.": theirs + "c1.", ours + "pre1.norms.bn.": theirs + "n1.",
                         ours + "pre2.conv.": theirs + "c2.", ours + "pre2.norms.bn.": theirs + "n2.",
                         ours + "shortcut_conv.": theirs + "c_sc."})
        # AutoGAN zips the used earlier skip outputs, in increasing cell order, with skip_in_ops.
        for i, earlier in enumerate(choice.skip_from):
            prefixes[ours + f"skip_convs.{earlier - 1}."] = theirs + f"skip_in_ops.{i}."
    return prefixes


def authors_names(arch: tuple[int, ...], our_keys: Sequence[str]) -> dict[str, str]:
    """AutoGAN's state-dict key -> ours, for every key of our derived generator of `arch`."""
    prefixes = authors_prefixes(arch)
    names = {}
    for key in our_keys:
        ours = next((p for p in prefixes if key.startswith(p) and "." not in key[len(p):]), None)
        if ours is None:
            raise RuntimeError(f"no AutoGAN name for derived-generator key {key!r}")  # a bug, not bad input
        names[prefixes[ours] + key[len(ours):]] = key
    return names


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class GeneratorFile:
    """A generator read from a file, with what the file said about it."""

    generator: DerivedGenerator  # on the CPU, in eval mode
    layout: str  # "train" (this project's checkpoint), "autogan" (full checkpoint) or "autogan-state-dict"
    weights: str  # which weights: "ema" or "gen" (train), "avg_gen_state_dict", or "state dict"
    config: dict | None = None  # a train checkpoint's saved settings
    iter: int | None = None  # a train checkpoint's generator iterations
    epoch: int | None = None  # an AutoGAN checkpoint's epoch

    def describe(self, path: Path) -> str:
        if self.layout == "train":
            return f"{self.weights} generator of {path}, iteration {self.iter}"
        if self.layout == "autogan":
            return f"avg_gen_state_dict of AutoGAN checkpoint {path}, epoch {self.epoch}"
        return f"AutoGAN generator {path}"


def check_keys(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor | None], path: Path,
               arch: tuple[int, ...]) -> None:
    """UsageError naming the first key of `state` that `expected` lacks, or the reverse, or a shape mismatch
    (shapes only where `expected` gives a tensor).

    Done here rather than by a strict `load_state_dict`, which accepts the keys of submodules set to
    None (say, the BatchNorm entries of a cell whose architecture has no norm).
    """
    fits = f"{path} does not fit architecture {arch_text(arch)}"
    for key in state:
        if key not in expected:
            raise UsageError(f"{fits}: unexpected key {key!r}")
    for key, tensor in expected.items():
        if key not in state:
            raise UsageError(f"{fits}: missing key {key!r}")
        if tensor is not None and tuple(state[key].shape) != tuple(tensor.shape):
            raise UsageError(f"{fits}: {key!r} has shape {tuple(state[key].shape)}, the generator needs "
                             f"{tuple(tensor.shape)}")


def read_train_checkpoint(state: dict, path: Path, arch: tuple[int, ...] | None) -> GeneratorFile:
    check_train_checkpoint(state, path)
    saved = validate_arch(state["arch"], stage=2)
    if arch is not None and arch != saved:
        raise UsageError(f"{path} holds a generator of architecture {arch_text(saved)}, not the "
                         f"{arch_text(arch)} given")
    config = state["config"]
    gen = DerivedGenerator(saved, config["latent_dim"], config["gf_dim"], config["bottom_width"])
    weights = "ema" if state.get("ema") is not None else "gen"
    check_keys(state[weights], gen.state_dict(), path, saved)
    gen.load_state_dict(state[weights])
    return GeneratorFile(gen.eval(), "train", weights, config=config, iter=state.get("iter"))


def read_authors_state_dict(state: Mapping[str, torch.Tensor], path: Path, arch: tuple[int, ...]
                            ) -> DerivedGenerator:
    """Our derived generator holding AutoGAN's state dict `state`; sizes are read off its tensors."""
    try:
        names = authors_names(arch, list(DerivedGenerator(arch, 1, 1, 1).state_dict()))
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    check_keys(state, dict.fromkeys(names), path, arch)  # names first: the sizes come from these tensors
    rows, latent_dim = state["l1.weight"].shape
    gf_dim = state["to_rgb.2.weight"].shape[1]
    bottom_width = math.isqrt(rows // gf_dim)
    if bottom_width * bottom_width * gf_dim != rows:
        raise UsageError(f"{path}: 'l1.weight' has {rows} rows, not bottom_width**2 * {gf_dim} channels")
    gen = DerivedGenerator(arch, latent_dim, gf_dim, bottom_width)
    expected = gen.state_dict()
    check_keys(state, {key: expected[ours] for key, ours in names.items()}, path, arch)
    gen.load_state_dict({names[key]: tensor for key, tensor in state.items()})
    return gen.eval()


def read_generator_file(path: str | Path, arch: str | Sequence[int] | Sequence[str] | None = None
                        ) -> GeneratorFile:
    """The generator in `path` (any of the three layouts), on the CPU in eval mode; see `load_generator`."""
    path = Path(path)
    wanted = None if arch is None else resolve_arch(arch)
    state = read_weights_file(path)
    if isinstance(state, dict) and "format" in state:
        return read_train_checkpoint(state, path, wanted)
    if isinstance(state, dict) and "avg_gen_state_dict" in state:
        layout, weights = "autogan", state["avg_gen_state_dict"]
        if not is_state_dict(weights):
            raise UsageError(f"corrupt checkpoint {path}: its 'avg_gen_state_dict' is not a state dict of tensors")
    elif is_state_dict(state):
        layout, weights = "autogan-state-dict", state
    else:
        raise UsageError(f"{path} matches no generator layout: neither a checkpoint of autogan_fast.train (no "
                         f"'format'), nor AutoGAN's (no 'avg_gen_state_dict'), nor a bare state dict of tensors")
    if wanted is None:  # AutoGAN's full checkpoints name their model
        model = state.get("gen_model") if layout == "autogan" else None
        if model not in RELEASED:
            raise UsageError(f"{path} is an AutoGAN generator file, which does not say its architecture: give it "
                             f"(--arch {' | '.join(RELEASED)} | 14 integers)")
        wanted = RELEASED[model]
    gen = read_authors_state_dict(weights, path, wanted)
    epoch = state.get("epoch") if layout == "autogan" else None
    return GeneratorFile(gen, layout, "avg_gen_state_dict" if layout == "autogan" else "state dict",
                         epoch=None if epoch is None else int(epoch))


def load_generator(path: str | Path, arch: str | Sequence[int] | None = None,
                   device: torch.device | str = "cpu") -> DerivedGenerator:
    """A trained generator from `path`, in eval mode on `device`.

    Args:
        path: a `train` checkpoint (`checkpoint.pt`, `best.pt`: its EMA generator), or one of AutoGAN's
            files (`autogan_cifar10_a.pth`: a full derived-training checkpoint, whose `avg_gen_state_dict`
            is loaded, or a bare generator state dict).
        arch: the architecture: a released name (`autogan_cifar10_a`, `_b`, `_c`, `autogan_cifar10_a2stl10`),
            14 integers, or a string of them. Needed for AutoGAN's bare state dicts; a `train` checkpoint
            carries its own (a given one must match it).
        device: where the generator goes.

    Raises:
        UsageError: a missing, corrupt or foreign file (one holding more than weights), a file of no known
            layout, or weights that do not fit the architecture (the message names the first such key).
    """
    return read_generator_file(path, arch).generator.to(device)


__all__ = ["CHECKPOINT_FORMAT", "RELEASED", "GeneratorFile", "check_train_checkpoint", "load_generator",
           "read_generator_file", "resolve_arch"]
