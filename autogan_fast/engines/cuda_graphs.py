"""A bounded cache of captured CUDA graphs, one per (stage, architecture, step kind, batch shape).

The search picks a new generator architecture at every step, so the graph engine keeps one captured
graph per key (`--graph-cache-size`, by default the current stage's whole key space). A key seen for
the first time runs its step eagerly on the cache's own stream (the warm-up: it IS that step, so
nothing is run twice; it also compiles and autotunes the Triton kernels, picks cuDNN algorithms and
creates optimizer state, none of which may happen inside a capture), then captures it; later
occurrences replay the graph.

Three rules, each for a failure seen in PyTorch's graph machinery:
  - Capture is `CUDAGraph.capture_begin(pool=...)` / `capture_end()` on the backend's stream, not the
    `torch.cuda.graph` context, whose entry synchronizes the device and empties the allocator cache:
    paid at every miss, that would stall a search that captures hundreds of graphs per stage.
  - Graphs are never destroyed one by one. Destroying a graph releases the cuBLAS workspace of the
    stream it was captured on, and that workspace's address is baked into every other graph captured
    on that stream (pytorch/pytorch#193402: replays then fault). So a full cache is flushed whole (every
    graph dropped, a fresh memory pool), and every cache owns its backend, hence its stream: flushing
    one cache never touches another's graphs.
  - A failed capture ends the run (`GraphCaptureError`, one line suggesting `--engine eager`). A capture
    that throws before `capture_end` leaves CUDA's default generator in capture mode (the next random
    draw raises "Offset increment outside graph capture") and the pool's use count held, so falling
    back to eager in the same process is unsound. A start-up probe could not promise that every later
    key captures (each architecture is a new graph), so the error is raised where the failure happens;
    the run's last checkpoint is intact and `--resume DIR --engine eager` continues it.

The capture itself goes through a `CaptureBackend`: `CudaGraphBackend` on a GPU, and in the CPU tests
a recorder, so the cache logic (keys, flushes, warm-up-then-capture order, errors) is tested without
a GPU. A step function given to the cache must be pure device work over static buffers: no host reads
of device values, no Python-side state that differs between replays (host counters are kept by the
caller, outside the function).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass

import torch

from ..errors import UsageError
from ..kernels import invalidate_weight_caches

Step = Callable[[], None]


class GraphCaptureError(UsageError):
    """A CUDA-graph capture failed; the process must not go on capturing (see the module header)."""


class CaptureBackend:
    """How a step is warmed up and captured; this base runs everything eagerly (no graphs)."""

    def warmup(self, step: Step) -> None:
        """Run `step` once for real before its capture."""
        step()

    def capture(self, step: Step) -> Step:
        """Record `step`; returns what replays it."""
        return step

    def new_pool(self) -> None:
        """Start a fresh memory pool for later captures (after every graph of the old one is dropped)."""


class CudaGraphBackend(CaptureBackend):
    """`torch.cuda.CUDAGraph` capture into one memory pool on this backend's own stream.

    One backend serves one `GraphCache`: its stream is the capture stream of that cache's graphs only.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(device)  # capture and warm-up must not run on the default stream

    def warmup(self, step: Step) -> None:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream), warnings.catch_warnings():
            # capturable Adam warns once when it steps uncaptured: here that is the point (the warm-up)
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            step()
        current.wait_stream(self.stream)

    def capture(self, step: Step) -> Step:
        graph = torch.cuda.CUDAGraph()
        # No synchronize / empty_cache (what `torch.cuda.graph` adds): the warm-up just ran on this
        # stream, and the allocator's cached blocks are the pool's to reuse, not to hand back.
        with torch.cuda.stream(self.stream):
            graph.capture_begin(pool=self.pool)
            try:
                step()
            except BaseException:
                with contextlib.suppress(Exception):  # leave the stream's capture mode where CUDA lets us
                    graph.capture_end()
                raise
            graph.capture_end()
        return graph.replay  # the bound method keeps the graph alive as long as the cache holds it

    def new_pool(self) -> None:
        self.pool = torch.cuda.graph_pool_handle()


@dataclass
class GraphStats:
    """What the cache did, for the run's log."""

    captures: int = 0  # graphs captured
    hits: int = 0  # replays of a cached graph
    warmups: int = 0  # first occurrences of a key (run eagerly, then captured)
    flushes: int = 0  # times the full cache dropped every graph at once
    capture_seconds: float = 0.0  # host time spent capturing (warm-ups excluded)

    @property
    def hit_rate(self) -> float:
        runs = self.hits + self.warmups
        return self.hits / runs if runs else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "hit_rate": self.hit_rate}


class GraphCache:
    """Captured steps by key. `run(key, step)` runs the step for `key`: replay, or warm up + capture.

    Holds at most `max_graphs` graphs; a new key when full flushes the whole cache first (never one
    graph at a time: see the module header). `backend` must not be shared with another cache.
    """

    def __init__(self, backend: CaptureBackend, max_graphs: int):
        self.backend = backend
        self.max_graphs = 0
        self.resize(max_graphs)
        self.graphs: dict[Hashable, Step] = {}
        self.buffers: dict[Hashable, object] = {}  # static buffers the graphs address, for the cache's life
        self.stats = GraphStats()

    def resize(self, max_graphs: int) -> None:
        """Change the bound; takes effect at the next new key (a cache above it is flushed then)."""
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.max_graphs = max_graphs

    def run(self, key: Hashable, step: Step) -> None:
        replay = self.graphs.get(key)
        if replay is not None:
            self.stats.hits += 1
            replay()
            # the replay changed weights in place without bumping their autograd versions: caches keyed
            # on versions (the fused upsample-conv's phase weights) must not serve the next eager call
            invalidate_weight_caches()
            return
        if len(self.graphs) >= self.max_graphs:
            self.flush()
            self.stats.flushes += 1
        self.stats.warmups += 1
        self.backend.warmup(step)  # the step itself, eagerly: this occurrence is done after it
        started = time.perf_counter()
        try:
            replay = self.backend.capture(step)
        except Exception as err:
            detail = (str(err).strip().splitlines() or [""])[0]
            raise GraphCaptureError(
                f"CUDA graph capture of step {key!r} failed ({type(err).__name__}: {detail}); a failed "
                f"capture leaves CUDA's random generator unusable in this process, so the run stops here: "
                f"run it with --engine eager (a search or train resumes so: --resume DIR --engine eager)"
            ) from err
        self.stats.capture_seconds += time.perf_counter() - started
        self.stats.captures += 1
        self.graphs[key] = replay

    def flush(self) -> None:
        """Drop every graph at once and start a fresh pool; the static buffers stay (later captures
        address them again)."""
        self.graphs.clear()
        self.backend.new_pool()  # every graph of the old pool is gone with this cache's graphs

    def clear(self) -> None:
        """Drop every graph and the buffers they address (e.g. after the shared GAN is re-created)."""
        self.flush()
        self.buffers.clear()


def capture_backend(device: torch.device) -> CaptureBackend:
    """A new backend for one cache: CUDA graphs on a CUDA device; elsewhere the eager base (the graph
    engine needs CUDA)."""
    return CudaGraphBackend(device) if device.type == "cuda" else CaptureBackend()
