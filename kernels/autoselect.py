"""`auto` that never loses: time each fused op against its reference once per key, keep the faster.

A fused kernel is not faster everywhere (the nearest-upsample + conv ran at 0.17-0.40x cuDNN on one
H200), so under the `auto` backend, on the tensors Triton runs on (CUDA), an op asks this registry
before launching: the first time a key (op, device, shapes, dtype, memory format, autocast dtype,
the op's own options such as flags or whether a backward follows) is seen, the fused call and the
reference are each run `WARMUP_CALLS` times (compiles, Triton autotuning and cuDNN's benchmark
happen there) and then timed over `TIMED_CALLS` calls with CUDA events; the faster is remembered for
the life of the process and every later call of the key dispatches to it without timing. Forced
`triton` / `torch` keep their meaning (no timing); CPU tensors under `auto` run the reference,
untimed, as before.

The op supplies the two candidates as zero-argument callables over scratch copies of its inputs
(the timing must not advance a spectral norm's u, v or add into an accumulator twice) that run the
forward and, when the real call will be differentiated, its backward too: the choice is made once
per key at forward time, and the autograd function it picks carries the backward, so the forward and
backward of one call never mix backends.

Capture. Timing syncs the host, which a CUDA-graph capture forbids; the engines run every new key
eagerly before capturing it (engines/cuda_graphs.py), so the timing happens in that warm-up. A key
first seen while a stream is capturing is therefore a bug of the caller. It is not raised: an
exception inside a capture leaves CUDA's generator in capture mode and ends the run, while the
reference is always correct and capture-safe. The key runs the reference, the choice is recorded
as untimed with the reason (so the run's log shows the bug) and a warning is printed; later calls of
the key keep the reference, so eager calls and the captured graph agree. While `torch.compile`
traces, nothing is timed and the fused op is kept (the custom op is what the compiled graph holds).

Injectable for the CPU tests: the timer (`timer(name, fn) -> seconds per call`), the predicate that
says whether Triton may run under `auto` (default: Triton installed and every tensor on CUDA) and
the capture test; see `autoselect_override`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch

from . import _dispatch
from ._dispatch import get_backend, use_triton

__all__ = [
    "KernelChoice",
    "autoselect_choices",
    "autoselect_override",
    "backward_follows",
    "cuda_event_timer",
    "keep_fused",
    "reset_autoselect",
    "timed_call",
    "use_fused",
]

WARMUP_CALLS = 3  # untimed calls first: Triton compile + autotune, cuDNN benchmark, allocator growth
TIMED_CALLS = 10  # calls timed between two CUDA events; the mean per call is compared

Timer = Callable[[str, Callable[[], object]], float]  # (candidate name, one call) -> seconds per call


def cuda_event_timer(name: str, fn: Callable[[], object]) -> float:
    """Seconds per call of `fn` on the current CUDA stream: warm-up calls, then CUDA events around
    TIMED_CALLS calls. Syncs the host (once per key, outside any capture)."""
    for _ in range(WARMUP_CALLS):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(TIMED_CALLS):
        fn()
    end.record()
    end.synchronize()  # host sync: timing, once per key
    return start.elapsed_time(end) / 1e3 / TIMED_CALLS


def _cuda_capturing(tensors: Sequence[torch.Tensor]) -> bool:
    return any(t.is_cuda for t in tensors) and torch.cuda.is_current_stream_capturing()


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """The backend one key runs under `auto`, and why."""

    op: str  # the op's name, e.g. "upsample_conv2d"
    device: str  # the tensors' device, e.g. "cuda:0"
    shapes: tuple[tuple[int, ...] | None, ...]  # shape of each tensor argument in the op's order (None: not given)
    dtype: str  # dtype of the first tensor argument
    memory_format: str  # of the first tensor argument: contiguous, channels_last or strided
    autocast: str | None  # autocast dtype on the device when the call was made, else None
    options: tuple[tuple[str, object], ...]  # the op's own key fields (flags, backward or not)
    backend: str  # what the key runs: "triton" (the fused kernel) or "torch" (the reference)
    fused_seconds: float | None  # seconds per fused call, None when not timed
    reference_seconds: float | None  # seconds per reference call, None when not timed
    note: str  # "timed", or why it was not

    def as_dict(self) -> dict:
        """JSON-ready: for the run's log.jsonl and result.json."""
        out = dataclasses.asdict(self)
        out["shapes"] = [None if s is None else list(s) for s in self.shapes]
        out["options"] = dict(self.options)
        return out


_choices: dict[tuple, KernelChoice] = {}  # key -> choice, in the order keys were first seen
_timer: Timer = cuda_event_timer
_capturing: Callable[[Sequence[torch.Tensor]], bool] = _cuda_capturing


