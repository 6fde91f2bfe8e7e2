"""Time every fused op against eager PyTorch and torch.compile; write one results file per machine.

    python -m benchmarks.run --device cuda                # every op at the issue-4 shapes (GPU session)
    python -m benchmarks.run --quick --device cpu         # tiny shapes, a few seconds: keeps this script working
    python -m benchmarks.run --ops sn,upconv --out benchmarks/results/h100-sn.json

For each op and shape, up to three variants, each timed forward and forward+backward (where the op has
a backward):

    triton   the fused Triton path, `use_backend("triton")`; CUDA only (the interpreter is not a benchmark)
    eager    the literal PyTorch ops, `use_backend("torch")`: `torch.nn.utils.spectral_norm` hooks of the
             discriminator's 11 layers; `F.interpolate(nearest)` + cuDNN `F.conv2d`; the float64 formulas
             of `inception_stats_update_ref` through `InceptionStats.update`
    compile  `torch.compile(mode="default", dynamic=False)` of the eager reference, on 5 shapes: SN df 64 and
             128, upsample+conv batch 64 and 128 at 16->32 px, Inception stats batch 500

Timing: `torch.utils.benchmark.Timer.blocked_autorange` after warm-up calls. It synchronizes the device
around each block of back-to-back calls, so host launch overhead counts the way it does in an eager
training step. Median and IQR over blocks, in microseconds. The forward runs with autograd recording
(inputs require grad), as in a training step; forward+backward is `torch.autograd.grad` of the outputs
with fixed random output gradients. Every non-eager variant's first output is checked against eager's
(max relative error recorded): a fast wrong kernel is not a result.

Expected duration of the full `--device cuda` run on one H100: about 2-3 minutes, most of it the
torch.compile warm-ups (5 compiled shapes, inductor, fresh cache) and the Triton JIT; an estimate, not yet
measured. Triton and eager rows of every shape run first; compile rows run last, each started only when it
can finish within `--max-seconds` (default 150) by the longest compile row so far (first guess 45 s);
the others are skipped with the reason recorded. The results file is rewritten atomically
after every row, so a run cut short still leaves the rows it finished (`"complete": false`).
`--quick --device cpu` takes a few seconds and skips the compile rows unless `--compile on`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm as TorchSpectralNorm
from torch.utils import benchmark

from autogan_fast.kernels import (
    InceptionStats,
    SpectralNormGroup,
    inception_stats_update_ref,
    spectral_norm,
    spectral_norm_weight_ref,
    triton_available,
    upsample_conv2d,
    upsample_conv2d_ref,
    use_backend,
)
from autogan_fast.kernels.inception_stats import InceptionTotals
from autogan_fast.models.discriminator import STAGE_BLOCKS, Discriminator
from autogan_fast.run_dir import write_json

OPS = ("sn", "upconv", "stats")
VARIANTS = ("eager", "triton", "compile")  # eager first: the others' speedups and error checks need it
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = 1

# Issue 4's speed targets: min speedup of the triton row over the eager row, on one timing.
SN_TARGET = 5.0  # grouped SN of the whole discriminator vs torch.nn.utils.spectral_norm, fwd+bwd
UPCONV_TARGET = 1.5  # upsample + conv fwd+bwd vs interpolate + cuDNN conv, 16->32 px, 128 ch, batch 64 / 128
STATS_TARGET = 3.0  # Inception stats update vs eager torch float64, batch 100 / 250 / 500


# ---------------------------------------------------------------------------------------------
# Cases: one op at one shape; `build(variant)` gives fresh state for that variant.


@dataclass
class Bench:
    """The callables one variant is timed with."""

    fwd: Callable[[], Any]
    fwd_bwd: Callable[[], Any] | None  # None: the op has no backward


@dataclass
class Case:
    op: str
    label: str  # short human form of the shape, for the table
    shape: dict[str, Any]  # the shape as recorded in the results
    build: Callable[[str], Bench]
    flatten: Callable[[Any], torch.Tensor]  # a first output -> 1-D float64, for the cross-check
    target: float | None = None  # min speedup of triton over eager on `metric`; None: extra row
    metric: str = "fwd_bwd_us"
    compile: bool = False  # whether the compile row runs (compile warm-ups cost most of the budget)
    eager_out: torch.Tensor | None = field(default=None, repr=False)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _compile(fn: Callable, backend: str) -> Callable:
    """The compile rows: default mode (no max-autotune), one static-shape graph per case."""
    return torch.compile(fn, mode="default" if backend == "inductor" else None, dynamic=False, backend=backend)


def _sn_ref_all(weights, us, vs):
    """torch.nn.utils.spectral_norm's compute_weight for every layer (the graph torch.compile gets)."""
    return [spectral_norm_weight_ref(w, u, v, 1, 1e-12, True) for w, u, v in zip(weights, us, vs, strict=True)]


