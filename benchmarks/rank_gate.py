"""The reward-precision rank gate on TRAINED weights: Spearman of each precision's rewards with fp32's.

    python -m benchmarks.rank_gate [--archs 24] [--train-steps 400] [--threads N] [--device cpu|cuda]
                                   [--out benchmarks/results/rank-gate-cpu.json]

`--reward-precision` may leave fp32 only when a precision ranks architectures as fp32 does: Spearman
>= 0.98 (`nas.reward.MIN_RANK_CORRELATION`) over >= 20 architectures, on a feature network with trained
weights (random weights give every architecture IS ~1 + 1e-7: the ranking is then rounding noise). On the
CPU the network is the digits classifier (`metrics.digits_net`, trained and cached on first use) and
bf16 is CPU autocast; with `--device cuda` and `--feature-net inception --inception-weights FILE` the
same script gates Inception-v3.

What it does: the demo search's shared GAN (digits, seeded) is trained for `--train-steps` D steps at
stage 2 on uniformly drawn architectures (so different architectures generate different images and the
rewards spread), then `--archs` distinct uniformly drawn stage-2 architectures are each scored at
every precision by the search's own reward pipeline (`RewardPipeline`, eager: no capture on a CPU),
the noise seeded per architecture so every precision scores the same images. Per precision: the
rewards, Spearman with fp32, the largest relative difference from fp32, and images per second of the
whole reward (noise, generator, uint8, feature net, IS statistics). The gate result is data; moving
the default also needs the GPU speed gain measured (this script's `--device cuda` rows on a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from autogan_fast.config import REWARD_PRECISIONS, preset_config
from autogan_fast.data import DeviceImageData, load_images
from autogan_fast.engines.eager import LossWindow, SharedGAN, train_shared
from autogan_fast.kernels import use_backend
from autogan_fast.metrics import load_feature_net
from autogan_fast.nas.reward import DEFAULT_REWARD_PRECISION, MIN_RANK_CORRELATION, RewardPipeline, spearman
from autogan_fast.search_space import NUM_CELLS, decision_sizes

from .machine import machine_info

MIN_ARCHS = 20  # the gate's minimum number of architectures


def draw_archs(count: int, generator: torch.Generator) -> list[list[int]]:
    """`count` distinct stage-2 architectures, each decision uniform over its choices."""
    sizes = [s for cell in range(NUM_CELLS) for s in decision_sizes(cell)]
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < count:
        arch = tuple(int(torch.randint(s, (), generator=generator)) for s in sizes)
        seen.setdefault(arch, None)
    return [list(a) for a in seen]


def train_gan(gan: SharedGAN, data: DeviceImageData, config, steps: int, generator: torch.Generator) -> dict:
    """`steps` D steps of the shared GAN at stage 2, one uniformly drawn architecture per step."""
    archs = [draw_archs(1, generator)[0] for _ in range(steps)]
    window = max(config.dynamic_reset_window, steps + 1)  # no dynamic reset: train the whole budget
    device = data.device
    started = time.perf_counter()
    summary = train_shared(gan, data, config, 2, archs, LossWindow(window, device), LossWindow(window, device))
    return {"d_steps": summary.steps, "g_steps": summary.g_steps, "d_loss": summary.d_loss, "g_loss": summary.g_loss,
            "seconds": time.perf_counter() - started}


def score_all(pipeline: RewardPipeline, gan: SharedGAN, archs: list[list[int]]) -> tuple[list[float], float]:
    """Each architecture's reward (noise seeded by its index) and the seconds all of them took."""
    rewards = []
    started = time.perf_counter()
    for i, arch in enumerate(archs):
        torch.manual_seed(1000 + i)
        rewards.append(pipeline.score(gan.gen, arch))
    return rewards, time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()  # a shared machine: the timings mean little when the load exceeds the cores
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = preset_config("demo")
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = DeviceImageData(load_images("digits"), device)
    net = load_feature_net(args.feature_net, device, args.inception_weights)
    gan = SharedGAN.create(config, device)
    with use_backend(args.kernels):
        training = train_gan(gan, data, config, args.train_steps, generator)
        print(f"shared GAN: {training['d_steps']} D steps in {training['seconds']:.1f} s", file=sys.stderr, flush=True)
        archs = draw_archs(args.archs, generator)
        rows = {}
        for precision in REWARD_PRECISIONS:
            pipeline = RewardPipeline(net, config.rl_num_eval_img, config.eval_batch_size, config.is_splits,
                                      config.latent_dim, device, precision)
            score_all(pipeline, gan, archs[:1])  # warm-up: allocations, oneDNN / cuDNN plans
            rewards, seconds = score_all(pipeline, gan, archs)
            print(f"{precision}: {len(archs)} rewards in {seconds:.1f} s", file=sys.stderr, flush=True)
            rows[precision] = {"rewards": rewards, "seconds": seconds,
                               "images_per_second": len(archs) * config.rl_num_eval_img / seconds}
    fp32 = rows["fp32"]["rewards"]
    for row in rows.values():
        row["spearman_vs_fp32"] = spearman(fp32, row["rewards"])
        row["max_rel_diff_vs_fp32"] = max(abs(a - b) / abs(a) for a, b in zip(fp32, row["rewards"], strict=True))
        row["speedup_vs_fp32"] = rows["fp32"]["seconds"] / row["seconds"]
        row["gate_holds"] = (len(archs) >= MIN_ARCHS and not math.isnan(row["spearman_vs_fp32"])
                             and row["spearman_vs_fp32"] >= MIN_RANK_CORRELATION)
    info = machine_info(device)
    return {
        "what": "reward-precision rank gate: Spearman of each precision's rewards with fp32's over distinct "
                "stage-2 architectures of a briefly trained shared GAN (demo config, digits)",
        "device": device.type, "threads": torch.get_num_threads(), "feature_net": args.feature_net,
        "trained_feature_net": True, "kernels": args.kernels, "seed": args.seed,
        "architectures": len(archs), "images_per_reward": config.rl_num_eval_img,
        "eval_batch_size": config.eval_batch_size, "min_rank_correlation": MIN_RANK_CORRELATION,
        "min_architectures": MIN_ARCHS, "default_precision": DEFAULT_REWARD_PRECISION,
        "fp32_reward_range": [min(fp32), max(fp32)], "shared_gan_training": training,
        "precisions": rows, "archs": archs,
        "notes": {"tf32": "no TF32 on a CPU: the same fp32 kernels (oneDNN default) as fp32, minus the pinned "
                          "IEEE switch" if device.type == "cpu" else "TF32 for cuBLAS and cuDNN"},
        "machine": {k: info[k] for k in ("cpu_model", "cpu_count", "torch", "triton", "python", "gpu", "git",
                                         "git_dirty")},
        "date": time.strftime("%Y-%m-%d"),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rank_gate", description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=24, help="architectures scored (the gate needs >= 20)")
    parser.add_argument("--train-steps", type=int, default=400, help="D steps of shared-GAN training first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--feature-net", default="digits", choices=("digits", "inception"))
    parser.add_argument("--inception-weights", default=None, help="Inception-v3 weights file (--feature-net "
                        "inception)")
    parser.add_argument("--kernels", default="auto", choices=("auto", "triton", "torch"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    if args.archs < 2 or args.train_steps < 0 or args.threads < 1:
        parser.error("--archs must be >= 2, --train-steps >= 0 and --threads >= 1")
    result = run(args)
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    for precision, row in result["precisions"].items():
        print(f"{precision:5s} spearman {row['spearman_vs_fp32']:.4f}  max rel diff {row['max_rel_diff_vs_fp32']:.2e}"
              f"  {row['images_per_second']:8.0f} img/s  x{row['speedup_vs_fp32']:.2f}  gate "
              f"{'holds' if row['gate_holds'] else 'fails'}")
    print(f"{result['architectures']} architectures, fp32 rewards {result['fp32_reward_range'][0]:.4f}.."
          f"{result['fp32_reward_range'][1]:.4f}, {result['threads']} threads on {result['machine']['cpu_model']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
