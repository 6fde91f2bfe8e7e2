"""The machine a benchmark ran on: GPU, clocks and power (nvidia-ml-py), library versions, peak FLOP/s.

`machine_info(device)` is what benchmarks/conftest.py merges into pytest-benchmark's `machine_info`.
`PEAK_TFLOPS` is the dense (no sparsity) peak of each GPU by precision, from NVIDIA's datasheets at
boost clock: H100 SXM5 / H200 SXM (same compute): FP64 34, FP64 tensor 67, FP32 67, TF32 tensor
494.7 (the datasheet's 989 is with 2:4 sparsity), BF16 tensor 989.4 (1,979 sparse); H100 PCIe: FP64 26
(tensor 51), FP32 51, TF32 378, BF16 756; H100 NVL / H200 NVL: FP64 30 (tensor 60), FP32 60, TF32
417.5, BF16 835.5; A100 (SXM4 and PCIe): FP64 9.7 (tensor 19.5), FP32 19.5, TF32 156, BF16 312. A
row's `peak_fraction` divides its TFLOP/s by the entry of the precision its arithmetic runs in
(`peak_precision`); an unknown GPU (or a CPU) has no peak and no fraction.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from autogan_fast.nas.reward import fp32_precision

REPO_ROOT = Path(__file__).resolve().parent.parent

# (substring of the lower-cased device name, peaks in TFLOP/s); the first match wins, so the more
# specific names come first.
_H100_SXM = {"fp64": 67.0, "fp32": 66.9, "tf32": 494.7, "bf16": 989.4}  # fp64: the FP64 tensor-core peak
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("h200 nvl", {"fp64": 60.0, "fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    ("h100 nvl", {"fp64": 60.0, "fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    ("h100 pcie", {"fp64": 51.0, "fp32": 51.0, "tf32": 378.0, "bf16": 756.0}),
    ("h200", _H100_SXM),
    ("h100", _H100_SXM),  # "NVIDIA H100 80GB HBM3" is the SXM5 card
    ("a100", {"fp64": 19.5, "fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
]
PEAK_SOURCE = ("NVIDIA datasheets (H100, H200, A100), dense tensor-core peaks at boost clock: the "
               "sparsity figures halved")


def peak_tflops(gpu_name: str | None) -> dict[str, float] | None:
    """Dense peak TFLOP/s by precision ("fp64", "fp32", "tf32", "bf16") of a GPU, or None when unknown."""
    if not gpu_name:
        return None
    name = gpu_name.lower()
    for key, peaks in PEAK_TFLOPS:
        if key in name:
            return dict(peaks)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def git_info() -> dict[str, Any]:
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
        except Exception:  # NVMLError, or a TypeError from an nvidia-ml-py that wants bytes: use the index
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)


def nvml_snapshot(device: torch.device) -> dict[str, Any]:
    """Clocks, power limits, temperature and clock-limit reasons via pynvml (nvidia-ml-py); {"error"} if absent."""
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
        reasons = q("nvmlDeviceGetCurrentClocksEventReasons", h)
        if reasons is None:  # 0 (no reason: full clocks) is the common answer, not a missing one
            reasons = q("nvmlDeviceGetCurrentClocksThrottleReasons", h)
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


def _read(getter) -> Any:
    try:
        return getter()
    except Exception as exc:  # torch >= 2.9 raises reading a legacy flag after a mix of legacy and new APIs
        return f"unreadable ({_first_line(exc)[:80]})"


def tf32_flags() -> dict[str, Any]:
    flags = {"cudnn.allow_tf32": _read(lambda: torch.backends.cudnn.allow_tf32),
             "cuda.matmul.allow_tf32": _read(lambda: torch.backends.cuda.matmul.allow_tf32),
             "cudnn.benchmark": torch.backends.cudnn.benchmark,
             "float32_matmul_precision": _read(torch.get_float32_matmul_precision)}
    for name, obj in (("cuda.matmul.fp32_precision", torch.backends.cuda.matmul),
                      ("cudnn.conv.fp32_precision", getattr(torch.backends.cudnn, "conv", None))):
        value = _read(lambda obj=obj: getattr(obj, "fp32_precision", None)) if obj is not None else None
        if value is not None:
            flags[name] = value
    return flags


@contextlib.contextmanager
def op_flags():
    """The op rows' settings, as the op benchmarks run them: TF32 convs (cuDNN's default) and matmuls,
    cuDNN autotuning (it gives the eager conv its best algorithm). Restored on exit. The end-to-end rows
    run with PyTorch's defaults, as the search and training commands do.

    TF32 through the reward's switch (`autogan_fast.nas.reward.fp32_precision`): legacy setters that keep
    torch >= 2.9's per-op flags consistent, and an exact restore that never reads a flag that could raise."""
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with fp32_precision("tf32"):
            yield
    finally:
        torch.backends.cudnn.benchmark = benchmark


def machine_info(device: torch.device) -> dict[str, Any]:
    """Fields merged into pytest-benchmark's machine_info (nulls where a field does not apply)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    git = git_info()
    info: dict[str, Any] = {
        "device": device.type, "gpu": None, "gpu_slug": None, "driver": None, "cuda": torch.version.cuda,
        "cuda_driver": None, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "sm_count": None, "gpu_memory_gib": None, "nvml": {"error": "no CUDA device"},
        "torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "tf32_defaults": tf32_flags(), "git": git["commit"], "git_dirty": git["dirty"],
        "peak_tflops": None, "peak_tflops_precision": "tf32", "peak_tflops_by_precision": None,
        "peak_source": PEAK_SOURCE,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        nvml = nvml_snapshot(device)
        peaks = peak_tflops(props.name)
        info.update(gpu=props.name, gpu_slug=slug(props.name), sm_count=props.multi_processor_count,
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), nvml=nvml,
                    driver=nvml.get("driver"), cuda_driver=nvml.get("cuda_driver"),
                    peak_tflops=None if peaks is None else peaks["tf32"], peak_tflops_by_precision=peaks)
    else:
        info["gpu_slug"] = slug(info["cpu_model"])
    return info