def _torch_sn_hook(module: nn.Module):
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, TorchSpectralNorm):
            return hook
    raise RuntimeError(f"{type(module).__name__} has no torch spectral_norm hook")


def sn_case(df: int, device: torch.device, *, target: float | None, compile_row: bool,
            compile_backend: str = "inductor") -> Case:
    """Every SN layer of AutoGAN's discriminator at its last stage (11 layers), normalized once."""
    torch.manual_seed(0)
    disc = Discriminator(df).to(device)
    layers = [m for block in disc.stage_modules(len(STAGE_BLOCKS) - 1) for m in block.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    shapes = [list(m.weight.shape) for m in layers]

    def build(variant: str) -> Bench:
        mods = copy.deepcopy(layers)
        torch.manual_seed(1)  # both spectral_norm functions draw u, v with the same RNG calls
        if variant == "triton":
            for m in mods:
                spectral_norm(m)
            group = SpectralNormGroup(mods)
            fwd = lambda: group.update(training=True)
        else:
            for m in mods:
                torch.nn.utils.spectral_norm(m)
            hooks = [_torch_sn_hook(m) for m in mods]
            if variant == "eager":
                def fwd():
                    for m, hook in zip(mods, hooks, strict=True):
                        hook(m, None)  # what the pre-hook does before each module forward
                    return [m.weight for m in mods]
            else:
                compiled = _compile(_sn_ref_all, compile_backend)
                ws, us, vs = ([getattr(m, name) for m in mods] for name in ("weight_orig", "weight_u", "weight_v"))
                fwd = lambda: compiled(ws, us, vs)
        params = [m.weight_orig for m in mods]
        gen = _generator(device, 2)
        grads = [torch.randn(p.shape, device=device, generator=gen) for p in params]
        return Bench(fwd, lambda: torch.autograd.grad(fwd(), params, grads))

    return Case("sn", f"D df={df}, {len(layers)} layers", {"df": df, "layers": shapes}, build,
                lambda out: torch.cat([w.detach().reshape(-1) for w in out]).double(),
                target=target, compile=compile_row)


def upconv_case(n: int, c: int, h: int, device: torch.device, *, target: float | None, compile_row: bool,
                compile_backend: str = "inductor") -> Case:
    """y = conv3x3(nearest_x2(x)) + bias, C -> C channels, h -> 2h pixels."""

    def build(variant: str) -> Bench:
        gen = _generator(device, 0)
        x = torch.randn(n, c, h, h, device=device, generator=gen).requires_grad_()
        w = (torch.randn(c, c, 3, 3, device=device, generator=gen) / (3 * math.sqrt(c))).requires_grad_()
        b = torch.randn(c, device=device, generator=gen).requires_grad_()
        gy = torch.randn(n, c, 2 * h, 2 * h, device=device, generator=gen)
        if variant == "triton":
            fwd = lambda: upsample_conv2d(x, w, b)
        elif variant == "eager":
            fwd = lambda: upsample_conv2d_ref(x, w, b)
        else:
            compiled = _compile(upsample_conv2d_ref, compile_backend)
            fwd = lambda: compiled(x, w, b)
        return Bench(fwd, lambda: torch.autograd.grad(fwd(), (x, w, b), gy))

    return Case("upconv", f"N={n} C={c} {h}->{2 * h}px", {"batch": n, "channels": c, "in_px": h, "out_px": 2 * h},
                build, lambda y: y.detach().reshape(-1).double(), target=target, compile=compile_row)


def stats_case(b: int, f: int, c: int, device: torch.device, *, target: float | None, compile_row: bool,
               num_images: int = 5000, splits: int = 10, compile_backend: str = "inductor") -> Case:
    """One `InceptionStats.update` of B images; the batch straddles an IS split border, as it can in use."""
    offset = num_images // splits - b // 2  # image index of row 0

    def build(variant: str) -> Bench:
        gen = _generator(device, 0)
        features = torch.relu(torch.randn(b, f, device=device, generator=gen) + 0.5)  # pool features are >= 0
        logits = torch.randn(b, c, device=device, generator=gen) * 4
        if variant == "compile":
            kw = {"dtype": torch.float64, "device": device}
            totals = InceptionTotals(torch.zeros(f, **kw), torch.zeros(f, **kw), torch.zeros(f, f, **kw),
                                     torch.zeros(splits, c, **kw), torch.zeros(splits, **kw))
            compiled = _compile(inception_stats_update_ref, compile_backend)
            fwd = lambda: compiled(features, logits, totals, offset, num_images)
        else:
            stats = InceptionStats(num_images, f, c, splits, device=device)

            def fwd():
                stats.num_seen = offset  # reuse the accumulator: the same images again, at the same place
                stats.update(features, logits)
                return stats.totals
        return Bench(fwd, None)

    def flatten(t: InceptionTotals) -> torch.Tensor:
        # the kernel keeps X^T X on and above the diagonal only
        return torch.cat([t.feat_sum, torch.triu(t.xtx).reshape(-1), t.p_sum.reshape(-1), t.plogp_sum]).double()

    return Case("stats", f"B={b} F={f} C={c}", {"batch": b, "features": f, "classes": c, "splits": splits,
                                                  "num_images": num_images, "row_offset": offset},
                build, flatten, target=target, metric="fwd_us", compile=compile_row)


def build_cases(ops: list[str], device: torch.device, quick: bool, compile_backend: str = "inductor") -> list[Case]:
    """The issue-4 shapes (targets on the first rows of each op), or tiny ones for --quick."""
    cases: list[Case] = []
    if "sn" in ops:
        for df in (8,) if quick else (64, 128):
            cases.append(sn_case(df, device, target=SN_TARGET, compile_row=True, compile_backend=compile_backend))
    if "upconv" in ops:
        if quick:
            shapes = [(2, 16, 4, UPCONV_TARGET, True)]
        else:  # (batch, channels, input px, target, compile row)
            shapes = [(64, 128, 16, UPCONV_TARGET, True), (128, 128, 16, UPCONV_TARGET, True),
                      (64, 128, 8, None, False),  # extra: the 8 -> 16 cell
                      (64, 256, 16, None, False)]  # extra: wider
        for n, c, h, target, compile_row in shapes:
            cases.append(upconv_case(n, c, h, device, target=target, compile_row=compile_row,
                                     compile_backend=compile_backend))
    if "stats" in ops:
        if quick:
            cases.append(stats_case(8, 32, 10, device, target=STATS_TARGET, compile_row=True, num_images=100,
                                    compile_backend=compile_backend))
        else:
            for b in (100, 250, 500):
                cases.append(stats_case(b, 2048, 1008, device, target=STATS_TARGET, compile_row=b == 500,
                                        compile_backend=compile_backend))
    return cases


# ---------------------------------------------------------------------------------------------
# Measuring one variant of one case.


@dataclass
class Options:
    device: torch.device
    quick: bool
    compile: bool
    compile_skip_reason: str | None
    min_run_time: float
    warmup: int
    max_seconds: float
    started: float
    compile_row_s: float = 45.0  # expected length of one compile row; raised to the longest one seen


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], opts: Options) -> tuple[float, float, int]:
    """(median us, IQR us, number of calls timed) after `opts.warmup` warm-up calls."""
    for _ in range(opts.warmup):
        fn()
    _sync(opts.device)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=opts.min_run_time)
    return m.median * 1e6, m.iqr * 1e6, m.number_per_run * len(m.times)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def new_row(case: Case, variant: str) -> dict[str, Any]:
    return {
        "op": case.op, "shape": case.shape, "label": case.label, "variant": variant,
        "fwd_us": None, "fwd_bwd_us": None, "iqr": {"fwd_us": None, "fwd_bwd_us": None},
        "calls": {"fwd": None, "fwd_bwd": None}, "first_call_s": None,
        "speedup_vs_eager": {"fwd": None, "fwd_bwd": None},
        "target": ({"min_speedup": case.target, "metric": case.metric, "vs": "eager"}
                   if variant == "triton" and case.target is not None else None),
        "met": None, "max_rel_err_vs_eager": None, "skipped": False, "reason": None,
    }


