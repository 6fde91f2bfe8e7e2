"""The end-to-end workloads: a shared-GAN unit, the reward, a fraction of a search iteration, derived training.

Sizes: "full" is the paper's search (gf 128, df 64, latent 128, D batch 64, G batch 128, n_critic 5,
8 -> 16 -> 32 px, CIFAR-shaped synthetic uint8 data: 50,000 images of torch.randint) and derived
training (gf 256, df 128); "tiny" is the CPU smoke test (16 channels, 4 -> 8 -> 16 px, a few images).

Variants (the `variant` of a row):
    eager    the literal PyTorch ops (`use_backend("torch")`), the eager engine, the eager reward
             (`metrics.scoring.inception_score`) in exact fp32
    triton   the fused Triton ops (`use_backend("auto")` on CUDA), still the eager engine
    graph    the fused ops + the graph engine (captured CUDA graphs, `GraphCache`), as `--engine graph`
    compile  `torch.compile` (mode "reduce-overhead" on CUDA with inductor) of the eager step functions
             `engines.eager.discriminator_step` / `generator_step`, under `use_backend("torch")`
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn
from tqdm import tqdm

from autogan_fast.config import SearchConfig, TrainConfig, preset_config
from autogan_fast.data import DeviceImageData
from autogan_fast.engines import eager as engine_module
from autogan_fast.engines.cuda_graphs import CaptureBackend, GraphCache, capture_backend
from autogan_fast.engines.eager import (
    LossWindow,
    SharedGAN,
    discriminator_step,
    generator_step,
    train_shared,
)
from autogan_fast.engines.graph import GANStep, train_shared_graph
from autogan_fast.kernels import use_backend
from autogan_fast.metrics.feature_net import FeatureNet, check_uint8_images
from autogan_fast.metrics.scoring import inception_score
from autogan_fast.nas.controller import Beams, Controller
from autogan_fast.nas.loop import SearchState, graph_cache_sizes, new_controller, train_controller
from autogan_fast.nas.reward import RewardPipeline, fp32_precision
from autogan_fast.run_dir import JsonlLog
from autogan_fast.train import PAPER_ARCH, TrainState

from .flops import GanFlops, feature_net_flops_per_image, reward_flops

STAGES = (0, 1, 2)
VARIANTS = ("eager", "triton", "graph", "compile")

# The paper's search, for the projection: CIFAR-10's 50,000 images, 15 shared epochs of 781 D steps.
PAPER_IMAGES = 50_000


# ---------------------------------------------------------------------------------------------
# Settings and data


def shared_config(size: str) -> SearchConfig:
    """The search settings: the paper preset, or the tiny smoke-test ones."""
    if size == "full":
        return preset_config("paper")
    return SearchConfig(gf_dim=16, df_dim=16, latent_dim=16, bottom_width=2, dis_bs=8, gen_bs=16,
                        rl_num_eval_img=20, eval_batch_size=10, is_splits=2, hid_size=16)


def train_config(size: str) -> TrainConfig:
    """Derived training: the paper's (gf 256, df 128), or tiny."""
    if size == "full":
        return TrainConfig(dataset="cifar10")
    return TrainConfig(gf_dim=16, df_dim=16, latent_dim=16, bottom_width=2, dis_bs=8, gen_bs=16)


def synthetic_data(size: str, device: torch.device) -> DeviceImageData:
    """CIFAR-shaped uint8 images drawn by torch.randint on the device (tiny: 256 images of 16 px)."""
    n, px = (PAPER_IMAGES, 32) if size == "full" else (256, 16)
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (n, 3, px, px), dtype=torch.uint8, device=device, generator=gen)
    return DeviceImageData(images, device)


def stage_label(stage: int, config: SearchConfig) -> str:
    return f"stage {stage} ({config.bottom_width * 2 ** (stage + 1)} px)"


