"""Finding a run that diverged: losses, rewards, logits or weights that are no longer finite.

Each check reads the device only where the host reads anyway: a shared-training phase's loss means,
a reward, the controller's samples (a flag computed beside them), the losses of derived training at
an evaluation, and a checkpoint's tensors right before it is written. The step that finds one raises
`NotFinite`; the loop that knows the iteration and the last checkpoint turns it into a `DivergedError`
(`diverged_error`), so nothing is written from a diverged network and the last checkpoint stays intact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .config import flag
from .errors import DivergedError

# The settings a message names for each part that can diverge.
GAN_SETTINGS = ("g_lr", "d_lr")
CONTROLLER_SETTINGS = ("ctrl_lr", "entropy_coeff")


class NotFinite(Exception):
    """A value that should be finite is not: `what` says which, `settings` name the config fields that
    drive it. Raised where it is found; the loop turns it into a DivergedError with its context."""

    def __init__(self, what: str, settings: Sequence[str]):
        super().__init__(what)
        self.what = what
        self.settings = tuple(settings)


def all_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def require_finite(what: str, settings: Sequence[str], **values: float) -> None:
    """NotFinite ("`what` are not finite (name value, ...)") unless every value is finite."""
    if not all_finite(*values.values()):
        shown = ", ".join(f"{name} {value}" for name, value in values.items())
        raise NotFinite(f"{what} are not finite ({shown})", settings)


def _float_tensors(value: object, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every floating-point tensor in nested dicts / lists of a checkpoint, with its dotted name."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _float_tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _float_tensors(item, f"{name}.{index}" if name else str(index))


def first_non_finite(state: object) -> str | None:
    """The dotted name (`gan.gen.l1.weight`) of the first floating-point tensor of a checkpoint dict with
    a value that is not finite, or None. One flag per tensor on its device, read once per device (host
    sync: one per checkpoint, which copies every tensor to the host anyway)."""
    flags: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in _float_tensors(state, ""):
        flags.setdefault(tensor.device, []).append((name, torch.isfinite(tensor).all()))
    for entries in flags.values():
        finite = torch.stack([flag for _, flag in entries]).tolist()  # host sync
        for (name, _), ok in zip(entries, finite, strict=True):
            if not ok:
                return name
    return None


def check_checkpoint(state: dict, settings_of: dict[str, Sequence[str]]) -> None:
    """NotFinite naming the first tensor of checkpoint `state` that is not finite; `settings_of` maps a
    top-level entry ("gan", "controller") to the settings that drive it (others: none named)."""
    name = first_non_finite(state)
    if name is not None:
        raise NotFinite(f"{name} is not finite", settings_of.get(name.split(".")[0], ()))


def diverged_error(job: str, step: str, err: NotFinite, config: object, checkpoint: Path,
                   last_good: str | None) -> DivergedError:
    """The one-line error of a run that diverged at `step`: what, with which settings, and the last good
    checkpoint (`last_good` describes when it was written; None: there is none yet)."""
    settings = " ".join(f"--{flag(name)} {getattr(config, name):g}" for name in err.settings)
    where = f" with {settings}" if settings else ""
    if last_good is None:
        kept = "no checkpoint was written before it"
    else:
        kept = f"the last good checkpoint, {checkpoint} ({last_good}), is intact"
    return DivergedError(f"the {job} diverged at {step}: {err.what}{where}; {kept}, and nothing was written "
                         f"from the diverged state; start a new run with other values of the settings named (lower "
                         f"learning rates)")