def _skip_reason(case: Case, variant: str, opts: Options) -> str | None:
    if variant == "triton":
        if opts.device.type != "cuda":
            return "needs CUDA (the Triton interpreter is not a benchmark)"
        if not triton_available():
            return "triton is not importable"
    if variant == "compile":
        if not case.compile:
            return "not compiled at this shape (GPU-time budget: 5 compiled shapes)"
        if not opts.compile:
            return opts.compile_skip_reason
        elapsed = time.perf_counter() - opts.started
        if elapsed + opts.compile_row_s > opts.max_seconds:  # start a compile row only if it can finish
            return (f"time budget: {elapsed:.0f} s spent, a compile row takes ~{opts.compile_row_s:.0f} s "
                    f"(--max-seconds {opts.max_seconds:g})")
    return None


def measure(case: Case, variant: str, opts: Options) -> dict[str, Any]:
    """One row: build the variant, check its first output against eager's, time fwd and fwd+bwd."""
    row = new_row(case, variant)
    reason = _skip_reason(case, variant, opts)
    if reason is not None:
        row.update(skipped=True, reason=reason)
        return row
    failed = "torch.compile failed" if variant == "compile" else "failed"
    with use_backend("triton" if variant == "triton" else "torch"):
        try:
            bench = case.build(variant)
            start = time.perf_counter()
            out = bench.fwd()  # the first call: Triton JIT, torch.compile, cuDNN autotuning
            flat = case.flatten(out)
            _sync(opts.device)
            row["first_call_s"] = round(time.perf_counter() - start, 3)
            if variant == "eager":
                case.eager_out = flat
            elif case.eager_out is not None:
                ref = case.eager_out
                scale = ref.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
                row["max_rel_err_vs_eager"] = float((flat - ref).abs().max() / scale)
            del out, flat
            row["fwd_us"], row["iqr"]["fwd_us"], row["calls"]["fwd"] = _time(bench.fwd, opts)
        except Exception as exc:  # one failing row must not cost the rest of a GPU session
            row.update(skipped=True, reason=f"{failed} (forward): {_first_line(exc)}")
            return row
        if bench.fwd_bwd is not None:
            try:
                row["fwd_bwd_us"], row["iqr"]["fwd_bwd_us"], row["calls"]["fwd_bwd"] = _time(bench.fwd_bwd, opts)
            except Exception as exc:
                row["reason"] = f"{failed} (forward+backward): {_first_line(exc)}"
    return row


