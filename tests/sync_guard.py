"""`NoHostSync`: a test guard that fails on every read of a tensor's value by the host.

A captured (or capturable) step must be pure device work: one host read of a device value blocks the
CPU until the GPU catches up, and is illegal inside a CUDA-graph capture. `torch.cuda.
set_sync_debug_mode("error")` catches such reads only on a GPU; this guard makes the rule a CPU test.

The rule, as the CPU can check it. On a CPU-only machine every tensor lives on the host, so "a sync"
is defined as: reading a tensor's VALUE into Python, or into a tensor on another device. In a GPU run
each of those reads a device value on the host; under the guard ALL of them raise `HostSyncError`,
whatever device the tensor is on, so code that passes here does none of them at all. Caught:
  - ops that read values back by nature: `aten._local_scalar_dense` (`.item()`, `float(t)`, `int(t)`),
    `aten.item`, `aten.is_nonzero` (`bool(t)`, `if t:`), `aten.equal`, `aten.nonzero` (and so
    `torch.where(cond)`, `argwhere`), `aten.masked_select`, the `unique` family, `bincount`, `histc`
    (their output size or range depends on the values), `repeat_interleave` without `output_size`;
  - `aten.index` / `index_put_` with a boolean mask (`x[mask]`, `x[mask] = v`: the mask's nonzero
    runs inside the kernel, below the dispatcher, so the guard names the op that hides it);
  - copies between devices (`aten._to_copy`, `copy_`, `_copy_from`, `_copy_from_and_resize` whose
    source and destination devices differ): device -> host reads, and host -> device copies from
    pageable memory (synchronous, and illegal while capturing);
  - Python-side reads that never reach the dispatcher: `Tensor.tolist`, `Tensor.numpy`, and, to name
    them in the error, `Tensor.item`, `__bool__`, `__int__`, `__float__`, `__index__`, `__complex__`;
    plus the explicit `torch.cuda.synchronize`, `Stream.synchronize` and `Event.synchronize`.
    These are patched on the class while the guard is active and restored on exit;
  - `torch.tensor` / `torch.as_tensor` given a device (`NoDeviceTensorFactory`, a TorchFunctionMode that
    `NoHostSync` enters too): on a GPU that is a blocking copy of host data to the device, illegal
    while capturing, yet on the CPU the data never leaves the host and no copy op is dispatched.

What the CPU form cannot see: `t.cpu()` / `t.to("cpu")` of a tensor that already lives on the CPU
returns `t` itself and dispatches nothing, so a device -> host copy written that way shows up only
in a GPU run (or with `set_sync_debug_mode`); likewise syncs inside a CUDA kernel's host code, and a
first-time CUDA-graph capture (`torch.cuda.graph` synchronizes before capturing: guard steady-state
steps, after their warm-up). Ops listed above are flagged even when the real GPU kernel would not
sync in a particular case (e.g. `repeat_interleave` of a CPU `repeats`): the rule is strict on purpose.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class HostSyncError(RuntimeError):
    """A value was read back to the host inside a `NoHostSync` block."""


def _packets(*names: str) -> frozenset:
    """The aten overload packets of these names that this torch has."""
    return frozenset(getattr(aten, n) for n in names if hasattr(aten, n))


# Ops whose result (or result size) depends on tensor values read by the host.
_VALUE_READS = _packets(
    "_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "argwhere", "masked_select",
    "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
    "bincount", "histc",
)
_CROSS_DEVICE_COPIES = _packets("_to_copy", "copy", "copy_", "_copy_from", "_copy_from_and_resize")
_MASK_INDEXING = _packets("index", "index_put", "index_put_", "_index_put_impl", "_index_put_impl_")

# Python methods that read values without dispatching anything (tolist, numpy) or that we name
# ourselves for a clearer message.
_TENSOR_METHODS = ("tolist", "numpy", "item", "__bool__", "__int__", "__float__", "__index__", "__complex__")


def _device_of(value) -> torch.device | None:
    if isinstance(value, torch.Tensor):
        return value.device
    if isinstance(value, (str, torch.device)):
        return torch.device(value)
    return None


def _cross_device(func, args, kwargs) -> tuple[torch.device, torch.device] | None:
    """(source, destination) devices of a copy op that crosses devices, else None."""
    packet = func.overloadpacket
    if packet is aten._to_copy:
        src, dst = args[0].device, _device_of(kwargs.get("device"))
    elif packet in (aten._copy_from, aten._copy_from_and_resize):
        src, dst = args[0].device, args[1].device
    else:  # copy / copy_(self=destination, src)
        src = _device_of(args[1] if len(args) > 1 else kwargs.get("src"))
        dst = args[0].device
    if src is None or dst is None or src == dst:
        return None
    return src, dst


def _has_mask_index(args, kwargs) -> bool:
    indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class NoDeviceTensorFactory(TorchFunctionMode):
    """Within the block, `torch.tensor(..., device=d)` and `torch.as_tensor(..., device=d)` raise
    `HostSyncError`: they copy host data to `d`. Make such constants with device ops (`torch.full`,
    `arange`) or Python scalars instead."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor):
            device = kwargs.get("device")  # keyword-only in both
            if device is not None:
                raise HostSyncError(f"host sync: torch.{func.__name__}(..., device={device!r}) copies host data "
                                    f"to the device (blocking, and illegal while capturing)")
        return func(*args, **kwargs)