@torch.no_grad()
def stage_beams(stage: int, hid_size: int, topk: int = 5, seed: int = 0) -> Beams | None:
    """Beams for a stage's controller as a search would have them: the earlier stages' fresh controllers'
    samples (random prefixes) with their hidden states. None at stage 0."""
    beams = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 100 * stage)
        for s in range(stage):
            samples = Controller.for_stage(s, "mlas", hid_size).sample(topk, beams)
            beams = Beams(samples.archs, samples.hx, samples.cx)
    return beams


@torch.no_grad()
def stream_archs(stage: int, n: int, hid_size: int, seed: int = 0, distinct: bool = False) -> list[list[int]]:
    """`n` architectures sampled by a fresh stage-`stage` controller (on the CPU, seeded); `distinct`
    drops repeats (drawing more until there are n)."""
    beams = stage_beams(stage, hid_size, seed=seed)
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 100 * stage + 1)
        ctrl = Controller.for_stage(stage, "mlas", hid_size)
        for _ in range(50):
            for arch in ctrl.sample(n, beams).archs.tolist():
                if not distinct or arch not in out:
                    out.append(arch)
            if len(out) >= n:
                return out[:n]
    raise RuntimeError(f"fewer than {n} distinct architectures at stage {stage}")


# ---------------------------------------------------------------------------------------------
# The variants' machinery


def compiled_steps(backend: str, mode: str | None) -> tuple[Callable, Callable]:
    """torch.compile'd `discriminator_step` and `generator_step`. With reduce-overhead (CUDA graph trees)
    each call first marks a new step, so outputs of the previous one may be overwritten."""
    kwargs: dict[str, Any] = {"backend": backend}
    if mode is not None:
        kwargs["mode"] = mode
    d_compiled = torch.compile(discriminator_step, **kwargs)
    g_compiled = torch.compile(generator_step, **kwargs)
    mark = mode == "reduce-overhead"

    def d_step(*args):
        if mark:
            torch.compiler.cudagraph_mark_step_begin()
        return d_compiled(*args)

    def g_step(*args):
        if mark:
            torch.compiler.cudagraph_mark_step_begin()
        return g_compiled(*args)

    return d_step, g_step


def dynamo_frames() -> int:
    """Frames dynamo has compiled so far in this process (each recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(sum(counters["stats"].get(k, 0) for k in ("unique_graphs",)))


def backend_name(variant: str) -> str:
    return "torch" if variant in ("eager", "compile") else "auto"


def graph_stats(cache: GraphCache | None) -> dict[str, Any] | None:
    return None if cache is None else cache.stats.as_dict()


# ---------------------------------------------------------------------------------------------
# 1. One shared-GAN unit: n_critic D steps (one stream architecture each) + the G step


class UnitRunner:
    """`runner()` trains one unit of the shared GAN at `stage` through the engine the variant uses, the
    architectures taken in turn from `stream` (cycling), as the search's `train_shared(_graph)` runs them."""

    def __init__(self, variant: str, config: SearchConfig, data: DeviceImageData, stage: int,
                 stream: Sequence[Sequence[int]], device: torch.device, compile_backend: str = "inductor",
                 compile_mode: str | None = None, capture: CaptureBackend | None = None):
        self.variant, self.config, self.data, self.stage, self.device = variant, config, data, stage, device
        self.stream = [list(a) for a in stream]
        torch.manual_seed(0)
        self.gan = SharedGAN.create(config, device, capturable=variant == "graph" and device.type == "cuda")
        size = config.dynamic_reset_window
        self.windows = (LossWindow(size, device), LossWindow(size, device))
        self.cache = (GraphCache(capture or capture_backend(device), graph_cache_sizes(config, stage)[0])
                      if variant == "graph" else None)
        self.compiled = compiled_steps(compile_backend, compile_mode) if variant == "compile" else None
        self.position = 0
        self.flops = GanFlops(self.gan.gen, self.gan.dis, stage, config.latent_dim, config.dis_bs, config.gen_bs,
                              config.n_critic, device)
        self._stack = contextlib.ExitStack()

    def close(self) -> None:
        self._stack.close()

    def next_archs(self) -> list[list[int]]:
        n = self.config.n_critic
        archs = [self.stream[(self.position + i) % len(self.stream)] for i in range(n)]
        self.position += n
        return archs

    def __call__(self) -> None:
        archs = self.next_archs()
        with use_backend(backend_name(self.variant)):
            if self.variant == "graph":
                train_shared_graph(self.gan, self.data, self.config, self.stage, archs, *self.windows,
                                   cache=self.cache)
            elif self.variant == "compile":
                d_step, g_step = self.compiled
                with mock.patch.object(engine_module, "discriminator_step", d_step), \
                        mock.patch.object(engine_module, "generator_step", g_step):
                    train_shared(self.gan, self.data, self.config, self.stage, archs, *self.windows)
            else:
                train_shared(self.gan, self.data, self.config, self.stage, archs, *self.windows)

    def flop_per_unit(self, units: int) -> float:
        """Mean FLOPs of one unit over `units` units of the stream (counted before any timing)."""
        n = self.config.n_critic
        seq = [self.stream[i % len(self.stream)] for i in range(units * n)]
        return self.flops.steps(seq) / units


