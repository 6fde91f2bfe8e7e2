"""The end-to-end workloads: a shared-GAN unit, the reward, a stage's stream of shared-GAN steps, derived training.

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
The `stage_stream` row has its own variant list (`STREAM_VARIANTS`, data: engine, kernels, precision).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import torch
from torch import nn

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
from autogan_fast.jobs.train import PAPER_ARCH
from autogan_fast.kernels import use_backend
from autogan_fast.metrics.feature_net import FeatureNet, check_uint8_images
from autogan_fast.metrics.scoring import inception_score
from autogan_fast.nas.controller import Beams, Controller
from autogan_fast.nas.loop import graph_cache_sizes
from autogan_fast.nas.reward import RewardPipeline, fp32_precision
from autogan_fast.training.loop import TrainState

from .flops import GanFlops, feature_net_flops_per_image, reward_flops
from .harness import sync

STAGES = (0, 1, 2)
VARIANTS = ("eager", "triton", "graph", "compile")

# The synthetic data's size at full size: CIFAR-10's 50,000 images.
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
        torch.manual_seed(1000 + i)
        c = self.config
        if self.pipeline is None:
            with use_backend("torch"), fp32_precision("ieee"):
                value = inception_score(self.gen, arch, self.net, c.rl_num_eval_img, c.latent_dim, c.eval_batch_size,
                                        c.is_splits, self.device)
        else:
            with use_backend("auto"):
                value = self.pipeline.score(self.gen, arch)
        self.rewards[i] = value
        return value


def reward_gan(config: SearchConfig, device: torch.device) -> SharedGAN:
    """The shared GAN the rewards score: AutoGAN's init, seeded (the same for every variant)."""
    torch.manual_seed(1)
    return SharedGAN.create(config, device)


def mean_reward_flops(gan: SharedGAN, config: SearchConfig, stage: int, archs: Sequence[Sequence[int]],
                      per_image: int, device: torch.device) -> float:
    flops = GanFlops(gan.gen, gan.dis, stage, config.latent_dim, config.dis_bs, config.gen_bs, config.n_critic, device)
    values = [reward_flops(flops, a, config.rl_num_eval_img, config.eval_batch_size, per_image) for a in archs]
    return sum(values) / len(values)


# ---------------------------------------------------------------------------------------------
# 3. A steady stream of a stage's shared-GAN steps, as a real stage runs them (the projection's input)


@dataclasses.dataclass(frozen=True)
class StreamVariant:
    """One variant of the `stage_stream` row: which engine, kernels and precision train the shared GAN.

    The list `STREAM_VARIANTS` is data: a variant whose switch is not built yet (a config field, a
    module attribute) is recorded as skipped with `missing_reason`, so a new switch is one entry here."""

    name: str  # the row's variant
    engine: str  # "eager" or "graph" (the engine `--engine` picks)
    kernels: str  # "torch" (the PyTorch reference), "fused" (the Triton ops forced), or "auto" (`--kernels auto`)
    reward_variant: str  # the `reward` row variant the projection pairs it with
    overrides: tuple[tuple[str, Any], ...] = ()  # SearchConfig fields set for it (e.g. precision)
    requires: str | None = None  # "module:attribute" that must exist (a switch another change adds)
    requires_what: str = ""  # what that switch is, for the skip reason
    needs_cuda: bool = False  # runs only on CUDA (the graph engine runs uncaptured on a CPU: a smoke test)

    def backend(self, device: torch.device) -> str:
        """The fused ops' backend: the reference on a CPU (Triton's interpreter is not a benchmark)."""
        if self.kernels == "torch" or device.type != "cuda":
            return "torch"
        return "triton" if self.kernels == "fused" else "auto"

    def missing_reason(self, device: torch.device) -> str | None:
        """Why this variant cannot run here (None: it can)."""
        if self.needs_cuda and device.type != "cuda":
            return "needs CUDA (Triton kernels; the Triton interpreter is not a benchmark)"
        fields = {f.name for f in dataclasses.fields(SearchConfig)}
        for name, _ in self.overrides:
            if name not in fields:
                return f"not built yet: {self.requires_what} (SearchConfig has no field {name!r})"
        if self.requires is not None:
            module, _, attribute = self.requires.partition(":")
            try:
                found = hasattr(importlib.import_module(module), attribute)
            except ImportError:
                found = False
            if not found:
                return f"not built yet: {self.requires_what} ({module} has no {attribute})"
        return None

    def config(self, config: SearchConfig) -> SearchConfig:
        # the dynamic reset off: a reset ends the phase early, so blocks would differ in steps (not counted)
        return dataclasses.replace(config, dynamic_reset_threshold=0.0, **dict(self.overrides))


STREAM_VARIANTS = (
    StreamVariant("eager", "eager", "torch", reward_variant="eager"),
    StreamVariant("triton", "eager", "fused", reward_variant="fp32", needs_cuda=True),
    StreamVariant("graph", "graph", "fused", reward_variant="fp32"),
    # `--kernels auto` timing each fused op against its reference before any capture (issue 23 item 3)
    StreamVariant("graph+auto", "graph", "auto", reward_variant="fp32",
                  requires="autogan_fast.kernels:autoselect_choices",
                  requires_what="--kernels auto timing the backends"),
    # mixed-precision shared training (issue 23 item 5), paired with the bf16 reward
    StreamVariant("graph+bf16", "graph", "auto", reward_variant="bf16", overrides=(("precision", "bf16"),),
                  requires_what="--precision {fp32,tf32,bf16} for shared training"),
)


def stream_steps(size: str) -> tuple[int, int]:
    """(D steps of the stream, D steps per timed block): full 3,000 in blocks of 50 (the graph engine's
    host-read period), tiny 10 in blocks of 5 (one unit)."""
    return (3000, 50) if size == "full" else (10, 5)


