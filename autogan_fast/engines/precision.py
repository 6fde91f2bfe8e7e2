"""The arithmetic GAN training runs in (`--precision`, search and train), and its Adam.

- fp32: as before this setting existed: nothing is switched, so a run is bit for bit what it was
  (PyTorch's own fp32 defaults: on CUDA cuDNN convolutions may use TF32, cuBLAS matmuls may not).
- tf32: fp32 with TF32 allowed for cuBLAS matmuls and cuDNN convolutions (tensor cores, 10-bit
  mantissa operands). CPU kernels ignore the switch: on a CPU this runs as fp32.
- bf16: the forward passes and the losses under `torch.autocast(device_type, torch.bfloat16)`
  (backward follows the forward's dtypes), G's and D's activations in channels-last memory format
  (tensor cores' layout: convolutions then read and write NHWC without transposes): G's weights are
  stored channels-last (`set_layout`), so its convolutions produce NHWC; D's input is made NHWC
  (`to_layout`), so its convolutions do too, while D's weights stay NCHW, as spectral norm's fused
  kernel reads them (W / sigma is recomputed every forward anyway); fp32 leftovers in TF32.
  Parameters, gradients and Adam's moments stay fp32 (autocast casts each weight on the fly); spectral
  norm's power iteration and W / sigma run in fp32 (`kernels.spectral_norm`), BatchNorm's statistics
  too (running buffers are fp32, the batch moments accumulate in fp32); the losses are taken in fp32.

Autocast runs with `cache_enabled=False`, as CUDA-graph capture requires (a cast cached across the
capture boundary would be replayed from freed memory): the graph engine's captured steps hold the
autocast region inside them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..config import PRECISIONS


def _precision_snapshot() -> list[tuple[object, str, object]]:
    """Every fp32-precision setting that can be read without raising: the legacy ones first (torch >= 2.9
    raises on reading them once the APIs were mixed: those are then left out), the new per-backend
    `fp32_precision` ones after. Restoring in this order gives back the state exactly."""
    backends = torch.backends
    snapshot = []
    for owner, attr in ((torch, "float32_matmul_precision"), (backends.cudnn, "allow_tf32")):
        with contextlib.suppress(RuntimeError):
            value = torch.get_float32_matmul_precision() if owner is torch else getattr(owner, attr)
            snapshot.append((owner, attr, value))
    owners = [backends, backends.cuda.matmul, backends.cudnn, getattr(backends.cudnn, "conv", None),
              getattr(backends.cudnn, "rnn", None)]
    mkldnn = getattr(backends, "mkldnn", None)
    owners += [mkldnn, getattr(mkldnn, "matmul", None), getattr(mkldnn, "conv", None)]
    snapshot += [(owner, "fp32_precision", owner.fp32_precision) for owner in owners
                 if owner is not None and hasattr(owner, "fp32_precision")]
    return snapshot


def _restore(snapshot: list[tuple[object, str, object]]) -> None:
    for owner, attr, value in snapshot:
        if owner is torch:
            torch.set_float32_matmul_precision(value)
        else:
            setattr(owner, attr, value)


@contextlib.contextmanager
def fp32_precision(mode: str) -> Iterator[None]:
    """Run fp32 matmuls and convolutions as `mode`: "ieee" (exact fp32) or "tf32"; restores on exit.

    Set through the legacy switches (`cuda.matmul.allow_tf32`, `cudnn.allow_tf32`), whose setters keep
    the new `fp32_precision` API consistent: setting only the new one leaves the legacy matmul precision
    at "highest", and torch >= 2.9 then refuses mixed states when a cuBLAS matmul checks its TF32 flag.
    For exact fp32, oneDNN's reduced-precision fp32 (CPU) is turned off too."""
    if mode not in ("ieee", "tf32"):
        raise ValueError(f"mode must be 'ieee' or 'tf32', got {mode!r}")
    snapshot = _precision_snapshot()
    try:
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        if mode == "ieee":
            mkldnn = getattr(torch.backends, "mkldnn", None)
            for op in ("matmul", "conv"):
                owner = getattr(mkldnn, op, None)
                if hasattr(owner, "fp32_precision"):
                    owner.fp32_precision = "ieee"
        yield
    finally:
        _restore(snapshot)



@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The context a training step's forward and loss run in for `precision` (one of PRECISIONS)."""
    if precision == "fp32":  # nothing switched: the arithmetic of every run before --precision
        yield
    elif precision == "tf32":
        with fp32_precision("tf32"):
            yield
    elif precision == "bf16":
        with fp32_precision("tf32"), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                                    cache_enabled=False):
            yield
    else:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def memory_format(precision: str) -> torch.memory_format:
    """The layout of the nets' 4-d weights (and so of their activations) at `precision`."""
    return torch.channels_last if precision == "bf16" else torch.contiguous_format


def set_layout(gen: nn.Module, precision: str) -> None:
    """Put the generator's 4-d parameters in `precision`'s memory format, in place of the Parameter
    objects' data (do it before an optimizer holds state for them). fp32 / tf32: untouched."""
    if precision == "bf16":
        gen.to(memory_format=memory_format(precision))


def to_layout(images: torch.Tensor, precision: str) -> torch.Tensor:
    """A batch of D's input in `precision`'s memory format (`images` itself when it already is)."""
    return images.contiguous(memory_format=memory_format(precision))


def fused_adam_supported(device: torch.device) -> bool:
    """Whether Adam's fused implementation (one kernel for every tensor's update) runs on `device` here.
    Only CUDA uses it: on the CPU it rounds differently from the for-loop Adam (1 ulp after a few steps,
    measured with torch 2.13), and the CPU path keeps its results."""
    if device.type != "cuda":
        return False
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # an older torch without the helper: no fused Adam
        return False
    return "cuda" in _get_fused_kernels_supported_devices()


def new_adam(params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float], device: torch.device,
             capturable: bool = False) -> torch.optim.Adam:
    """Adam for a GAN net: fused on CUDA where torch has it (one launch per step; capturable keeps its
    step counts on the device, as CUDA-graph capture needs), the for-loop implementation elsewhere.
    Its state follows the parameters' dtype: fp32 at every precision."""
    fused = fused_adam_supported(device)
    return torch.optim.Adam(params, lr, betas=betas, capturable=capturable, **({"fused": True} if fused else {}))


__all__ = ["PRECISIONS", "autocast", "fp32_precision", "fused_adam_supported", "memory_format", "new_adam",
           "set_layout", "to_layout"]