# ---------------------------------------------------------------------------------------------
# 2. The reward


class TinyFeatureNet(FeatureNet):
    """A small random conv net with FeatureNet's interface: the CPU smoke test's stand-in for Inception."""

    name = "tiny-random"
    num_features = 32
    num_classes = 10

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.proj = nn.Linear(16, self.num_features)
        self.fc = nn.Linear(self.num_features, self.num_classes)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_uint8_images(images)
        x = images.float() / 127.5 - 1
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        features = torch.relu(self.proj(h))
        return features, self.fc(features)


def reward_feature_net(size: str, device: torch.device) -> tuple[FeatureNet, str, int]:
    """(network, note, image size its FLOPs are counted at). Full: Inception-v3 with its published weights
    when a weights file is found (never downloaded), else a randomly initialised InceptionV3FeatureNet
    (same FLOPs and speed; the rewards then only test numerics). Tiny: `TinyFeatureNet`."""
    torch.manual_seed(0)
    if size != "full":
        return TinyFeatureNet().to(device), "tiny random stand-in network (CPU smoke test)", 16
    from autogan_fast.errors import UsageError
    from autogan_fast.metrics.inception import InceptionV3FeatureNet, load_inception_v3

    try:
        return load_inception_v3(device=device), "Inception-v3 (published FID weights)", 299
    except UsageError:
        return (InceptionV3FeatureNet().to(device),
                "Inception-v3, randomly initialised: no weights file here (same FLOPs and speed; the rewards "
                "and their rank correlation then test numerics, not the real scores)", 299)


class RewardRunner:
    """`runner()` scores the next architecture of `archs` (one reward of `num_images` images), seeding
    the noise by the architecture's index so every variant sees the same images of the same generator."""

    def __init__(self, variant: str, config: SearchConfig, gen: nn.Module, feature_net: FeatureNet,
                 archs: Sequence[Sequence[int]], device: torch.device, capture: CaptureBackend | None = None):
        self.variant, self.config, self.gen, self.net, self.device = variant, config, gen, feature_net, device
        self.archs = [list(a) for a in archs]
        self.rewards: dict[int, float] = {}
        self.index = 0
        self.pipeline = None
        self.cache = None
        if variant != "eager":
            self.cache = GraphCache(capture or capture_backend(device), graph_cache_sizes(config, 2)[1])
            self.pipeline = RewardPipeline(feature_net, config.rl_num_eval_img, config.eval_batch_size,
                                           config.is_splits, config.latent_dim, device, variant, self.cache)

    def __call__(self) -> float:
        i = self.index
        self.index += 1
        arch = self.archs[i]
        self.gen.set_arch(arch)
        torch.manual_seed(1000 + i)
        c = self.config
        if self.pipeline is None:
            with use_backend("torch"), fp32_precision("ieee"):
                value = inception_score(self.gen, self.net, c.rl_num_eval_img, c.latent_dim, c.eval_batch_size,
                                        c.is_splits, self.device)
        else:
            with use_backend("auto"):
                value = self.pipeline.score(self.gen, (len(arch), tuple(arch)))
        self.rewards[i] = value
        return value