class NoHostSync(TorchDispatchMode):
    """Within the block, any host read of a tensor value raises `HostSyncError` naming the op.

        with NoHostSync():
            step()  # must be pure device work

    Reentrant-safe for nesting with other modes; not thread-safe (the Tensor methods are patched on
    the class, process-wide, for the duration of the block).
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _VALUE_READS:
            raise HostSyncError(f"host sync: {func} reads tensor values back to the host")
        if packet is aten.repeat_interleave and kwargs.get("output_size") is None:
            raise HostSyncError(f"host sync: {func} without output_size reads `repeats` to size its output")
        if packet in _MASK_INDEXING and _has_mask_index(args, kwargs):
            raise HostSyncError(f"host sync: {func} with a boolean mask (its nonzero sizes the result)")
        if packet in _CROSS_DEVICE_COPIES:
            crossing = _cross_device(func, args, kwargs)
            if crossing is not None:
                raise HostSyncError(f"host sync: {func} copies from {crossing[0]} to {crossing[1]}")
        return func(*args, **kwargs)

    def __enter__(self):
        self._saved = [(torch.Tensor, name, torch.Tensor.__dict__.get(name)) for name in _TENSOR_METHODS]
        for name in _TENSOR_METHODS:
            setattr(torch.Tensor, name, _refuse(f"Tensor.{name}"))
        sync_owners = [(torch.cuda, "synchronize")]
        sync_owners += [(cls, "synchronize") for cls in (torch.cuda.Stream, torch.cuda.Event)]
        for owner, name in sync_owners:
            self._saved.append((owner, name, owner.__dict__.get(name)))
            setattr(owner, name, _refuse(f"{getattr(owner, '__name__', owner)}.{name}"))
        self._factories = NoDeviceTensorFactory()
        try:
            self._factories.__enter__()
            return super().__enter__()
        except BaseException:
            self._restore()
            raise

    def __exit__(self, exc_type, exc, tb):
        try:
            return super().__exit__(exc_type, exc, tb)
        finally:
            self._restore()

    def _restore(self) -> None:
        factories, self._factories = getattr(self, "_factories", None), None
        if factories is not None:
            factories.__exit__(None, None, None)
        for owner, name, original in reversed(self._saved):
            if original is None:  # was inherited: drop our override
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._saved = []


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise HostSyncError(f"host sync: {what} reads a tensor value on the host or waits for the device")

    return refuse


__all__ = ["HostSyncError", "NoDeviceTensorFactory", "NoHostSync"]