def add_speedups(rows: list[dict[str, Any]], quick: bool) -> None:
    """Fill speedup_vs_eager (eager time / row time) and, on target rows, met (None when unmeasured)."""
    eager = {(r["op"], r["label"]): r for r in rows if r["variant"] == "eager"}
    for row in rows:
        base = eager.get((row["op"], row["label"]))
        for key in ("fwd", "fwd_bwd"):
            mine, ref = row[f"{key}_us"], base and base[f"{key}_us"]
            row["speedup_vs_eager"][key] = round(ref / mine, 3) if mine and ref else None
        target = row["target"]
        if target is not None:
            got = row["speedup_vs_eager"][target["metric"].removesuffix("_us")]
            row["met"] = None if got is None or quick else got >= target["min_speedup"]


# ---------------------------------------------------------------------------------------------
# The machine.


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _git() -> dict[str, Any]:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip() != ""
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _nvml_handle(pynvml, device: torch.device):
    props = torch.cuda.get_device_properties(device)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:  # CUDA_VISIBLE_DEVICES may renumber; the PCI address does not
        domain, dev = getattr(props, "pci_domain_id", 0), getattr(props, "pci_device_id", 0)
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08X}:{bus:02X}:{dev:02X}.0")
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)


def nvml_snapshot(device: torch.device) -> dict[str, Any]:
    """Clocks, power limits, temperature and clock-limit reasons via pynvml (nvidia-ml-py); nulls if absent."""
    try:
        import pynvml
    except ImportError:
        return {"error": "nvidia-ml-py (pynvml) is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return {"error": _first_line(exc)}

    def q(fn_name: str, *args, scale: float = 1.0):
        fn = getattr(pynvml, fn_name, None)
        if fn is None:
            return None
        try:
            value = fn(*args)
        except Exception:  # NVMLError_NotSupported and friends
            return None
        if isinstance(value, bytes):
            value = value.decode()
        return value * scale if isinstance(value, (int, float)) and scale != 1.0 else value

    try:
        h = _nvml_handle(pynvml, device)
        sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
        cuda_drv = q("nvmlSystemGetCudaDriverVersion_v2") or q("nvmlSystemGetCudaDriverVersion")
        reasons = q("nvmlDeviceGetCurrentClocksEventReasons", h) or q("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        return {
            "name": q("nvmlDeviceGetName", h),
            "driver": q("nvmlSystemGetDriverVersion"),
            "cuda_driver": f"{cuda_drv // 1000}.{cuda_drv % 1000 // 10}" if isinstance(cuda_drv, int) else None,
            "sm_clock_mhz": q("nvmlDeviceGetClockInfo", h, sm),
            "mem_clock_mhz": q("nvmlDeviceGetClockInfo", h, mem),
            "sm_clock_max_mhz": q("nvmlDeviceGetMaxClockInfo", h, sm),
            "mem_clock_max_mhz": q("nvmlDeviceGetMaxClockInfo", h, mem),
            "sm_clock_app_mhz": q("nvmlDeviceGetApplicationsClock", h, sm),
            "mem_clock_app_mhz": q("nvmlDeviceGetApplicationsClock", h, mem),
            "power_limit_w": q("nvmlDeviceGetEnforcedPowerLimit", h, scale=1e-3),
            "power_limit_default_w": q("nvmlDeviceGetPowerManagementDefaultLimit", h, scale=1e-3),
            "power_draw_w": q("nvmlDeviceGetPowerUsage", h, scale=1e-3),
            "temperature_c": q("nvmlDeviceGetTemperature", h, pynvml.NVML_TEMPERATURE_GPU),
            "clock_event_reasons": f"{reasons:#x}" if isinstance(reasons, int) else None,
            "mig_mode": q("nvmlDeviceGetMigMode", h),
            "persistence_mode": q("nvmlDeviceGetPersistenceMode", h),
        }
    except Exception as exc:
        return {"error": _first_line(exc)}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def tf32_flags() -> dict[str, Any]:
    flags = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
             "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
             "cudnn.benchmark": torch.backends.cudnn.benchmark,
             "float32_matmul_precision": torch.get_float32_matmul_precision()}
    for name, obj in (("cuda.matmul.fp32_precision", torch.backends.cuda.matmul),
                      ("cudnn.conv.fp32_precision", getattr(torch.backends.cudnn, "conv", None))):
        value = getattr(obj, "fp32_precision", None) if obj is not None else None
        if value is not None:
            flags[name] = value
    return flags