class StreamRunner:
    """A stream of a stage's shared-GAN D steps (the G step on every n_critic-th), the architectures a
    stage-s controller samples (`stream_archs`: fresh, with random beams), through the variant's engine.

    `block(i)` trains the i-th block of the stream. The graph cache persists across the whole stream and
    across passes, as within a real stage; `first_pass()` runs the stream once (every new key is warmed up
    and captured there: a stage's first iteration), the timed passes after it replay (its later ones)."""

    def __init__(self, variant: StreamVariant, config: SearchConfig, data: DeviceImageData, stage: int,
                 archs: Sequence[Sequence[int]], block_steps: int, device: torch.device,
                 capture: CaptureBackend | None = None):
        self.variant, self.data, self.stage, self.device = variant, data, stage, device
        self.config = variant.config(config)
        self.base_config = config  # FLOPs are counted on a plain fp32 GAN of it (the same maths)
        self.archs = [list(a) for a in archs]
        self.block_steps = block_steps
        if block_steps % self.config.n_critic or len(self.archs) % block_steps:
            raise ValueError(f"blocks of {block_steps} D steps must hold whole units and tile the stream")
        torch.manual_seed(0)
        graph = variant.engine == "graph"
        self.gan = SharedGAN.create(self.config, device, capturable=graph and device.type == "cuda")
        size = self.config.dynamic_reset_window
        self.windows = (LossWindow(size, device), LossWindow(size, device))
        self.key_space = graph_cache_sizes(self.config, stage)[0]
        self.cache = GraphCache(capture or capture_backend(device), self.key_space) if graph else None
        self.position = 0
        self.losses: list[tuple[float, float]] = []  # (d, g) mean loss of each block (host floats)

    @property
    def blocks(self) -> int:
        return len(self.archs) // self.block_steps

    def __call__(self) -> None:
        """The next block of the stream (cycling)."""
        i = self.position % self.blocks
        self.position += 1
        archs = self.archs[i * self.block_steps:(i + 1) * self.block_steps]
        with use_backend(self.variant.backend(self.device)):
            if self.cache is None:
                summary = train_shared(self.gan, self.data, self.config, self.stage, archs, *self.windows)
            else:
                summary = train_shared_graph(self.gan, self.data, self.config, self.stage, archs, *self.windows,
                                             cache=self.cache)
        self.losses.append((summary.d_loss, summary.g_loss))

    def first_pass(self) -> dict[str, Any]:
        """Run the whole stream once from its start (graph variants: the captures); its statistics."""
        seconds = 0.0
        self.position = 0
        for _ in range(self.blocks):
            sync(self.device)
            start = time.perf_counter()
            self()
            sync(self.device)
            seconds += time.perf_counter() - start
        self.position = 0
        out: dict[str, Any] = {"first_pass_seconds": seconds, "first_pass_steps": len(self.archs)}
        if self.cache is not None:
            out["graph_stats_first_pass"] = self.cache.stats.as_dict()
        return out

    def warm_up(self) -> None:
        """An eager variant's warm-up: one block (allocator, cuDNN algorithms, Triton's JIT and autotuning)."""
        self()
        self.position = 0

    def flop_per_block(self, sample: int = 24) -> float:
        """FLOPs of one block: the mean D and G step over up to `sample` of the stream's architectures."""
        c = self.config
        gan = SharedGAN.create(self.base_config, self.device) if self.variant.overrides else self.gan
        flops = GanFlops(gan.gen, gan.dis, self.stage, c.latent_dim, c.dis_bs, c.gen_bs, c.n_critic, self.device)
        few = self.archs[:sample]
        d = statistics.fmean(flops.d_step(a) for a in few)
        g = statistics.fmean(flops.g_step(a) for a in few)
        return self.block_steps * d + self.block_steps // c.n_critic * g

    def stream_info(self, mean_block_s: float | None, iqr_block_s: float | None,
                    first: dict[str, Any]) -> dict[str, Any]:
        """The row's extra_info from the timed blocks' mean and IQR and the first pass."""
        n = self.block_steps
        step = None if mean_block_s is None else mean_block_s / n
        info: dict[str, Any] = {
            "mean_step_seconds": step, "iqr_step_seconds": None if iqr_block_s is None else iqr_block_s / n,
            "key_space": self.key_space, "distinct_archs": len({tuple(a) for a in self.archs}),
            "captures": 0 if self.cache is None else self.cache.stats.captures,
            "d_loss_last_block": self.losses[-1][0] if self.losses else None,
        }
        if self.cache is not None:
            stats = self.cache.stats.as_dict()
            captured = first.get("graph_stats_first_pass", {}).get("captures", 0)
            info.update(graph_stats=stats, hit_rate=stats["hit_rate"],
                        hit_rate_first_pass=first.get("graph_stats_first_pass", {}).get("hit_rate"),
                        capture_seconds=stats["capture_seconds"])
            if step is not None and captured:
                # what a first occurrence (eager warm-up + capture) costs beyond a replayed step
                info["capture_overhead_seconds"] = (first["first_pass_seconds"] - len(self.archs) * step) / captured
        return info


# ---------------------------------------------------------------------------------------------
# 4. Derived training: G iterations of one fixed architecture (training/loop.py's loop without its evaluations)


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


__all__ = ["STAGES", "STREAM_VARIANTS", "VARIANTS", "DerivedRunner", "RewardRunner", "StreamRunner", "StreamVariant",
           "TinyFeatureNet", "UnitRunner", "compiled_steps", "feature_net_flops_per_image", "reward_feature_net",
           "reward_gan", "shared_config", "stage_beams", "stage_label", "stream_archs", "stream_steps",
           "synthetic_data", "train_config"]
