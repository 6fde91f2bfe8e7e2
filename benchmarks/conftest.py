"""pytest-benchmark configuration of the benchmark suite (`pytest benchmarks/`).

Options (besides pytest-benchmark's own `--benchmark-json`, `--benchmark-compare`, `--benchmark-disable`):
    --bench-size full|tiny      shapes: AutoGAN's (default with CUDA) or the CPU smoke test's (default without)
    --bench-compile auto|on|off torch.compile variants: auto = on with CUDA, off on a CPU
    --bench-compile-backend B   torch.compile backend (default inductor; the tests use aot_eager)
    --bench-budget-s S          session time budget: a variant starts only if its estimate fits
                                (default: $AUTOGAN_BENCH_BUDGET_S, else none)

Tests run in priority order (see `priority` marks): the eager / fused / graph variants of every row, then
the torch.compile variants (each starts only if its expected compile time fits the budget). A test still
running 5 s after the budget ran out is interrupted and recorded as skipped (`harness.Deadline`), so the
session ends and writes its results. With --benchmark-json the file is rewritten after every test
(`"complete": false` until the end), so a run cut short keeps every row it finished. After every test its
garbage, torch.compile's state (compile rows) and the CUDA allocator's cached blocks are released.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import time

import pytest
import torch

if not torch.cuda.is_available():
    # The Triton interpreter is not a benchmark: never inherit the kernel tests' TRITON_INTERPRET=1.
    os.environ.pop("TRITON_INTERPRET", None)

from autogan_fast.kernels import autoselect_choices

from .harness import SIZES, SKIPPED, Deadline, Settings, budget_from_env, release_memory
from .machine import machine_info as gather_machine_info


def pytest_addoption(parser):
    group = parser.getgroup("autogan-fast benchmarks")
    group.addoption("--bench-size", choices=SIZES, default=None,
                    help="full: AutoGAN's shapes (default with CUDA); tiny: the CPU smoke shapes (default without)")
    group.addoption("--bench-compile", choices=("auto", "on", "off"), default="auto",
                    help="torch.compile variants: auto = on with CUDA, off on a CPU")
    group.addoption("--bench-compile-backend", default="inductor", help="torch.compile backend of the compile variants")
    group.addoption("--bench-budget-s", type=float, default=None,
                    help="session time budget in seconds (default $AUTOGAN_BENCH_BUDGET_S, else unlimited)")


def pytest_configure(config):
    config.addinivalue_line("markers", "priority(n): run order of benchmark tests (lower first; default 0)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = config.getoption("--bench-size", default=None) or ("full" if device.type == "cuda" else "tiny")
    choice = config.getoption("--bench-compile", default="auto")
    compile_on = choice == "on" or (choice == "auto" and device.type == "cuda")
    reason = None
    if not compile_on:
        reason = ("--bench-compile off" if choice == "off"
                  else "torch.compile is off on a CPU by default (--bench-compile on)")
    budget = config.getoption("--bench-budget-s", default=None)
    timing = not (config.getoption("benchmark_disable", default=False)
                  and not config.getoption("benchmark_enable", default=False))
    config._autogan_bench = Settings(
        device=device, size=size, timing=timing, compile=compile_on, compile_skip_reason=reason,
        compile_backend=config.getoption("--bench-compile-backend", default="inductor"),
        budget_s=budget if budget is not None else budget_from_env())
    config._autogan_bench_partial = {}
    config._autogan_deadline = Deadline(config._autogan_bench)
    if size == "tiny" and device.type == "cpu":
        # Tiny shapes gain nothing from threads, and OpenMP threads spinning against another process on a
        # small CI machine slow every op down 100-fold.
        torch.set_num_threads(1)
    SKIPPED.clear()


def pytest_report_header(config):
    s = getattr(config, "_autogan_bench", None)
    if s is None:
        return None
    return (f"autogan-fast benchmarks: device {s.device}, size {s.size}, timing {'on' if s.timing else 'off'}, "
            f"compile {'on (' + s.compile_backend + ')' if s.compile else 'off'}, budget "
            f"{'none' if s.budget_s is None else f'{s.budget_s:g} s'}"
            + ("" if s.device.type == "cuda" else " -- CPU: a smoke test of the code, not a benchmark"))


@pytest.fixture(scope="session")
def settings(request) -> Settings:
    return request.config._autogan_bench


def pytest_collection_modifyitems(config, items):
    """Priority order (stable): lower `priority` marks first."""
    def priority(item) -> int:
        mark = item.get_closest_marker("priority")
        return mark.args[0] if mark else 0

    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (priority(item), order[id(item)]))


def pytest_benchmark_update_machine_info(config, machine_info):
    settings = getattr(config, "_autogan_bench", None)
    device = settings.device if settings else torch.device("cpu")
    machine_info.update(_machine(config, device))
    if settings is not None:
        machine_info["bench_settings"] = {
            "size": settings.size, "compile": settings.compile, "compile_backend": settings.compile_backend,
            "compile_mode": settings.compile_mode, "budget_s": settings.budget_s,
            "timer": "benchmarks.harness.synced_perf_counter (torch.cuda.synchronize, then time.perf_counter)",
        }
        machine_info["smoke_test_only"] = device.type != "cuda"


def _machine(config, device):
    cached = getattr(config, "_autogan_machine", None)
    if cached is None:
        cached = config._autogan_machine = gather_machine_info(device)
    return copy.deepcopy(cached)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add the rows of variants that could not run (`extra_info.skipped_reason`, no stats; their fullname
    ends in " (skipped)" so --benchmark-compare never pairs them with a timed row) and mark the file done."""
    output_json["benchmarks"].extend(copy.deepcopy(SKIPPED))
    output_json["projection"] = _projection(output_json["benchmarks"])
    # what `--kernels auto` chose per (op, shape, dtype, layout) in this run: the "which backend wins where" table
    output_json["kernel_choices"] = autoselect_choices()
    output_json["complete"] = "terminated" not in _CONFIG  # False: stopped by SIGTERM, the rows after it missing
    if "terminated" in _CONFIG:
        output_json["terminated_by_signal"] = _CONFIG["terminated"]
    settings = getattr(config, "_autogan_bench", None)
    if settings is not None:
        output_json["duration_s"] = round(settings.elapsed(), 1)
        if settings.device.type == "cuda":
            from .machine import nvml_snapshot

            output_json["machine_info"]["nvml_end"] = nvml_snapshot(settings.device)
    state = config._autogan_bench_partial
    if not state.get("final") and getattr(config.option, "benchmark_json", None) is not None:
        state["final"] = True  # the --benchmark-json file: drop the partial content written after each test
        fh = config.option.benchmark_json
        with contextlib.suppress(OSError, ValueError):
            fh.seek(0)
            fh.truncate()


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    """Rewrite the --benchmark-json file with every row so far (so a killed run keeps them)."""
    config = _CONFIG.get("config")
    if config is None:
        return
    fh = getattr(config.option, "benchmark_json", None)
    session = getattr(config, "_benchmarksession", None)
    settings = getattr(config, "_autogan_bench", None)
    if fh is None or session is None or settings is None or not settings.timing:
        return
    state = config._autogan_bench_partial
    try:
        if "machine" not in state:
            state["machine"] = session.get_machine_info()
            state["commit"] = config.hook.pytest_benchmark_generate_commit_info(config=config)
        out = config.hook.pytest_benchmark_generate_json(
            config=config, benchmarks=[b for b in session.benchmarks if b.stats], include_data=True,
            machine_info=state["machine"], commit_info=state["commit"])
        out["benchmarks"].extend(copy.deepcopy(SKIPPED))
        out.update(complete=False, duration_s=round(settings.elapsed(), 1), partial_written=time.time())
        data = json.dumps(out, indent=1, default=str).encode()
        fh.seek(0)
        fh.truncate()
        fh.write(data)
        fh.flush()
    except Exception as exc:  # a partial write must never fail the run
        print(f"benchmarks: partial results not written ({type(exc).__name__}: {exc})")


