"""Backend choice for the fused ops, and the argument checks both backends share.

`auto` runs Triton on CUDA tensors where it is faster than the PyTorch reference (timed once per
shape, `autoselect.py`) and the reference elsewhere; `triton` and `torch` force one side. The
starting choice is `$AUTOGAN_FAST_KERNELS` (default `auto`): a user whose GPU or Triton version
breaks a fused kernel runs the reference, the same maths, without touching code. Forced
`triton` also runs on CPU tensors under the Triton interpreter (`TRITON_INTERPRET=1`, how the kernel
tests run without a GPU); `auto` never picks the interpreter, which is orders of
magnitude slower than the reference. Forcing `triton` where it cannot run raises instead of
silently running the reference.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import torch

BACKENDS = ("auto", "triton", "torch")
BACKEND_ENV = "AUTOGAN_FAST_KERNELS"  # the starting backend, read once at import
_backend = os.environ.get(BACKEND_ENV) or "auto"  # checked at the first dispatch (an import must not fail)


try:  # Triton is Linux-only; elsewhere every op runs its reference
    import triton  # noqa: F401

    _TRITON_IMPORTS = True
except ImportError:
    _TRITON_IMPORTS = False


def triton_available() -> bool:
    """True when the `triton` package imports (a plain flag, so torch.compile traces through it)."""
    return _TRITON_IMPORTS


def triton_interpreter() -> bool:
    """True when Triton kernels run on the CPU under the interpreter (read at kernel definition)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def set_backend(name: str) -> None:
    """Choose the implementation of every fused op: "auto", "triton" or "torch"."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _backend = name


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager form of `set_backend`; restores the previous choice on exit."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def triton_can_run(*tensors: torch.Tensor) -> bool:
    """Whether Triton kernels can run on these tensors on this machine."""
    if not triton_available():
        return False
    if triton_interpreter():
        return all(t.device.type == "cpu" for t in tensors)
    return all(t.is_cuda for t in tensors)


def _triton_on_cuda(tensors: list[torch.Tensor]) -> bool:
    """`auto`'s rule: Triton installed and every tensor on CUDA (never the interpreter)."""
    return triton_available() and all(t.is_cuda for t in tensors)


# Whether `auto` may run Triton on these tensors; replaced only by `autoselect.autoselect_override` (tests),
# so the CPU tests can drive `auto`'s timing choice through the interpreter.
_auto_runs_triton: Callable[[list[torch.Tensor]], bool] = _triton_on_cuda


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Dispatch decision for one call; raises when `triton` is forced but cannot run here."""
    present = [t for t in tensors if t is not None]
    if _backend not in BACKENDS:
        raise ValueError(f"${BACKEND_ENV} must be one of {', '.join(BACKENDS)}, got {_backend!r}")
    if _backend == "torch":
        return False
    if _backend == "auto":  # then, where this is True, `autoselect.keep_fused` times fused against reference
        return _auto_runs_triton(present)
    can_run = triton_can_run(*present)
    if _backend == "triton" and not can_run:
        where = sorted({str(t.device) for t in present})
        raise RuntimeError(
            f"backend 'triton' was forced but cannot run on devices {where} "
            f"(triton installed: {triton_available()}, TRITON_INTERPRET={triton_interpreter()})"
        )
    return True


def _first_tensor(values) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (list, tuple)):
            found = _first_tensor(value)
            if found is not None:
                return found
    return None


def on_tensor_device(launcher: Callable) -> Callable:
    """Run a launcher with the CUDA device of its first tensor argument current: Triton launches on the
    current device, so tensors on cuda:1 with cuda:0 current would otherwise fault."""

    @functools.wraps(launcher)
    def wrapper(*args, **kwargs):
        t = _first_tensor(args)
        if t is None or not t.is_cuda:
            return launcher(*args, **kwargs)
        with torch.cuda.device(t.device):
            return launcher(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Argument checks shared by the ops: the same ValueError from both backends, naming the argument.


def check_tensor(
    name: str,
    tensor: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    floating: bool = True,
    contiguous: bool = True,
) -> torch.Tensor:
    """Validate one tensor argument; returns it for chaining."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if tensor.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dims, got shape "
                             f"{tuple(tensor.shape)}")
    if floating and not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    if contiguous and not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
    return tensor


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """All given tensors on one device; the error names the first that is not."""
    present = {k: v for k, v in tensors.items() if v is not None}
    if not present:
        return
    first_name, first = next(iter(present.items()))
    for name, tensor in present.items():
        if tensor.device != first.device:
            raise ValueError(f"{name} is on {tensor.device} but {first_name} is on {first.device}")
