"""The pieces every benchmark row shares: settings, the synchronizing timer, the time budget, timing a
row with pytest-benchmark and filling its `extra_info`, and recording a variant that cannot run.

Every row's `extra_info` holds: row, variant, label, flop (per call), tflops, peak_tflops,
peak_precision, peak_fraction, peak_memory_bytes, and where natural items_per_call / unit /
items_per_second, target, first_call_seconds; rows add their own fields (compile_seconds, captures,
graph_stats, spearman_vs_fp32, mean_step_seconds, capture_overhead_seconds, max_rel_err_vs_eager, ...). A variant
that cannot run gets `skipped_reason` and no timing (see `skip_row`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from .machine import peak_tflops

BUDGET_ENV = "AUTOGAN_BENCH_BUDGET_S"
# A test still running this long after the budget ran out is interrupted (`BudgetExceeded`), so the suite
# ends and writes its results file before the step's timeout kills it (gpu_check.sh leaves 30 s).
DEADLINE_GRACE_S = 5.0
DEADLINE_REPEAT_S = 5.0  # then again every this many seconds while that test runs (a swallowed interrupt)
# torch.compile rows: recompiles allowed per function before dynamo silently falls back to eager (default
# 8; a stream row recompiles once per architecture).
COMPILE_RECOMPILE_LIMIT = 256
SIZES = ("full", "tiny")
# Run order of the rows (the `priority` mark, lower first): what a GPU session most needs comes first,
# so a run cut short still has it. The stage-2 stream of the projection, then the fused ops, then the
# engine rows (shared-GAN unit, reward), then the end-to-end rows (the other stages' streams, derived
# training), then torch.compile (the shared-GAN unit's one-architecture row first: it carries a target).
PRIORITY_STREAM, PRIORITY_OPS, PRIORITY_ENGINE, PRIORITY_END_TO_END = -1, 0, 1, 2
PRIORITY_COMPILE_TARGET, PRIORITY_COMPILE = 4, 5
ROWS = ("sn", "upconv", "bilinear", "stats", "gan_unit", "reward", "stage_stream", "derived_training")

# Rows of variants that could not run, added to the JSON file by conftest's pytest_benchmark_update_json.
SKIPPED: list[dict[str, Any]] = []


class BudgetExceeded(Exception):
    """Raised into a test that is still running at the session's deadline (budget + DEADLINE_GRACE_S)."""


def synced_perf_counter() -> float:
    """pytest-benchmark's timer: `time.perf_counter` after the GPU has finished all queued work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Settings:
    """One benchmark session's choices (benchmarks/conftest.py builds it from the command line)."""

    device: torch.device
    size: str  # "full": AutoGAN's shapes (a GPU); "tiny": the CPU smoke shapes
    timing: bool  # False under --benchmark-disable: every row runs its calls once each, untimed
    compile: bool  # whether torch.compile variants run
    compile_skip_reason: str | None
    compile_backend: str = "inductor"
    budget_s: float | None = None  # the session's time budget (None: unlimited)
    started: float = field(default_factory=time.perf_counter)
    cache: dict[str, Any] = field(default_factory=dict)  # results rows share (fp32 rewards, medians, ...)
    compile_estimate_s: float = 75.0  # expected cost of one compiled GAN row; raised to the longest seen
    deadline_hit: bool = False  # set when `Deadline` interrupted a test (its failure is the budget's)

    @property
    def full(self) -> bool:
        return self.size == "full"

    @property
    def compile_mode(self) -> str | None:
        """reduce-overhead (CUDA graphs of the compiled code) with inductor on CUDA; the default otherwise."""
        if self.compile_backend != "inductor":
            return None
        return "reduce-overhead" if self.device.type == "cuda" else "default"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def budget_reason(self, estimate_s: float) -> str | None:
        """Why a part expected to take `estimate_s` may not start now (None: it fits the budget)."""
        if self.budget_s is None or self.elapsed() + estimate_s <= self.budget_s:
            return None
        return (f"time budget: {self.elapsed():.0f} s of {self.budget_s:.0f} s spent, this variant takes "
                f"~{estimate_s:.0f} s (rerun it alone with pytest -k)")


def new_info(row: str, variant: str, label: str, **extra: Any) -> dict[str, Any]:
    assert row in ROWS, row
    return {"row": row, "variant": variant, "label": label, **extra}