def _projection(benchmarks: list) -> dict:
    """The paper search projected from this run's stream and reward rows (benchmarks/projection.py)."""
    from .projection import project, rows_from_json

    return {v: p.as_dict() for v, p in project(rows_from_json(benchmarks)).items()}


def pytest_terminal_summary(terminalreporter, config):
    """Print the projected paper search of every stream variant beside eager's, from this run's rows."""
    session = getattr(config, "_benchmarksession", None)
    settings = getattr(config, "_autogan_bench", None)
    if session is None or settings is None or not settings.timing:
        return
    from .projection import project, rows_from_json, summary_lines

    entries = [b.as_dict(include_data=False) for b in session.benchmarks if b.stats] + copy.deepcopy(SKIPPED)
    projections = project(rows_from_json(entries))
    if projections:
        terminalreporter.write_sep("-", "projected paper search (benchmarks/projection.py; eager of this run)")
        for line in summary_lines(projections):
            terminalreporter.write_line(line)


_CONFIG: dict = {}


def _terminated(signum, frame):
    _CONFIG["terminated"] = signum
    raise KeyboardInterrupt(f"signal {signum} (a step timeout?)")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    _CONFIG["config"] = session.config
    _CONFIG.pop("terminated", None)
    deadline = getattr(session.config, "_autogan_deadline", None)
    if deadline is not None:
        deadline.arm()
    if getattr(session.config.option, "benchmark_json", None) is not None:
        # SIGTERM (gpu_check.sh's `timeout`) as Ctrl-C: pytest then stops and still writes the JSON file (its
        # sessionfinish runs), with every row done so far, instead of dying mid-row.
        with contextlib.suppress(ValueError, OSError):
            _CONFIG["sigterm"] = signal.signal(signal.SIGTERM, _terminated)


def pytest_unconfigure(config):
    previous = _CONFIG.pop("sigterm", None)  # after the JSON file is written
    if previous is not None:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    deadline = getattr(session.config, "_autogan_deadline", None)
    if deadline is not None:
        deadline.disarm()


def _watched(item):
    deadline = getattr(item.config, "_autogan_deadline", None)
    return deadline.watching() if deadline is not None else contextlib.nullcontext()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _watched(item):
        yield


@pytest.fixture(autouse=True)
def _release_after_row(request, settings):
    """Each row starts from the same device state: the previous row's memory and compiled code released."""
    yield
    if not getattr(request.node, "autogan_built_nothing", False):  # skipped before it built anything
        release_memory(settings.device, compiled="compile" in request.node.name)


@pytest.fixture(scope="session")
def gan_data(settings):
    """CIFAR-shaped synthetic uint8 images on the device (full: 50,000 x 32 px), shared by the GAN rows."""
    from .workloads import synthetic_data

    return synthetic_data(settings.size, settings.device)