def reward_gan(config: SearchConfig, device: torch.device) -> SharedGAN:
    """The shared GAN the rewards score: AutoGAN's init, seeded (the same for every variant)."""
    torch.manual_seed(1)
    return SharedGAN.create(config, device)


def mean_reward_flops(gan: SharedGAN, config: SearchConfig, archs: Sequence[Sequence[int]], per_image: int,
                      device: torch.device) -> float:
    flops = GanFlops(gan.gen, gan.dis, 2, config.latent_dim, config.dis_bs, config.gen_bs, config.n_critic, device)
    values = [reward_flops(flops, a, config.rl_num_eval_img, config.eval_batch_size, per_image) for a in archs]
    return sum(values) / len(values)


# ---------------------------------------------------------------------------------------------
# 3. A fraction of one search iteration, at every stage, and the projected paper search


@dataclasses.dataclass
class SearchPlan:
    """What one call of `SearchRunner` runs: `steps` D steps of shared training at each stage (the paper's
    iteration has `paper_steps`), then `ctrl_steps` controller steps (of the paper's 30) at `ctrl_stage`."""

    steps: int
    ctrl_steps: int
    ctrl_stage: int = 2
    paper_steps: int = 15 * (PAPER_IMAGES // 64)

    @property
    def fraction(self) -> float:
        return self.steps / self.paper_steps

    def label(self) -> str:
        return (f"1 search iteration: {self.steps} of {self.paper_steps} D steps at each stage + {self.ctrl_steps} "
                f"of 30 controller steps (stage {self.ctrl_stage})")


def search_plan(size: str) -> SearchPlan:
    return SearchPlan(steps=117, ctrl_steps=1) if size == "full" else SearchPlan(steps=5, ctrl_steps=1)


class SearchRunner:
    """`runner()` runs the search loop's pieces at paper settings for a fraction of one iteration at each
    stage: the phase's architectures (sampled before timing: one batched controller call), shared training
    through the variant's engine, then `train_controller` (REINFORCE steps scored by the variant's reward).
    The GAN, the controllers (one per stage, with random beams) and the graph caches persist across calls,
    as they do across a search's iterations. Each call's part times are kept for the projection."""

    def __init__(self, variant: str, config: SearchConfig, data: DeviceImageData, feature_net: FeatureNet,
                 plan: SearchPlan, rounds: int, device: torch.device, capture: CaptureBackend | None = None):
        self.variant, self.data, self.net, self.plan, self.device = variant, data, feature_net, plan, device
        self.config = dataclasses.replace(config, ctrl_step=plan.ctrl_steps)
        engine = "graph" if variant == "graph" else "eager"
        torch.manual_seed(0)
        self.state = SearchState.create(self.config, device, engine="eager")
        if variant == "graph":  # SearchState.create(engine="graph") on CUDA: capturable Adam
            self.state.gan = SharedGAN.create(self.config, device, capturable=device.type == "cuda")
        self.state.engine = engine
        self.graphs = self.reward_graphs = None
        if variant == "graph":  # one backend per cache (its own capture stream); sized for every stage's keys
            sizes = [graph_cache_sizes(self.config, s) for s in STAGES]
            self.graphs = GraphCache(capture or capture_backend(device), sum(size[0] for size in sizes))
            self.reward_graphs = GraphCache(capture or capture_backend(device), sum(size[1] for size in sizes))
        if variant != "eager":
            self.state.reward = RewardPipeline(feature_net, self.config.rl_num_eval_img, self.config.eval_batch_size,
                                               self.config.is_splits, self.config.latent_dim, device,
                                               self.config.reward_precision, self.reward_graphs)
        self.stages: dict[int, tuple] = {}
        for s in STAGES:
            controller, ctrl_opt = new_controller(self.config, s, device)
            beams = stage_beams(s, self.config.hid_size)
            self.stages[s] = (controller, ctrl_opt, None if beams is None else Beams(*(t.to(device) for t in (
                beams.archs, beams.hx, beams.cx))))
        # The phases' architectures of every call, sampled now (outside the timing), per stage.
        self.archs: list[dict[int, list[list[int]]]] = []
        for _ in range(rounds):
            calls = {}
            for s in STAGES:
                controller, _, beams = self.stages[s]
                with torch.no_grad():
                    calls[s] = controller.sample(plan.steps, beams).archs.tolist()
            self.archs.append(calls)
        self.calls = 0
        self.parts: list[dict[str, float]] = []  # per call: shared_<stage> and ctrl seconds
        self._tmp = tempfile.TemporaryDirectory(prefix="autogan-bench-search-")
        self.log = JsonlLog(Path(self._tmp.name) / "log.jsonl")
        self._stack = contextlib.ExitStack()
        self._windows = (self.state.g_window, self.state.d_window)

    def close(self) -> None:
        self._stack.close()
        self._tmp.cleanup()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self) -> None:
        import time

        archs = self.archs[self.calls % len(self.archs)]
        self.calls += 1
        parts: dict[str, float] = {}
        state, config = self.state, self.config
        with use_backend(backend_name(self.variant)):
            for s in STAGES:
                state.stage = s
                state.controller, state.ctrl_opt, state.beams = self.stages[s]
                self._sync()
                start = time.perf_counter()
                if self.graphs is None:
                    train_shared(state.gan, self.data, config, s, archs[s], *self._windows)
                else:
                    train_shared_graph(state.gan, self.data, config, s, archs[s], *self._windows, cache=self.graphs)
                self._sync()
                parts[f"shared_{s}"] = time.perf_counter() - start
            s = self.plan.ctrl_stage
            state.stage = s
            state.controller, state.ctrl_opt, state.beams = self.stages[s]
            start = time.perf_counter()
            with tqdm(total=config.ctrl_step, disable=True) as bar, \
                    (fp32_precision("ieee") if self.variant == "eager" else contextlib.nullcontext()):
                train_controller(state, self.net, self.device, self.log, bar)
            self._sync()
            parts["ctrl"] = time.perf_counter() - start
        self.parts.append(parts)

    def flop_per_call(self, per_image: int, sample: int = 24) -> float:
        """FLOPs of one call: each stage's D and G steps (the mean over up to `sample` of its architectures,
        times the steps) and the controller steps' rewards."""
        c = self.config
        total = 0.0
        gan = self.state.gan
        for s in STAGES:
            archs = self.archs[0][s]
            flops = GanFlops(gan.gen, gan.dis, s, c.latent_dim, c.dis_bs, c.gen_bs, c.n_critic, self.device)
            few = archs[:sample]
            d = statistics.fmean(flops.d_step(a) for a in few)
            g = statistics.fmean(flops.g_step(a) for a in few)
            total += len(archs) * d + math.ceil(len(archs) / c.n_critic) * g
            if s == self.plan.ctrl_stage:
                total += c.ctrl_step * c.ctrl_sample_batch * statistics.fmean(
                    reward_flops(flops, a, c.rl_num_eval_img, c.eval_batch_size, per_image) for a in few)
        return total

    def projection(self, skip_first: int) -> dict[str, Any]:
        """The paper search's wall time from the median part times of the calls after the first `skip_first`."""
        calls = self.parts[skip_first:] or self.parts
        med = {k: statistics.median(p[k] for p in calls) for k in calls[0]}
        paper = preset_config("paper")
        iters = [sum(1 for i in range(paper.max_search_iter) if paper.stage_at(i) == s) for s in STAGES]
        per_reward = med["ctrl"] / (self.plan.ctrl_steps * paper.ctrl_sample_batch)
        iteration = {s: med[f"shared_{s}"] / self.plan.fraction + paper.ctrl_step * per_reward for s in STAGES}
        topk_rewards = (len(STAGES) - 1 + 1) * paper.num_candidate  # two grows and the final top-k
        total = sum(iters[s] * iteration[s] for s in STAGES) + topk_rewards * per_reward
        return {
            "projected_paper_search_seconds": total,
            "projection": {
                "iterations_per_stage": iters, "paper_d_steps_per_iteration": self.plan.paper_steps,
                "measured_d_steps_per_stage": self.plan.steps, "shared_seconds_per_stage": [
                    med[f"shared_{s}"] for s in STAGES],
                "seconds_per_reward": per_reward, "rewards": 30 * paper.max_search_iter + topk_rewards,
                "iteration_seconds_per_stage": [iteration[s] for s in STAGES],
                "reward_precision": self.config.reward_precision,
                "not_counted": "checkpoints, sample grids, dynamic resets, the per-phase controller sample",
            },
        }