def skip_row(benchmark, request, info: dict[str, Any], reason: str) -> None:
    """Record the row with `skipped_reason` (it appears in the JSON without stats) and skip the test."""
    info = {**info, "skipped_reason": reason}
    benchmark.extra_info.update(info)
    benchmark.skipped = True  # no "fixture was not used" warning
    request.node.autogan_built_nothing = True  # conftest: nothing to release after this test
    SKIPPED.append(_skipped_entry(request.node, info))
    pytest.skip(reason)


def _skipped_entry(node, info: dict[str, Any]) -> dict[str, Any]:
    callspec = getattr(node, "callspec", None)
    return {
        "group": None, "name": node.name, "fullname": f"{node.nodeid} (skipped)",
        "params": None if callspec is None else {k: str(v) for k, v in callspec.params.items()},
        "param": None if callspec is None else callspec.id,
        "extra_info": info, "options": {}, "stats": None,
    }


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of one call, synchronized at both ends."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def calibrate(fn: Callable[[], Any], settings: Settings) -> tuple[int, int]:
    """(rounds, iterations) for a short op: blocks of back-to-back calls of >= 10 ms (1 ms tiny), ~0.25 s
    in all, at least 5 rounds. One call is timed to size them (after the caller's warm-up)."""
    seconds, _ = timed(fn, settings.device)
    block, total = (0.01, 0.25) if settings.full else (0.001, 0.005)
    iterations = max(1, math.ceil(block / max(seconds, 1e-7)))
    rounds = min(200, max(5, math.ceil(total / (iterations * max(seconds, 1e-7)))))
    return (rounds, iterations) if settings.timing else (1, 1)


def measure(benchmark, settings: Settings, info: dict[str, Any], fn: Callable[[], Any], *, rounds: int,
            warmup_rounds: int = 0, iterations: int = 1, flop: float | None = None, peak_precision: str = "tf32",
            items: float | None = None, unit: str | None = None) -> float | None:
    """Time `fn` (pedantic: `warmup_rounds` untimed rounds, then `rounds` rounds of `iterations` calls, the
    GPU synchronized at both ends of each round) and fill `info` into the benchmark's extra_info. Under
    --benchmark-disable every call still runs once per round, untimed. Returns the median seconds per call."""
    device = settings.device
    benchmark.extra_info.update(info)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if settings.timing:
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=iterations)
        median = benchmark.stats.stats.median
    else:
        for _ in range((warmup_rounds + rounds) * iterations - 1):
            fn()
        benchmark.pedantic(fn)  # disabled: one untimed call (and the fixture counts as used)
        median = None
    sync(device)
    peaks = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    peak = None if peaks is None else peaks.get(peak_precision)
    tflops = flop / median / 1e12 if flop and median else None
    info.update(
        flop=flop, tflops=tflops, peak_precision=peak_precision, peak_tflops=peak,
        peak_fraction=tflops / peak if tflops and peak else None,
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        rounds=rounds if settings.timing else None, iterations=iterations,
    )
    if items is not None:
        info.update(items_per_call=items, unit=unit, items_per_second=items / median if median else None)
    benchmark.extra_info.update(info)
    return median


def budget_from_env() -> float | None:
    raw = os.environ.get(BUDGET_ENV)
    return float(raw) if raw else None


def record_failure(benchmark, request, info: dict[str, Any], exc: BaseException) -> None:
    """A variant that raised: its row is kept with the error as `skipped_reason`; the caller re-raises
    (a failing fused variant is a bug) or skips (a torch.compile failure is a result)."""
    settings = getattr(request.config, "_autogan_bench", None)
    if isinstance(exc, BudgetExceeded) or (settings is not None and settings.deadline_hit):
        reason = f"time budget: interrupted at the deadline ({first_line(exc)})"
    else:
        reason = f"failed: {first_line(exc)}"
    info = {**info, "skipped_reason": reason}
    benchmark.extra_info.update(info)
    benchmark.has_error = True  # keep the partial pytest-benchmark entry out of the JSON
    benchmark.skipped = True
    SKIPPED.append(_skipped_entry(request.node, info))


