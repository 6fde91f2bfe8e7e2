"""`python -m benchmarks.profile_step --out FILE`: where a stage-2 shared-GAN step spends its time.

Profiles (torch.profiler) `--units` units (n_critic D steps + the G step each) of a stage-2 stream of the
controller's samples, after a first pass over the same stream (every graph captured, Triton compiled),
for each `--variants` entry of `workloads.STREAM_VARIANTS`, and writes the `--top` costliest kernels
(device time on CUDA, CPU time elsewhere) of each to FILE as text tables. Default variants: `graph`
(what a search runs: replays of captured graphs) and `triton` (the same kernels launched eagerly, in
case the profiler cannot see inside graph replays). Full size with CUDA, tiny without (`--size`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def profile_variant(name: str, size: str, device: torch.device, units: int, top: int) -> str:
    """The text table of one variant's costliest kernels over `units` units."""
    from torch.profiler import ProfilerActivity, profile

    from .workloads import STREAM_VARIANTS, StreamRunner, shared_config, stream_archs, synthetic_data

    variant = next((v for v in STREAM_VARIANTS if v.name == name), None)
    if variant is None:
        raise ValueError(f"no stream variant {name!r} (one of {', '.join(v.name for v in STREAM_VARIANTS)})")
    reason = variant.missing_reason(device)
    if reason is not None:
        return f"## {name}: not profiled: {reason}\n"
    config = shared_config(size)
    steps = units * config.n_critic
    runner = StreamRunner(variant, config, synthetic_data(size, device), 2, stream_archs(2, steps, config.hid_size),
                          steps, device)
    first = runner.first_pass()  # the captures and compiles, outside the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        runner()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=80)
    return (f"## {name}: {units} units ({steps} D steps + {units} G steps) at stage 2, {size} size, "
            f"{device}; {seconds * 1e3:.1f} ms profiled ({seconds / steps * 1e3:.2f} ms per D step); first pass "
            f"{first['first_pass_seconds']:.2f} s; sorted by {sort}, top {top}\n{table}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="text file for the tables")
    p.add_argument("--size", choices=("full", "tiny"), default=None, help="default: full with CUDA, tiny without")
    p.add_argument("--variants", nargs="+", default=["graph", "triton"], help="stream variants to profile")
    p.add_argument("--units", type=int, default=2, help="units (n_critic D steps + the G step) profiled")
    p.add_argument("--top", type=int, default=15, help="kernels listed per variant")
    args = p.parse_args(argv)
    if args.units < 1 or args.top < 1:
        print("profile_step: --units and --top must be >= 1", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("full" if device.type == "cuda" else "tiny")
    if size == "tiny" and device.type == "cpu":
        torch.set_num_threads(1)  # as the suite's smoke form
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    parts = [f"# costliest kernels of one stage-2 step ({machine}; torch {torch.__version__})\n"]
    for name in args.variants:
        parts.append(profile_variant(name, size, device, args.units, args.top))
        args.out.write_text("\n".join(parts))  # written after each variant: a timeout keeps what is done
    print(f"profile_step: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