# ---------------------------------------------------------------------------------------------
# 4. Derived training: G iterations of one fixed architecture (train.py's loop without its evaluations)


class DerivedRunner:
    """`runner()` runs `g_iters` generator iterations of derived training (n_critic D steps, the G step and
    the EMA update after the first), as `train.train`'s loop does for the variant's engine."""

    def __init__(self, variant: str, config: TrainConfig, data: DeviceImageData, g_iters: int,
                 device: torch.device, compile_backend: str = "inductor", compile_mode: str | None = None,
                 capture: CaptureBackend | None = None):
        self.variant, self.config, self.g_iters, self.device = variant, config, g_iters, device
        torch.manual_seed(0)
        engine = "graph" if variant == "graph" and device.type == "cuda" else "eager"
        self.state = TrainState.create(config, PAPER_ARCH, device, engine=engine)
        self.state.attach_data(data)
        self.cache = self.step = None
        if variant == "graph":
            self.cache = GraphCache(capture or capture_backend(device), max_graphs=2)
            self.step = GANStep(self.state.gen, self.state.dis, self.state.gen_opt, self.state.dis_opt,
                                self.state.real_batches.images, config.dis_bs, config.gen_bs, config.latent_dim,
                                after_g=self.state.update_ema)
        self.d_step, self.g_step = (compiled_steps(compile_backend, compile_mode) if variant == "compile"
                                    else (discriminator_step, generator_step))
        self.flops = GanFlops(self.state.gen, self.state.dis, 2, config.latent_dim, config.dis_bs, config.gen_bs,
                              config.n_critic, device)

    def __call__(self) -> None:
        s, c = self.state, self.config
        with use_backend(backend_name(self.variant)):
            for _ in range(self.g_iters):
                for j in range(c.n_critic):
                    if self.step is not None:
                        self.step.real_index.copy_(s.real_batches.next_index())
                        self.cache.run(("train", j == 0, c.dis_bs, c.gen_bs),
                                       self.step.d_g_step if j == 0 else self.step.d_step)
                        continue
                    self.d_step(s.gen, s.dis, s.dis_opt, s.real_batches.next(), c.latent_dim)
                    if j == 0:
                        self.g_step(s.gen, s.dis, s.gen_opt, c.gen_bs, c.latent_dim)
                        s.update_ema()
                s.iter += 1

    def flop_per_call(self) -> float:
        return self.g_iters * self.flops.steps([list(PAPER_ARCH)] * self.config.n_critic)


__all__ = ["STAGES", "VARIANTS", "DerivedRunner", "RewardRunner", "SearchPlan", "SearchRunner", "TinyFeatureNet",
           "UnitRunner", "compiled_steps", "feature_net_flops_per_image", "reward_feature_net",
           "reward_gan", "search_plan", "shared_config", "stage_beams", "stage_label", "stream_archs",
           "synthetic_data", "train_config"]
