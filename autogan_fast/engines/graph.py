"""The graph engine: GAN training steps over static buffers, replayed as captured CUDA graphs.

The eager engine (`eager.train_shared`, `train.train`'s loop) launches hundreds of small kernels per
step and reads the device from the host. Here a step is a capture-safe function of static buffers:

- the real batch is gathered on the device from the device-resident uint8 data through a static
  index buffer, which the host loop refills from the epoch's permutation before each step (a
  device-to-device copy; permutations are drawn on the device at epoch starts, no host sync);
- noise is drawn on the device inside the step; D step, then on D steps 0, n_critic, 2 n_critic, ...
  the G step (and the EMA update in derived training); Adam is `capturable` on CUDA; spectral-norm
  buffers are updated in place by the fused kernels;
- losses go into device ring buffers (`LossWindow.push_on_device`), and the dynamic-reset condition is
  evaluated on the device at every G step into a sticky flag. The host reads that flag once every
  `RESET_CHECK_EVERY` D steps: a reset found there is one the eager engine fires at a G step at most
  RESET_CHECK_EVERY - 1 D steps earlier (the windows, the variances and the rule are the same).

The maths is the eager engine's: the same `discriminator_step` / `generator_step` functions, the same
order of random draws, the same ring-buffer contents; tests/test_graph_engine.py runs both on the CPU
(no capture) and compares weights and losses bit for bit. `GraphCache` (cuda_graphs.py) keeps one graph
per (stage, architecture, step kind, batch shapes), the architecture as `search_space.arch_key` writes it
(the reward's graphs use the same key).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..config import ENGINES, SearchConfig, check_engine
from ..data import DeviceImageData, gather_batch
from ..errors import UsageError
from ..search_space import arch_key
from .cuda_graphs import GraphCache
from .eager import LossWindow, SharedGAN, TrainSummary, discriminator_step, generator_step, loss_variance_low

__all__ = ["ENGINES", "RESET_CHECK_EVERY", "GANStep", "resolve_engine", "train_shared_graph"]

# Host reads of the dynamic-reset flag: one per this many D steps. Each read drains the queue of
# replays the CPU has run ahead (one pipeline bubble per 50 steps, a few % of the step time); a
# reset fires at most 49 D steps (~10 G steps) after the eager engine's, negligible against
# AutoGAN's 500-loss windows.
RESET_CHECK_EVERY = 50


def resolve_engine(engine: str, device: torch.device, world_size: int = 1) -> str:
    """"auto" is the graph engine on CUDA in a single process and the eager one elsewhere; "graph" needs
    CUDA and one process (its captured steps hold no collectives: under torchrun, ranks run eagerly)."""
    check_engine(engine)
    if engine == "auto":
        return "graph" if device.type == "cuda" and world_size == 1 else "eager"
    if engine == "graph" and device.type != "cuda":
        raise UsageError(f"--engine graph captures CUDA graphs and needs a CUDA device, not {device.type}; "
                         f"use --engine eager (or auto)")
    if engine == "graph" and world_size > 1:
        raise UsageError(f"--engine graph runs in one process; with {world_size} torchrun processes use "
                         f"--engine eager (or auto)")
    return engine


class GANStep:
    """D and D + G steps of one GAN over static buffers: the functions the graph cache captures.

    Everything here is device work: no host reads, no host counters (the loop keeps those).
    The steps take the generator's architecture (`gen(z, arch)`: the search's shared generator; None for
    a derived one, derived training), so one step object serves every architecture, each its own graph.
    `after_g` runs right after each G step inside the same graph (derived training's EMA update).
    `precision`'s autocast region (engines/precision.py) is entered inside each step, so a captured
    graph holds the casts and the reduced-precision kernels.
    """

    def __init__(self, gen: nn.Module, dis: nn.Module, gen_opt: torch.optim.Optimizer,
                 dis_opt: torch.optim.Optimizer, images: torch.Tensor, dis_bs: int, gen_bs: int, latent_dim: int,
                 d_window: LossWindow | None = None, g_window: LossWindow | None = None,
                 reset_threshold: float | None = None, after_g: Callable[[], None] | None = None,
                 precision: str = "fp32"):
        self.gen, self.dis, self.gen_opt, self.dis_opt = gen, dis, gen_opt, dis_opt
        self.images = images  # uint8 (N, 3, H, W) at the training resolution, on the device
        self.dis_bs, self.gen_bs, self.latent_dim = dis_bs, gen_bs, latent_dim
        self.d_window, self.g_window = d_window, g_window
        self.reset_threshold = reset_threshold
        self.after_g = after_g
        self.precision = precision
        device = images.device
        self.real_index = torch.zeros(dis_bs, dtype=torch.long, device=device)  # refilled before each step
        self.d_sum = torch.zeros((), device=device)  # losses summed on the device, read once per phase
        self.g_sum = torch.zeros((), device=device)
        self.armed = torch.zeros((), dtype=torch.bool, device=device)  # set by the host once both windows fill
        self.armed_host = False  # the host's copy of `armed` (it set it: no read needed)
        self.reset_due = torch.zeros((), dtype=torch.bool, device=device)  # sticky: a reset condition was met

    def new_phase(self) -> None:
        """Zero the phase's loss sums and the reset flag (between replays: plain device ops)."""
        for t in (self.d_sum, self.g_sum, self.armed, self.reset_due):
            t.zero_()
        self.armed_host = False

    def d_step(self, arch: Sequence[int] | None = None) -> None:
        real = gather_batch(self.images, self.real_index)
        d_loss = discriminator_step(self.gen, self.dis, self.dis_opt, real, self.latent_dim,
                                    precision=self.precision, arch=arch)
        if self.d_window is not None:
            self.d_window.push_on_device(d_loss)
        self.d_sum += d_loss

    def d_g_step(self, arch: Sequence[int] | None = None) -> None:
        self.d_step(arch)
        g_loss = generator_step(self.gen, self.dis, self.gen_opt, self.gen_bs, self.latent_dim,
                                precision=self.precision, arch=arch)
        if self.g_window is not None:
            self.g_window.push_on_device(g_loss)
        self.g_sum += g_loss
        if self.after_g is not None:
            self.after_g()
        if self.reset_threshold is not None:  # the eager rule, evaluated on the device into a sticky flag
            self.reset_due |= self.armed & loss_variance_low(self.g_window, self.d_window, self.reset_threshold)


def train_shared_graph(gan: SharedGAN, data: DeviceImageData, config: SearchConfig, stage: int,
                       archs: Sequence[Sequence[int]], g_window: LossWindow, d_window: LossWindow,
                       cache: GraphCache, progress: Callable[[int], None] | None = None,
                       check_every: int = RESET_CHECK_EVERY) -> TrainSummary:
    """The graph engine's `eager.train_shared`: same arguments and result, one cached graph per
    (stage, architecture, step kind, batch shapes); the dynamic reset is checked every `check_every`."""
    gan.gen.train()
    gan.dis.train()
    gan.set_stage(stage)
    resolution = gan.gen.output_resolution(stage)
    real_batches = data.batches(config.dis_bs, resolution)  # a fresh pass, as the eager engine
    # The captured graphs read and write this step's buffers by address, and outlive this call: one step
    # object per (networks, resolution, windows) for the cache's lifetime, its per-phase state reset here.
    step_key = ("gan-step", id(gan.gen), id(gan.dis), resolution, id(g_window), id(d_window))
    step = cache.buffers.get(step_key)
    if step is None:
        step = cache.buffers[step_key] = GANStep(
            gan.gen, gan.dis, gan.gen_opt, gan.dis_opt, real_batches.images, config.dis_bs, config.gen_bs,
            config.latent_dim, d_window, g_window, config.dynamic_reset_threshold, precision=config.precision)
    step.new_phase()
    size = len(d_window.values)
    steps = g_steps = 0
    reset = False
    for i, arch in enumerate(archs):
        step.real_index.copy_(real_batches.next_index())  # device to device, outside the graph
        with_g = i % config.n_critic == 0
        if with_g and not step.armed_host and g_window.count + 1 >= size and d_window.count + 1 >= size:
            step.armed.fill_(True)  # this G step fills both windows: from it on the rule applies
            step.armed_host = True
        key = (stage, arch_key(arch), with_g, config.dis_bs, config.gen_bs)
        cache.run(key, functools.partial(step.d_g_step if with_g else step.d_step, arch))
        steps += 1
        d_window.count += 1
        if with_g:
            g_window.count += 1
            g_steps += 1
        if progress is not None:
            progress(1)
        if (steps % check_every == 0 or steps == len(archs)) and bool(step.reset_due.item()):  # host sync
            g_window.clear()
            d_window.clear()
            reset = True
            break
    sums = torch.stack([step.d_sum / max(steps, 1), step.g_sum / max(g_steps, 1)]).tolist()  # host sync
    return TrainSummary(steps, g_steps, sums[0], sums[1], reset)
