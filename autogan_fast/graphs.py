"""A bounded cache of captured CUDA graphs, one per (stage, architecture, step kind, batch shape).

The search picks a new generator architecture at every step, so the graph engine keeps one captured
graph per key in an LRU cache (`--graph-cache-size`); all graphs share one memory pool. A key seen
for the first time runs its step eagerly on a side stream (the warm-up: it IS that step, so nothing
is run twice; it also compiles and autotunes the Triton kernels, picks cuDNN algorithms and
creates optimizer state, none of which may happen inside a capture), then captures it; later
occurrences replay the graph. A capture that fails falls back to eager for that key, with one
warning per run.

The capture itself goes through a `CaptureBackend`: `CudaGraphBackend` on a GPU, and in the CPU tests
a recorder, so the cache logic (keys, LRU eviction, warm-up-then-capture order, fallback) is tested
without a GPU. A step function given to the cache must be pure device work over static buffers:
no host reads of device values, no Python-side state that differs between replays (host counters
are kept by the caller, outside the function).
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass

import torch

from .kernels import invalidate_weight_caches

Step = Callable[[], None]


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
    """torch.cuda.CUDAGraph capture into one shared memory pool; warm-up on a side stream."""

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
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            step()
        return graph.replay  # the bound method keeps the graph alive as long as the cache holds it

    def new_pool(self) -> None:
        self.pool = torch.cuda.graph_pool_handle()


@dataclass
class GraphStats:
    """What the cache did, for the run's log."""

    captures: int = 0  # graphs captured
    hits: int = 0  # replays of a cached graph
    warmups: int = 0  # first occurrences of a key (run eagerly, then captured)
    evictions: int = 0  # graphs dropped by the LRU bound
    fallbacks: int = 0  # keys whose capture failed and that run eagerly since
    eager_runs: int = 0  # runs of fallen-back keys
    capture_seconds: float = 0.0  # host time spent capturing (warm-ups excluded)

    @property
    def hit_rate(self) -> float:
        runs = self.hits + self.warmups + self.eager_runs
        return self.hits / runs if runs else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "hit_rate": self.hit_rate}


class GraphCache:
    """LRU cache of captured steps. `run(key, step)` runs the step for `key`: replay, or warm up + capture."""

    def __init__(self, backend: CaptureBackend, max_graphs: int):
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.backend = backend
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[Hashable, Step] = OrderedDict()
        self.failed: set[Hashable] = set()
        self.buffers: dict[Hashable, object] = {}  # static buffers the graphs address, for the cache's life
        self.stats = GraphStats()
        self._warned = False

    def run(self, key: Hashable, step: Step) -> None:
        replay = self.graphs.get(key)
        if replay is not None:
            self.graphs.move_to_end(key)
            self.stats.hits += 1
            replay()
            # the replay changed weights in place without bumping their autograd versions: caches keyed
            # on versions (the fused upsample-conv's phase weights) must not serve the next eager call
            invalidate_weight_caches()
            return
        if key in self.failed:
            self.stats.eager_runs += 1
            step()
            return
        self.stats.warmups += 1
        self.backend.warmup(step)  # the step itself, eagerly: this occurrence is done after it
        started = time.perf_counter()
        try:
            replay = self.backend.capture(step)
        except Exception as err:  # a capture error must not end a search: run this key eagerly from now on
            self.failed.add(key)
            self.stats.fallbacks += 1
            if not self._warned:
                self._warned = True
                warnings.warn(f"CUDA graph capture failed ({type(err).__name__}: {err}); running such steps "
                              f"eagerly", RuntimeWarning, stacklevel=2)
            return
        self.stats.capture_seconds += time.perf_counter() - started
        self.stats.captures += 1
        self.graphs[key] = replay
        if len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
            self.stats.evictions += 1

    def clear(self) -> None:
        """Drop every graph and the buffers they address (e.g. after the shared GAN is re-created)."""
        self.graphs.clear()
        self.failed.clear()
        self.buffers.clear()


def capture_backend(device: torch.device) -> CaptureBackend:
    """CUDA graphs on a CUDA device; elsewhere the eager base (the graph engine needs CUDA)."""
    return CudaGraphBackend(device) if device.type == "cuda" else CaptureBackend()