def machine_info(device: torch.device) -> dict[str, Any]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info: dict[str, Any] = {
        "device": device.type, "name": None, "slug": None,
        "gpu": None, "driver": None, "cuda_runtime": torch.version.cuda, "cuda_driver": None,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "sm_count": None, "gpu_memory_gib": None, "nvml": None,
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
        "platform": platform.platform(), "tf32": tf32_flags(), "git": _git(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        nvml = nvml_snapshot(device)
        info.update(gpu=props.name, sm_count=props.multi_processor_count,
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), nvml=nvml,
                    driver=nvml.get("driver"), cuda_driver=nvml.get("cuda_driver"))
        info["name"] = props.name
    else:
        info["name"] = info["cpu"]
    info["slug"] = slug(info["name"])
    return info


def default_out(machine: dict[str, Any], quick: bool) -> Path:
    return RESULTS_DIR / f"{machine['slug']}{'-quick' if quick else ''}.json"


# ---------------------------------------------------------------------------------------------
# Output.


def _fmt_us(value: float | None, iqr: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} ±{iqr:,.1f}" if iqr is not None else f"{value:,.1f}"


def _fmt_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("op", "shape", "variant", "fwd us (IQR)", "fwd+bwd us (IQR)", "vs eager fwd", "fwd+bwd",
              "target", "met", "rel err / note")
    lines = [header]
    for r in rows:
        target = r["target"]
        tgt = f">={target['min_speedup']:g}x {target['metric'].removesuffix('_us')}" if target else ""
        met = {True: "yes", False: "NO", None: ""}[r["met"]] if target else ""
        note = r["reason"] or ("" if r["max_rel_err_vs_eager"] is None else f"{r['max_rel_err_vs_eager']:.1e}")
        lines.append((r["op"], r["label"], r["variant"], _fmt_us(r["fwd_us"], r["iqr"]["fwd_us"]),
                      _fmt_us(r["fwd_bwd_us"], r["iqr"]["fwd_bwd_us"]), _fmt_x(r["speedup_vs_eager"]["fwd"]),
                      _fmt_x(r["speedup_vs_eager"]["fwd_bwd"]), tgt, met, note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for line in lines:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
        if line is header:
            out.append("-" * (sum(widths) + 2 * len(widths) + len(header[-1])))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Command line.


def _ops(text: str) -> list[str]:
    ops = [op.strip() for op in text.split(",") if op.strip()]
    unknown = sorted(set(ops) - set(OPS))
    if not ops or unknown:
        raise argparse.ArgumentTypeError(f"choose from {','.join(OPS)}; got {text!r}")
    return [op for op in OPS if op in ops]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default: benchmarks/results/<gpu-or-cpu-name>[-quick].json)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and short timing: checks the script, not speed")
    p.add_argument("--ops", type=_ops, default=list(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="compile rows: auto = on, except with --quick (a CPU compile takes tens of seconds)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile rows")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds of timed calls per measurement (default 0.25, 0.01 with --quick)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls before each measurement (default 3, 1 with --quick)")
    p.add_argument("--max-seconds", type=float, default=150.0,
                   help="time budget: a compile row starts only if it can finish within it (by the longest "
                        "compile row so far, first guess 45 s)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible to torch")
    for name in ("min_run_time", "max_seconds"):
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.warmup is not None and args.warmup < 1:
        p.error("--warmup must be >= 1")
    return args


@contextlib.contextmanager
def _training_flags():
    """As AutoGAN training runs: TF32 convs (cuDNN's default) and matmuls, cuDNN autotuning (AutoGAN sets
    it); restored on exit, so an in-process run (the tests) leaves the process as it found it."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


def run(args: argparse.Namespace, opts: Options) -> tuple[dict[str, Any], Path]:
    """Measure every row, rewriting the results file after each; returns the results and their path."""
    device = opts.device
    machine = machine_info(device)
    out = args.out or default_out(machine, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "schema": SCHEMA, "machine": machine,
        "settings": {"device": device.type, "quick": args.quick, "ops": args.ops, "compile": opts.compile,
                     "compile_mode": "default", "compile_backend": args.compile_backend,
                     "min_run_time_s": opts.min_run_time, "warmup_calls": opts.warmup,
                     "max_seconds": args.max_seconds,
                     "timer": "torch.utils.benchmark.Timer.blocked_autorange, median and IQR over blocks"},
        "rows": [], "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": False, "duration_s": None,
    }
    print(f"benchmarks on {machine['name']} (torch {machine['torch']}, triton {machine['triton']}); "
          f"writing {out}", file=sys.stderr)
    cases = build_cases(args.ops, device, args.quick, args.compile_backend)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    # eager and triton rows of every case first; compile rows (slow warm-ups) last, under the budget
    order = [(i, v) for i in range(len(cases)) for v in ("eager", "triton")]
    order += [(i, "compile") for i in range(len(cases))]
    for i, variant in order:
        case = cases[i]
        row_started = time.perf_counter()
        row = rows[i, variant] = measure(case, variant, opts)
        if variant == "compile" and not row["skipped"]:
            opts.compile_row_s = max(opts.compile_row_s, time.perf_counter() - row_started)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"  {case.op:6s} {case.label:22s} {variant:8s} fwd {_fmt_us(row['fwd_us'], None):>12s} us  "
              f"fwd+bwd {_fmt_us(row['fwd_bwd_us'], None):>12s} us  {row['reason'] or ''}", file=sys.stderr)
        payload["rows"] = [rows[k] for k in sorted(rows, key=lambda k: (k[0], VARIANTS.index(k[1])))]
        add_speedups(payload["rows"], args.quick)
        payload["duration_s"] = round(time.perf_counter() - opts.started, 1)
        write_json(out, payload)
    if device.type == "cuda":
        machine["nvml_end"] = nvml_snapshot(device)  # clocks and power right after the last timing
    payload.update(complete=True, duration_s=round(time.perf_counter() - opts.started, 1))
    write_json(out, payload)
    return payload, out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    compile_on = args.compile == "on" or (args.compile == "auto" and not args.quick)
    opts = Options(
        device=device, quick=args.quick, compile=compile_on,
        compile_skip_reason="--quick (pass --compile on)" if args.compile == "auto" else "--compile off",
        min_run_time=args.min_run_time or (0.01 if args.quick else 0.25),
        warmup=args.warmup or (1 if args.quick else 3), max_seconds=args.max_seconds, started=time.perf_counter(),
    )
    cuda_rng = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with _training_flags(), torch.random.fork_rng(devices=cuda_rng):  # leave the caller's RNG as it was
        payload, out = run(args, opts)
    machine = payload["machine"]
    print(format_table(payload["rows"]))
    tf32 = machine["tf32"]
    print(f"\n{machine['name']} | torch {machine['torch']} | triton {machine['triton']} | "
          f"TF32 cudnn={tf32['cudnn.allow_tf32']} matmul={tf32['cuda.matmul.allow_tf32']} | "
          f"{payload['duration_s']} s | {out}")
    if args.quick:
        print("--quick: tiny shapes; the targets apply to the full run only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
