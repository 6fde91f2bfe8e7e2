"""Shared-GAN training: hinge loss, n_critic, dynamic reset (the eager engine; `--engine eager`).

As AutoGAN's `train_shared`: real batches from shuffled epochs (a new pass starts with every call),
one controller-sampled architecture per D step, the G step on D steps 0, n_critic, 2 n_critic, ...
(`step % n_critic == 0`), population variances of the last `dynamic_reset_window` losses. Losses stay
on the device in ring buffers.

Deliberate differences from the reference, both for speed:
- D sees real and fake images in ONE forward (AutoGAN runs two), so its spectral-norm power step runs
  once per D step instead of twice; the hinge loss and the gradients are the same function of the
  weights.
- The dynamic-reset check runs at G steps (AutoGAN checks after every D step once the G window is
  full): it reads the windows back to the host (a marked sync), once per G step instead of per D step.
  A reset can fire up to n_critic - 1 D steps later than the reference's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import SearchConfig
from ..data import DeviceImageData
from ..distributed import SINGLE, World
from ..models import Discriminator, SharedGenerator, init_deconvs_as_nearest, initialized_gan
from .precision import autocast, new_adam, set_layout, to_layout


@dataclass
class SharedGAN:
    """The weight-sharing generator, the discriminator and their Adam optimizers."""

    gen: SharedGenerator
    dis: Discriminator
    gen_opt: torch.optim.Adam
    dis_opt: torch.optim.Adam

    @classmethod
    def create(cls, config: SearchConfig, device: torch.device, capturable: bool = False,
               world: World = SINGLE) -> SharedGAN:
        """Fresh nets (AutoGAN's init) in `config.precision`'s memory format and Adam optimizers (fused on
        CUDA: `precision.new_adam`); `capturable` Adam keeps its step counts on the device, as CUDA-graph
        capture needs (the graph engine on CUDA). Under torchrun G's batch norms take global-batch
        statistics (`sync_batch_norm`)."""
        gen, dis = cls.fresh_nets(config, device, world)
        set_layout(gen, config.precision)
        betas = (config.beta1, config.beta2)
        return cls(gen, dis, new_adam(gen.parameters(), config.g_lr, betas, device, capturable),
                   new_adam(dis.parameters(), config.d_lr, betas, device, capturable))

    @staticmethod
    def fresh_nets(config: SearchConfig, device: torch.device, world: World = SINGLE,
                   ) -> tuple[SharedGenerator, Discriminator]:
        """AutoGAN's init, the deconvs started as nearest upsampling (`init_deconvs_as_nearest`: why there)."""
        gen, dis = initialized_gan(SharedGenerator(config.latent_dim, config.gf_dim, config.bottom_width),
                                   config.df_dim, device, world.distributed)
        init_deconvs_as_nearest(gen)
        return gen, dis

    @torch.no_grad()
    def reinitialize(self, config: SearchConfig, world: World = SINGLE, generator: bool = True) -> None:
        """AutoGAN's dynamic reset, in place: every parameter and buffer gets the value a fresh
        `create` would give from the same random state (the same draws, in the same order), and Adam's
        state its fresh value (zeros: what Adam's first step would create). The tensors stay the same
        objects at the same addresses, so captured CUDA graphs that address them stay valid.

        With `generator` False only D and its Adam state restart; G keeps its weights. The same draws are
        made either way, so the random stream after a reset does not depend on its kind."""
        device = next(self.gen.parameters()).device
        fresh_gen, fresh_dis = self.fresh_nets(config, device, world)
        restarted = [(self.gen, fresh_gen, self.gen_opt)] if generator else []  # (net, fresh values, optimizer)
        restarted.append((self.dis, fresh_dis, self.dis_opt))
        for net, fresh, _ in restarted:
            values = {**dict(fresh.named_parameters()), **dict(fresh.named_buffers())}
            tensors = [*net.named_parameters(), *net.named_buffers()]
            if {name for name, _ in tensors} != set(values):  # a net whose tensors a fresh one lacks
                raise RuntimeError(f"cannot reset {type(net).__name__} in place: its tensors differ from a fresh one's")
            for name, tensor in tensors:
                tensor.copy_(values[name])
        for _, _, opt in restarted:
            for state in opt.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        value.zero_()

    def state_dict(self) -> dict:
        return {"gen": self.gen.state_dict(), "dis": self.dis.state_dict(),
                "gen_opt": self.gen_opt.state_dict(), "dis_opt": self.dis_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.load_state_dict(state["gen"])
        self.dis.load_state_dict(state["dis"])
        self.gen_opt.load_state_dict(state["gen_opt"])
        self.dis_opt.load_state_dict(state["dis_opt"])

    def set_stage(self, stage: int) -> None:
        self.dis.stage = stage


def make_capturable(opt: torch.optim.Optimizer, capturable: bool, tensor_lr: bool = False) -> None:
    """Set an Adam optimizer's `capturable` mode after `load_state_dict` (which restores the saved run's
    flags): step counts on the parameters' device when capturable (CUDA graphs), on the host otherwise;
    with `tensor_lr` the learning rate becomes a device tensor, so a captured step reads its current
    value (learning-rate decay under CUDA graphs)."""
    for group in opt.param_groups:
        group["capturable"] = capturable
        lr = group["lr"]
        device = group["params"][0].device
        if tensor_lr:  # a checkpoint's tensor lr comes back on the CPU: a graph would bake its value in
            group["lr"] = (lr.detach().to(device, torch.float32).clone() if isinstance(lr, torch.Tensor)
                           else torch.tensor(float(lr), device=device))
        elif isinstance(lr, torch.Tensor):
            group["lr"] = float(lr)  # host sync: once, when the optimizer is set up
        for p in group["params"]:
            state = opt.state.get(p)
            if state and "step" in state:  # fused Adam reads its step counts on the device
                on_device = capturable or group.get("fused")
                state["step"] = state["step"].to(p.device if on_device else "cpu", torch.float32)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; a tensor one (see `make_capturable`) is filled in place."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class LossWindow:
    """The last `size` losses in a device ring buffer; the variance check is AutoGAN's dynamic reset.

    `push` (eager engine) writes at the host-counted slot; `push_on_device` (graph engine, capture-safe) writes at
    a device-held position and leaves `count` to the caller, who advances it outside the captured step.
    Both fill the ring in the same order.
    """

    def __init__(self, size: int, device: torch.device):
        self.values = torch.zeros(size, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)  # next slot, for `push_on_device`
        self.count = 0  # losses pushed since the last clear (host counter: no sync)

    def push(self, loss: torch.Tensor) -> None:
        self.values[self.count % len(self.values)] = loss.detach()
        self.count += 1

    def push_on_device(self, loss: torch.Tensor) -> None:
        """Device-only push (no host index, no count): what a captured step records."""
        self.values.index_copy_(0, self.position.view(1), loss.detach().view(1).to(self.values.dtype))
        self.position.add_(1).remainder_(len(self.values))

    @property
    def full(self) -> bool:
        return self.count >= len(self.values)

    def clear(self) -> None:
        self.count = 0
        self.position.zero_()

    def state_dict(self) -> dict:
        return {"values": self.values.cpu(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.values.copy_(state["values"])
        self.count = int(state["count"])
        self.position.fill_(self.count % len(self.values))


def loss_variance_low(g_window: LossWindow, d_window: LossWindow, threshold: float) -> torch.Tensor:
    """On the device: either window's loss variance below the threshold (AutoGAN's reset condition), or
    not finite.

    Population variances (divide by the window size), as AutoGAN's `RunningStats.get_var`. A window that
    holds a NaN or infinite loss compares false with any threshold, so it would never reset: it counts
    as due instead, which ends a diverged phase at its next check, and the caller, reading the phase's
    loss means, stops the run (a reset would only hide the divergence)."""
    variances = torch.stack([g_window.values.var(unbiased=False), d_window.values.var(unbiased=False)])
    return ((variances < threshold) | ~torch.isfinite(variances)).any()


def dynamic_reset_due(g_window: LossWindow, d_window: LossWindow, threshold: float) -> bool:
    """Both windows full and `loss_variance_low` (host sync: one per G step)."""
    if not (g_window.full and d_window.full):
        return False
    return bool(loss_variance_low(g_window, d_window, threshold).item())  # host sync


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def rank_noise(batch_size: int, latent_dim: int, device: torch.device, world: World) -> torch.Tensor:
    """This rank's rows of the global batch's noise: every rank draws all of it (replicated streams)."""
    return torch.randn(batch_size, latent_dim, device=device)[world.rows(batch_size)]


def discriminator_step(gen: nn.Module, dis: nn.Module, dis_opt: torch.optim.Optimizer, real: torch.Tensor,
                       latent_dim: int, world: World = SINGLE, precision: str = "fp32",
                       arch: Sequence[int] | None = None) -> torch.Tensor:
    """One hinge-loss D update on `real` and as many fakes (one D forward for both); returns the loss.

    The fakes are `gen(z, arch)`: the shared generator runs architecture `arch`; a derived generator
    (derived training: `arch` None) its own.

    Under torchrun `real` is this rank's rows of the global batch; D's gradients are averaged over the
    ranks by DDP (a DistributedDataParallel `dis`) or else here, the returned loss with them. The
    forward and the loss run in `precision`'s arithmetic (engines/precision.py), the backward and the
    update outside it. (`.to`, `to_layout` and `.float` return their tensor itself at fp32: nothing
    changes there.)
    """
    z = rank_noise(real.shape[0] * world.size, latent_dim, real.device, world)
    with autocast(precision, real.device):
        with torch.no_grad():
            fake = gen(z, arch)
        logits = dis(to_layout(torch.cat([real, fake.to(real.dtype)]), precision)).float()
        d_loss = hinge_d_loss(logits[: real.shape[0]], logits[real.shape[0]:])
    return optimizer_step(dis, dis_opt, d_loss, world)


def generator_step(gen: nn.Module, dis: nn.Module, gen_opt: torch.optim.Optimizer, batch_size: int,
                   latent_dim: int, world: World = SINGLE, precision: str = "fp32",
                   arch: Sequence[int] | None = None) -> torch.Tensor:
    """One hinge-loss G update on `batch_size` fakes `gen(z, arch)` (the global batch; this rank's rows
    under torchrun, gradients averaged as in `discriminator_step`; `arch` as there); returns the loss.
    Also fills D's grads (the next D step clears them first). Forward and loss in `precision`'s
    arithmetic, as `discriminator_step`."""
    device = next(gen.parameters()).device
    z = rank_noise(batch_size, latent_dim, device, world)
    with autocast(precision, device):
        g_loss = -dis(gen(z, arch)).float().mean()
    return optimizer_step(gen, gen_opt, g_loss, world)


def optimizer_step(net: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, world: World) -> torch.Tensor:
    """Backward `loss` into `net`, average the gradients over the ranks (unless DDP already does), step;
    returns the loss, detached (the ranks' mean under torchrun)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if world.distributed and not isinstance(net, DistributedDataParallel):
        loss = world.average_gradients(net, loss)
    opt.step()
    return loss.detach()


@dataclass
class TrainSummary:
    """What one search iteration's shared-GAN training did."""

    steps: int  # D steps run
    g_steps: int
    d_loss: float  # mean over the iteration's D steps
    g_loss: float  # mean over the iteration's G steps
    dynamic_reset: bool


def train_shared(gan: SharedGAN, data: DeviceImageData, config: SearchConfig, stage: int,
                 archs: Sequence[Sequence[int]], g_window: LossWindow, d_window: LossWindow,
                 progress: Callable[[int], None] | None = None, world: World = SINGLE) -> TrainSummary:
    """The eager engine: one D step per architecture of `archs` (the phase's, sampled before it starts;
    `config.shared_epoch` epochs of them), the G step on D steps 0, n_critic, 2 n_critic, ...

    Ends early on a dynamic reset (clearing both windows); the caller re-initializes the GAN after
    the iteration's controller steps, as AutoGAN does. Under torchrun gradients and losses are averaged
    over the ranks, so the windows (and the reset) are the same on every rank.
    """
    gan.gen.train()
    gan.dis.train()
    gan.set_stage(stage)
    resolution = gan.gen.output_resolution(stage)
    device = data.device
    total_steps = len(archs)
    # a fresh pass, as AutoGAN's new loader iterator
    real_batches = data.batches(config.dis_bs, resolution, world.rows(config.dis_bs))
    d_sum = torch.zeros((), device=device)
    g_sum = torch.zeros((), device=device)
    g_steps = 0
    reset = False
    for step, arch in enumerate(archs):  # host lists: choosing the path reads nothing from the device
        d_loss = discriminator_step(gan.gen, gan.dis, gan.dis_opt, real_batches.next(), config.latent_dim, world,
                                    config.precision, arch)
        d_window.push(d_loss)
        d_sum += d_loss
        if step % config.n_critic == 0:  # D steps 0, n_critic, 2 n_critic, ... as AutoGAN
            g_loss = generator_step(gan.gen, gan.dis, gan.gen_opt, config.gen_bs, config.latent_dim, world,
                                    config.precision, arch)
            g_window.push(g_loss)
            g_sum += g_loss
            g_steps += 1
            if dynamic_reset_due(g_window, d_window, config.dynamic_reset_threshold):
                g_window.clear()
                d_window.clear()
                reset = True
        if progress is not None:
            progress(1)
        if reset:
            break
    steps = step + 1 if total_steps else 0
    return TrainSummary(steps, g_steps, (d_sum / max(steps, 1)).item(), (g_sum / max(g_steps, 1)).item(), reset)