def variant_skip_reason(variant: str, settings: Settings, estimate_s: float | None = None) -> str | None:
    """Why `variant` cannot run here (None: it can): CUDA-only variants on a CPU, compile switched off,
    or the time budget (a full-size estimate in seconds on an H100)."""
    if variant in ("triton", "graph"):
        if settings.device.type != "cuda":
            return ("needs CUDA (Triton kernels and CUDA graphs; the Triton interpreter is not a benchmark)"
                    if variant == "triton" else "needs CUDA (CUDA graphs)")
        from autogan_fast.kernels import triton_available

        if not triton_available():
            return "triton is not importable"
    if variant == "compile" and not settings.compile:
        return settings.compile_skip_reason
    if estimate_s is not None and settings.full:
        return settings.budget_reason(estimate_s)
    return None


def row_failed(benchmark, request, info: dict[str, Any], exc: BaseException, variant: str) -> None:
    """A row that raised: recorded (`record_failure`), then skipped when that is a result (a torch.compile
    failure, or the deadline), else re-raised (a failing eager / fused / graph variant is a bug)."""
    record_failure(benchmark, request, info, exc)
    settings = getattr(request.config, "_autogan_bench", None)
    if isinstance(exc, BudgetExceeded) or (settings is not None and settings.deadline_hit):
        # (torch.compile wraps the interrupt in its own exception types: any failure after one is the budget's)
        pytest.skip(f"time budget: interrupted at the deadline ({first_line(exc)})")
    if variant == "compile":
        pytest.skip(f"torch.compile failed: {first_line(exc)}")
    raise exc


def fresh_compile_state() -> None:
    """Before a torch.compile row: forget every earlier row's compiled code, guards and recompile counts
    (and, on CUDA, the CUDA-graph trees of mode reduce-overhead), so one row cannot hit dynamo's
    recompile limit (silently running eager) or replay state because of another; raise that limit."""
    import torch._dynamo

    torch._dynamo.reset()
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if isinstance(getattr(config, name, None), int):
            with contextlib.suppress(Exception):
                setattr(config, name, max(getattr(config, name), COMPILE_RECOMPILE_LIMIT))


def release_memory(device: torch.device, compiled: bool = False) -> None:
    """After a row: drop its garbage (the reward pipeline's step closures make reference cycles that hold
    captured graphs and buffers), torch.compile's state after a compile row, and the cached blocks.
    Never raises (after a CUDA error every call would)."""
    if device.type != "cuda":
        return
    with contextlib.suppress(Exception):
        gc.collect()
        if compiled:
            import torch._dynamo

            torch._dynamo.reset()
            gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


class Deadline:
    """Interrupts a test still running DEADLINE_GRACE_S after the session's budget ran out.

    The budget only decides whether a variant starts (from its estimate); an estimate that is far off
    (a cold torch.compile, a slow capture) would otherwise run into gpu_check.sh's step timeout, which
    kills pytest before it writes its final results. SIGALRM raises `BudgetExceeded` in the main thread,
    only while a test's call runs (`active`), never in pytest's own reporting or JSON writing;
    again every DEADLINE_REPEAT_S while the same test runs, in case code that catches every Exception
    (a graph capture's fallback) swallowed it. The rows record it as `skipped_reason` and skip.
    """

    def __init__(self, settings: Settings, grace_s: float = DEADLINE_GRACE_S, repeat_s: float = DEADLINE_REPEAT_S):
        self.settings = settings
        self.grace_s, self.repeat_s = grace_s, repeat_s
        self.active = False
        self.armed = False
        self._previous = None

    @property
    def at(self) -> float | None:
        """Seconds after `settings.started` the deadline falls (None: no budget)."""
        b = self.settings.budget_s
        return None if b is None else b + self.grace_s

    def arm(self) -> None:
        at = self.at
        if at is None or self.armed or not hasattr(signal, "setitimer"):
            return
        try:
            self._previous = signal.signal(signal.SIGALRM, self._handler)
        except ValueError:  # not the main thread: no deadline
            return
        signal.setitimer(signal.ITIMER_REAL, max(at - self.settings.elapsed(), 0.01), self.repeat_s)
        self.armed = True

    def disarm(self) -> None:
        if not self.armed:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGALRM, self._previous or signal.SIG_DFL)
        self.armed = False

    @contextlib.contextmanager
    def watching(self):
        """The span a deadline may interrupt (a test's call: the rows build their state there)."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def _handler(self, signum, frame) -> None:
        if self.active and self.at is not None and self.settings.elapsed() >= self.at:
            self.settings.deadline_hit = True
            raise BudgetExceeded(f"still running {self.settings.elapsed():.0f} s into a "
                                 f"{self.settings.budget_s:.0f} s budget: interrupted so the results are written")
