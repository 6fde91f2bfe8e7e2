"""bf16 against fp32 shared-GAN training: loss trajectories over >= 2,000 stage-2 steps (issue 23 item 5).

    python -m benchmarks.precision_trajectory --steps 2000 --out F.json   # a GPU: the paper's shared GAN
    python -m benchmarks.precision_trajectory --tiny --steps 20 --out F.json   # a CPU smoke run (tests)

Three runs of the same shared GAN from the same initialization (seeded), each `--steps` D steps (the
G step on every n_critic-th) over the same stream of stage-`--stage` architectures (a fresh
controller's samples, `--archs` of them cycled, so a graph engine captures 2 x archs graphs), with
the dynamic reset off (every run trains every step):
  - fp32: the default arithmetic;
  - bf16: `--precision bf16` (autocast, channels-last), the same random draws as fp32;
  - fp32-reseeded: fp32 again with other noise and data order: the yardstick. Two GAN runs drift
    apart whatever their arithmetic; bf16 is "as close as noise" when its distance from fp32 is
    within fp32's distance from itself reseeded.
Data: the embedded digits at the stage's resolution (32 px at the paper's bottom width 4). Each run
records the mean D and G loss of every block of `--block` D steps and its seconds (device-synced;
graph captures included). The JSON holds the machine, the settings, the trajectories and `summary`
(`bf16_vs_fp32`, `fp32_vs_reseeded`: mean and last-tenth absolute differences of the block losses,
and bf16's seconds against fp32's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from autogan_fast.config import preset_config
from autogan_fast.data import DeviceImageData, load_images
from autogan_fast.engines.cuda_graphs import GraphCache, capture_backend
from autogan_fast.engines.eager import LossWindow, SharedGAN, train_shared
from autogan_fast.engines.graph import resolve_engine, train_shared_graph
from autogan_fast.nas.loop import graph_cache_sizes

from .machine import machine_info
from .workloads import stream_archs

RUNS = (("fp32", "fp32", 0), ("bf16", "bf16", 0), ("fp32-reseeded", "fp32", 1))  # (name, precision, seed offset)


def tiny_config():
    """CPU-sized: a 16-px stage 2 of a 4-channel GAN."""
    return preset_config("demo", gf_dim=4, df_dim=4, latent_dim=8, bottom_width=2, dis_bs=8, gen_bs=8, n_critic=5)


def synced_seconds(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # host sync: a block is timed from idle to idle
    return time.perf_counter()


def train_run(config, data: DeviceImageData, stage: int, archs: list[list[int]], steps: int, block: int,
              engine: str, device: torch.device, init_seed: int, run_seed: int) -> dict:
    """One run: the GAN initialized from `init_seed`, trained from `run_seed`; block mean losses and seconds."""
    torch.manual_seed(init_seed)
    gan = SharedGAN.create(config, device, capturable=engine == "graph" and device.type == "cuda")
    torch.manual_seed(run_seed)
    windows = LossWindow(config.dynamic_reset_window, device), LossWindow(config.dynamic_reset_window, device)
    cache = GraphCache(capture_backend(device), graph_cache_sizes(config, stage)[0]) if engine == "graph" else None
    d_loss, g_loss = [], []
    started = synced_seconds(device)
    for start in range(0, steps, block):
        chunk = [archs[i % len(archs)] for i in range(start, min(start + block, steps))]
        if cache is None:
            summary = train_shared(gan, data, config, stage, chunk, *windows)
        else:
            summary = train_shared_graph(gan, data, config, stage, chunk, *windows, cache=cache)
        d_loss.append(summary.d_loss)  # the summary's host read: one per block
        g_loss.append(summary.g_loss)
    seconds = synced_seconds(device) - started
    return {"precision": config.precision, "run_seed": run_seed, "d_loss": d_loss, "g_loss": g_loss,
            "seconds": seconds, "graph_cache": None if cache is None else cache.stats.as_dict()}


def distance(a: dict, b: dict) -> dict:
    """Mean absolute difference of two runs' block losses, over all blocks and over the last tenth."""
    out = {}
    for key in ("d_loss", "g_loss"):
        diffs = [abs(x - y) for x, y in zip(a[key], b[key], strict=True)]
        tail = diffs[-max(1, len(diffs) // 10):]
        out[f"{key}_mean_abs_diff"] = sum(diffs) / len(diffs)
        out[f"{key}_last_tenth_abs_diff"] = sum(tail) / len(tail)
        out[f"{key}_last_tenth_mean"] = [sum(r[key][-len(tail):]) / len(tail) for r in (a, b)]
    return out


def summarize(runs: dict[str, dict]) -> dict:
    bf16, noise = distance(runs["bf16"], runs["fp32"]), distance(runs["fp32-reseeded"], runs["fp32"])
    within = all(bf16[f"{k}_mean_abs_diff"] <= noise[f"{k}_mean_abs_diff"] for k in ("d_loss", "g_loss"))
    return {"bf16_vs_fp32": bf16, "fp32_vs_reseeded": noise, "bf16_within_reseed_noise": within,
            "bf16_seconds_over_fp32": runs["bf16"]["seconds"] / runs["fp32"]["seconds"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision_trajectory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="D steps per run (default: 2000)")
    parser.add_argument("--block", type=int, default=50, help="D steps per recorded loss point (default: 50)")
    parser.add_argument("--stage", type=int, default=2, choices=(0, 1, 2), help="search stage (default: 2)")
    parser.add_argument("--archs", type=int, default=20, help="distinct architectures cycled (default: 20)")
    parser.add_argument("--engine", default="auto", choices=("auto", "eager", "graph"),
                        help="auto: graph on CUDA, eager elsewhere")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0, help="initialization and first run seed (default: 0)")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized GAN (the smoke test's)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.block < 1 or args.archs < 1:
        print("--steps, --block and --archs must be positive", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    engine = resolve_engine(args.engine, device)
    base = tiny_config() if args.tiny else preset_config("paper")
    base = dataclasses.replace(base, dynamic_reset_threshold=0.0)  # every run trains every step
    data = DeviceImageData(load_images("digits"), device)
    archs = stream_archs(args.stage, args.archs, base.hid_size, seed=args.seed, distinct=True)
    runs = {}
    for name, precision, offset in RUNS:
        config = dataclasses.replace(base, precision=precision).validate()
        runs[name] = train_run(config, data, args.stage, archs, args.steps, args.block, engine, device,
                               init_seed=args.seed, run_seed=args.seed + 1000 + offset)
        print(f"{name}: {runs[name]['seconds']:.1f} s, last D loss {runs[name]['d_loss'][-1]:+.4f}, "
              f"G loss {runs[name]['g_loss'][-1]:+.4f}", file=sys.stderr)
    result = {"machine": machine_info(device), "engine": engine, "stage": args.stage, "steps": args.steps,
              "block": args.block, "archs": archs, "config": dataclasses.asdict(base), "runs": runs,
              "summary": summarize(runs)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