def _memory_format(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


def _autocast_dtype(device: torch.device) -> str | None:
    if not torch.is_autocast_enabled(device.type):
        return None
    return str(torch.get_autocast_dtype(device.type))


def _key(op: str, tensors: Sequence[torch.Tensor | None], options: dict[str, object]) -> tuple:
    first = next(t for t in tensors if t is not None)
    shapes = tuple(None if t is None else tuple(t.shape) for t in tensors)
    return (op, str(first.device), shapes, str(first.dtype), _memory_format(first), _autocast_dtype(first.device),
            tuple(sorted(options.items())))


def backward_follows(tensors: Sequence[torch.Tensor | None]) -> bool:
    """Whether the call being made will be differentiated (grad on, some input requires it): a key field,
    as the timing then includes the backward, another cost."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def keep_fused(op: str, tensors: Sequence[torch.Tensor | None], fused: Callable[[], object],
               reference: Callable[[], object], options: dict[str, object] | None = None) -> bool:
    """After `use_triton` said the fused kernel may run: whether this call should run it.

    Forced `triton`: always. `auto`: the remembered choice of the call's key, timed (`fused` against
    `reference`, see the header) the first time the key is seen. `fused` / `reference` run one whole
    call each (forward, and backward when the real call will have one) on scratch copies.
    """
    if get_backend() != "auto":
        return True
    if torch.compiler.is_compiling():  # no timing while tracing; the compiled graph holds the custom op
        return True
    key = _key(op, tensors, options or {})
    choice = _choices.get(key)
    if choice is None:
        choice = _choose(key, [t for t in tensors if t is not None], fused, reference)
        _choices[key] = choice
    return choice.backend == "triton"


def _choose(key: tuple, tensors: Sequence[torch.Tensor], fused: Callable[[], object],
            reference: Callable[[], object]) -> KernelChoice:
    op, device, shapes, dtype, memory_format, autocast, options = key
    fields = {"op": op, "device": device, "shapes": shapes, "dtype": dtype, "memory_format": memory_format,
              "autocast": autocast, "options": options}
    if _capturing(tensors):
        note = "first seen inside a CUDA-graph capture: not timed, the reference runs (warm the key up eagerly)"
        warnings.warn(f"kernels auto: {op} {shapes} {note}", RuntimeWarning, stacklevel=3)
        return KernelChoice(**fields, backend="torch", fused_seconds=None, reference_seconds=None, note=note)
    fused_seconds = _timer("triton", fused)
    reference_seconds = _timer("torch", reference)
    backend = "triton" if fused_seconds < reference_seconds else "torch"  # a tie keeps the reference
    return KernelChoice(**fields, backend=backend, fused_seconds=fused_seconds, reference_seconds=reference_seconds,
                        note="timed")


def use_fused(op: str, tensors: Sequence[torch.Tensor | None], fused: Callable[[], object],
              reference: Callable[[], object], options: dict[str, object] | None = None) -> bool:
    """`use_triton(*tensors)` and then `keep_fused(...)`: the one-line dispatch for an op whose only
    condition is the device (forced `triton` still raises where it cannot run)."""
    return use_triton(*tensors) and keep_fused(op, tensors, fused, reference, options)


def autoselect_choices() -> list[dict]:
    """Every choice made so far in this process, in the order the keys were first seen (JSON-ready)."""
    return [choice.as_dict() for choice in _choices.values()]


def reset_autoselect() -> None:
    """Forget every choice (the next call of each key times again)."""
    _choices.clear()


@contextlib.contextmanager
def autoselect_override(*, timer: Timer | None = None,
                        can_run: Callable[[Sequence[torch.Tensor]], bool] | None = None,
                        capturing: Callable[[Sequence[torch.Tensor]], bool] | None = None) -> Iterator[None]:
    """For tests: replace the timer, the `auto` predicate (whether Triton may run on these tensors) and
    the capture test; the choices start empty and are restored on exit."""
    global _timer, _capturing, _choices
    saved = (_timer, _capturing, _choices, _dispatch._auto_runs_triton)
    _timer = timer or _timer
    _capturing = capturing or _capturing
    _choices = {}
    if can_run is not None:
        _dispatch._auto_runs_triton = can_run
    try:
        yield
    finally:
        _timer, _capturing, _choices, _dispatch._auto_runs_triton = saved


def timed_call(fn: Callable[..., object], *args: object, **kwargs: object) -> Callable[[], None]:
    """A candidate for `keep_fused`: `fn(*args, **kwargs)` on detached views of the tensor arguments
    (requires_grad kept when grad is enabled), then the backward of its outputs when they need one.
    Only for ops that do not modify their inputs (copy those first). Building it is one closure: the
    views are made only when it runs (it runs only when a key is timed)."""

    def call() -> None:
        grad = torch.is_grad_enabled()

        def leaf(value: object) -> object:
            if isinstance(value, torch.Tensor):
                return value.detach().requires_grad_(grad and value.requires_grad)
            if isinstance(value, (list, tuple)):
                return type(value)(leaf(v) for v in value)
            return value

        out = fn(*(leaf(a) for a in args), **{k: leaf(v) for k, v in kwargs.items()})
        outs = [o for o in (out if isinstance(out, (list, tuple)) else [out])
                if isinstance(o, torch.Tensor) and o.requires_grad]
        if outs:
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return call
