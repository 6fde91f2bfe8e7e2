"""Reading torch files safely: `torch.load(..., weights_only=True)` with one-line errors.

A `.pt` file is a pickle, and a pickle may call any function it names. Weights-only loading refuses
every global outside torch's allowlist (tensors, plain containers) and the few a caller adds. A
refused file is reported by the global it names, never with torch's advice to load it unrestricted:
a file that needs that is exactly the file not to trust.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import UsageError


def load_weights_only(path: str | Path, what: str = "checkpoint", allow: Sequence = ()) -> object:
    """`torch.load(path, map_location="cpu", weights_only=True)` with the globals in `allow` also allowed
    (objects, or (object, "module.name") pairs, as `torch.serialization.safe_globals` takes them).

    Raises:
        UsageError, one line naming the file (`what` says what it should have been): "no {what} at
        PATH"; "refusing to load {what} PATH: it names the global G, ..." for a file whose pickle names
        a global weights-only loading refuses; "corrupt {what} PATH: reason" for any other damage.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no {what} at {path}")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(allow)):
            # torch warns (two lines) before failing on a pickle of another protocol than torch.save's,
            # or on a TorchScript archive; the error below says what matters on one line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise UsageError(_load_error(path, what, err, allow)) from err


def _load_error(path: Path, what: str, err: Exception, allow: Sequence) -> str:
    """The one line to say for torch's error (many lines, with advice we must not repeat)."""
    message = str(err)
    refused = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", message)
    name = (refused.group(1) or refused.group(2)) if refused else None
    if name is None and "Unsupported operand" in message:
        # torch's weights-only unpickler reads only the opcodes of torch.save's protocol 2, so a pickle
        # of a later protocol (any plain pickle.dump) stops before torch sees its globals: find them here.
        name = _first_refused_global(path, allow)
    if name is not None:
        return (f"refusing to load {what} {path}: it names the global {name}, which no {what} needs "
                f"(weights-only loading allows tensors and plain containers)")
    if "TorchScript" in message:
        return f"corrupt {what} {path}: a TorchScript archive, not a file of tensors"
    if path.stat().st_size == 0:
        return f"corrupt {what} {path}: the file is empty"
    lines = [line.strip() for line in message.splitlines()]
    # torch wraps the unpickler's own error in advice (to load without weights_only) and a docs link.
    lines = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines
             if line and "weights_only" not in line and not line.startswith(("Weights only load failed",
                                                                              "Check the documentation"))]
    reason = next((line for line in lines if line), type(err).__name__)
    reason = reason.split(". ")[0]  # the gist: torch goes on with guesses at the cause
    operand = re.fullmatch(r"Unsupported operand (\d+)", reason)
    if operand:
        reason = f"not a file torch.save writes (pickle opcode {operand.group(1)})"
    return f"corrupt {what} {path}: {reason}"


class _Refused(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Placeholder:
    """Stands in for an allowed global while scanning: takes any arguments, state and items."""

    def __init__(self, *args: object, **kwargs: object):
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


class _GlobalScanner(pickle.Unpickler):
    """Unpickles only to find the first global outside `allowed`. Nothing the pickle names is ever
    imported or called: allowed names become `_Placeholder`, and the first other one stops the scan."""

    def __init__(self, file: io.BufferedIOBase, allowed: set[str]):
        super().__init__(file, encoding="bytes")
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> type:
        if f"{module}.{name}" in self.allowed:
            return _Placeholder
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: object) -> None:  # torch's references to tensor storages: not needed
        return None


def _allowed_global_names(allow: Sequence) -> set[str]:
    """"module.name" of every global torch's weights-only loading accepts, and of those in `allow`."""
    # torch keeps its default allowlist private; without it every global counts as refused, which
    # still refuses the file, at worst naming a harmless global.
    default = getattr(getattr(torch, "_weights_only_unpickler", None), "_get_allowed_globals", dict)
    names = set(default())
    for entry in allow:
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{entry.__qualname__}")
    return names


def _first_refused_global(path: Path, allow: Sequence) -> str | None:
    """The first global `path`'s pickle (a plain pickle, or torch's zip's data.pkl) names that
    weights-only loading refuses; None when there is none or the pickle is unreadable."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
                if member is None:
                    return None
                data = archive.read(member)
        else:
            data = path.read_bytes()
        _GlobalScanner(io.BytesIO(data), _allowed_global_names(allow)).load()
    except _Refused as refused:
        return refused.name
    except Exception:  # damage of any kind: there is no global to name
        return None
    return None
