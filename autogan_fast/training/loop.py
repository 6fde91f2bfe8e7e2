"""Derived training: a discovered architecture trained from scratch (AutoGAN's `train_derived`), its state
(the checkpoint) and its loop; the job in `jobs/train.py` runs it in a run folder.

The architecture is fixed for the whole run (`DerivedGenerator`), so unlike the search's shared GAN the
loop captures two graphs only (the D step, and the D + G + EMA step).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import TrainConfig
from ..data import DeviceImageData, EpochBatches
from ..distributed import SINGLE, World, data_parallel
from ..divergence import GAN_SETTINGS, NotFinite, check_checkpoint, diverged_error, require_finite
from ..engines.cuda_graphs import GraphCache, capture_backend
from ..engines.eager import discriminator_step, generator_step, make_capturable, set_lr
from ..engines.graph import GANStep
from ..engines.precision import new_adam, set_layout
from ..kernels import autoselect_choices
from ..metrics.feature_net import FeatureNet
from ..metrics.scoring import score_generator
from ..models import Discriminator, initialized_gan
from ..models.derived import DerivedGenerator
from ..models.samples import save_samples
from ..nas.collapse import stage_collapsed
from ..pretrained import CHECKPOINT_FORMAT
from ..runs.checkpoint import restore_rng_state, rng_state, save_checkpoint, write_json
from ..runs.folder import CHECKPOINT, LOG, RESULT, JsonlLog, device_name, log_kernel_choices
from ..tensorboard import ScalarLogger

BEST = "best.pt"  # the generator state of the evaluation with the lowest FID (a run folder's file)


@dataclass
class TrainState:
    """Everything a derived-training run needs to continue exactly where it stopped (the checkpoint)."""

    config: TrainConfig
    arch: tuple[int, ...]
    gen: DerivedGenerator
    dis: Discriminator
    ema: DerivedGenerator  # moving average of gen's parameters, gen's buffers: the generator evaluated
    gen_opt: torch.optim.Adam
    dis_opt: torch.optim.Adam
    fixed_z: torch.Tensor  # latent batch of the sample grids
    iter: int = 0  # generator iterations done
    last: dict | None = None  # metrics of the latest evaluation
    best: dict | None = None  # metrics of the evaluation with the lowest FID, with its "iter"
    wall_seconds: float = 0.0  # time spent in earlier sessions of this run
    real_batches: EpochBatches | None = None  # the shuffled epochs of real images (set by `attach_data`)
    batches_state: dict | None = None  # a checkpoint's epoch position, applied by `attach_data`
    engine: str = "eager"  # the resolved engine (not saved: a run may resume on another machine)
    world: World = SINGLE  # the torchrun ranks training together (not saved: any world size resumes)

    def attach_data(self, data: DeviceImageData) -> None:
        """Draw real batches from `data` (this rank's rows), continuing the checkpointed epoch when resuming."""
        self.real_batches = data.batches(self.config.dis_bs, self.gen.output_size,
                                         self.world.rows(self.config.dis_bs))
        if self.batches_state is not None:
            self.real_batches.load_state_dict(self.batches_state)

    @classmethod
    def create(cls, config: TrainConfig, arch: tuple[int, ...], device: torch.device,
               engine: str = "eager", world: World = SINGLE) -> TrainState:
        """Fresh nets with AutoGAN's init (xavier uniform), SN on every D layer, D at its full stage.
        The graph engine's Adam is capturable, with its learning rate a device tensor (decay in place).
        Under torchrun G's batch norms take global-batch statistics (`sync_batch_norm`)."""
        gen, dis = initialized_gan(DerivedGenerator(arch, config.latent_dim, config.gf_dim, config.bottom_width),
                                   config.df_dim, device, world.distributed)
        dis.stage = 2
        set_layout(gen, config.precision)  # channels-last at bf16 (engines/precision.py), the EMA copy too
        ema = copy.deepcopy(gen).requires_grad_(False)
        betas = (config.beta1, config.beta2)
        state = cls(config, arch, gen, dis, ema, new_adam(gen.parameters(), config.g_lr, betas, device),
                    new_adam(dis.parameters(), config.d_lr, betas, device),
                    torch.randn(config.num_grid_images, config.latent_dim, device=device), engine=engine,
                    world=world)
        state.configure_optimizers()
        return state

    def configure_optimizers(self) -> None:
        """Adam's mode for the engine (after a checkpoint's `load_state_dict` too, which restores the saved
        run's flags)."""
        graph = self.engine == "graph"
        for opt in (self.gen_opt, self.dis_opt):
            make_capturable(opt, capturable=graph, tensor_lr=graph)

    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * G for parameters (AutoGAN's gen_avg_param); buffers copied."""
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.gen.parameters()), 1.0 - self.config.ema)
            for ema_buffer, buffer in zip(self.ema.buffers(), self.gen.buffers(), strict=True):
                ema_buffer.copy_(buffer)

    def set_lr_scale(self, scale: float) -> None:
        for opt, base in ((self.gen_opt, self.config.g_lr), (self.dis_opt, self.config.d_lr)):
            set_lr(opt, base * scale)

    def generator_state(self) -> dict:
        """What scoring needs (best.pt holds just this): settings, architecture, G, its EMA, latest metrics."""
        return {"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(self.config), "arch": list(self.arch),
                "iter": self.iter, "gen": self.gen.state_dict(), "ema": self.ema.state_dict(), "metrics": self.last}

    def state_dict(self) -> dict:
        return {**self.generator_state(), "dis": self.dis.state_dict(), "gen_opt": self.gen_opt.state_dict(),
                "dis_opt": self.dis_opt.state_dict(), "fixed_z": self.fixed_z.cpu(), "best": self.best,
                "wall_seconds": self.wall_seconds, "rng": rng_state(self.fixed_z.device),
                "real_batches": None if self.real_batches is None else self.real_batches.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict, config: TrainConfig, device: torch.device,
                        engine: str = "eager", world: World = SINGLE) -> TrainState:
        """Rebuild from a checkpoint; `config` is the saved one (possibly with run-length overrides)."""
        self = cls.create(config, tuple(state["arch"]), device, engine, world)
        self.gen.load_state_dict(state["gen"])
        self.dis.load_state_dict(state["dis"])
        self.ema.load_state_dict(state["ema"])
        self.gen_opt.load_state_dict(state["gen_opt"])
        self.dis_opt.load_state_dict(state["dis_opt"])
        self.configure_optimizers()
        self.fixed_z = state["fixed_z"].to(device)
        self.iter, self.last, self.best = state["iter"], state["metrics"], state["best"]
        self.wall_seconds = state["wall_seconds"]
        self.batches_state = state["real_batches"]
        restore_rng_state(state["rng"], device)
        world.sync_random_state()  # every rank continues rank 0's streams, whatever the saving run's devices
        return self


def train(state: TrainState, data: DeviceImageData, feature_net: FeatureNet,
          reference: tuple[np.ndarray, np.ndarray], run_dir: Path, device: torch.device,
          stop_after: int | None = None, quiet: bool = False, curves: ScalarLogger | None = None) -> dict | None:
    """Train from `state.iter` to `max_iter`, or until the checkpoint at or after iteration `stop_after`.

    One G iteration: n_critic D steps (hinge loss; real and fake batches in one D forward, so one
    spectral-norm update per step) on real batches from shuffled epochs, the G step and the EMA update
    right after the first of them (AutoGAN's `global_steps % n_critic == 0`). With lr_decay, iteration i
    runs at lr * (1 - i / max_iter). Every val_freq iterations and at the end: score the EMA
    generator, save a sample grid, log, write best.pt on a new best FID, then checkpoint.pt.
    Returns the result (also written to result.json), or None when stopped early. `curves` (e.g.
    TensorBoard) gets IS, FID, the mean losses and the learning rate of every evaluation.

    Under torchrun (`state.world`, design in `distributed`): G and D train as DistributedDataParallel
    and the ranks share each evaluation's images.
    """
    config = state.config
    world = state.world
    curves = curves or ScalarLogger()
    log = JsonlLog(run_dir / LOG, counter="iter")
    state.attach_data(data)
    started = time.perf_counter()
    graphs = step = None
    if state.engine == "graph":  # two graphs: the D step, and the D + G + EMA step
        graphs = GraphCache(capture_backend(device), max_graphs=2)
        step = GANStep(state.gen, state.dis, state.gen_opt, state.dis_opt, state.real_batches.images,
                       config.dis_bs, config.gen_bs, config.latent_dim, after_g=state.update_ema,
                       precision=config.precision)
        d_sum, g_sum = step.d_sum, step.g_sum  # summed inside the graphs
    else:
        d_sum = torch.zeros((), device=device)  # losses since the last evaluation, kept on the device
        g_sum = torch.zeros((), device=device)
    # The nets each step trains, gradients averaged over the ranks during backward (the plain nets in
    # one process). Buffers are not broadcast: SN vectors and BN statistics are identical on every rank.
    train_gen, train_dis = state.gen, state.dis
    if world.distributed:
        train_gen, train_dis = data_parallel(state.gen, device), data_parallel(state.dis, device)
    since = 0
    last_good = state.iter or None  # the G iteration of the checkpoint resumed from (a new run has none)
    choices_logged = 0  # `--kernels auto` choices already in the log (kernel_choices events)
    bar = tqdm(total=config.max_iter, initial=state.iter, desc="train", unit="G iter",
               disable=quiet or not world.is_main, dynamic_ncols=True)
    while state.iter < config.max_iter:
        if config.lr_decay:
            state.set_lr_scale(1.0 - state.iter / config.max_iter)
        for j in range(config.n_critic):  # AutoGAN: the G step follows D steps 0, n_critic, 2 n_critic, ...
            if graphs is not None:
                step.real_index.copy_(state.real_batches.next_index())  # device to device, outside the graph
                graphs.run(("train", j == 0, config.dis_bs, config.gen_bs), step.d_g_step if j == 0 else step.d_step)
                continue
            d_sum += discriminator_step(state.gen, train_dis, state.dis_opt, state.real_batches.next(),
                                        config.latent_dim, world, config.precision)
            if j == 0:
                g_sum += generator_step(train_gen, state.dis, state.gen_opt, config.gen_bs, config.latent_dim,
                                        world, config.precision)
                state.update_ema()
        state.iter += 1
        since += 1
        bar.update(1)
        if state.iter % config.val_freq and state.iter < config.max_iter:
            continue

        rank_means = torch.stack([d_sum / (since * config.n_critic), g_sum / since])
        d_mean, g_mean = (world.all_reduce_(rank_means) / world.size).tolist()  # host sync
        d_sum.zero_()
        g_sum.zero_()
        since = 0
        try:  # a diverged network is found before it is scored or anything is written from it
            require_finite("the mean losses since the last evaluation", GAN_SETTINGS, D=d_mean, G=g_mean)
            metrics = score_generator(state.ema, feature_net, reference, config.num_eval_imgs,
                                      config.eval_batch_size, config.is_splits, config.seed, device, world)
            require_finite("the EMA generator's scores", GAN_SETTINGS, **metrics)
            state.last = {"iter": state.iter, **metrics}
            new_best = state.best is None or metrics["fid"] < state.best["fid"]
            if new_best:
                state.best = state.last
            state.wall_seconds += time.perf_counter() - started
            started = time.perf_counter()
            checkpoint = state.state_dict()
            check_checkpoint(checkpoint, dict.fromkeys(("gen", "ema", "dis", "gen_opt", "dis_opt"), GAN_SETTINGS))
        except NotFinite as err:  # the last checkpoint and best.pt stay as they are
            bar.close()
            error = diverged_error("training", f"G iteration {state.iter}", err, config, run_dir / CHECKPOINT,
                                   None if last_good is None else f"G iteration {last_good}, best.pt beside it")
            if world.is_main:
                log.write("diverged", state.iter, error=str(error))
            raise error from None
        if world.is_main:  # rank 0 alone writes and prints; the ranks' metrics are identical
            grid = run_dir / "samples" / f"iter_{state.iter:06d}.png"
            save_samples(state.ema, state.arch, state.fixed_z, grid)  # host sync: the grid is copied to the host
            log.write("eval", state.iter, **metrics, d_loss=d_mean, g_loss=g_mean,
                      g_lr=float(state.gen_opt.param_groups[0]["lr"]), best_fid=state.best["fid"],
                      wall_seconds=state.wall_seconds)
            if graphs is not None:
                log.write("graph_cache", state.iter, **graphs.stats.as_dict())
            choices_logged = log_kernel_choices(log, state.iter, choices_logged)
            curves.scalars("train", {**metrics, "d_loss": d_mean, "g_loss": g_mean,
                                     "g_lr": float(state.gen_opt.param_groups[0]["lr"])}, state.iter)
            if new_best:  # best.pt first: a crash before checkpoint.pt redoes this evaluation and rewrites it
                save_checkpoint(run_dir / BEST, state.generator_state())
            save_checkpoint(run_dir / CHECKPOINT, checkpoint)
            if not quiet:
                bar.write(f"iter {state.iter:6d} | IS {metrics['inception_score']:6.3f} "
                          f"± {metrics['inception_score_std']:.3f} | FID {metrics['fid']:8.3f}"
                          f"{' (best)' if new_best else ''} | D {d_mean:+.3f} G {g_mean:+.3f}", file=sys.stderr)
        last_good = state.iter
        if stop_after is not None and state.iter >= stop_after and state.iter < config.max_iter:
            bar.close()
            return None
    bar.close()

    result = {key: state.last[key] for key in ("inception_score", "inception_score_std", "fid")}
    result.update(arch=list(state.arch), iter=state.iter, num_eval_imgs=config.num_eval_imgs, best=state.best,
                  wall_seconds=state.wall_seconds + time.perf_counter() - started, device=device_name(device),
                  kernel_choices=autoselect_choices())  # `--kernels auto`: fused or reference per op and shape
    if world.is_main:
        events = log.read()
        result["tail_mean"] = tail_mean(events, config.tail_evals)
        # the search's collapse test (nas/collapse.py) on the evaluations: IS below its floor at the last ones
        result["collapsed"] = stage_collapsed([e["inception_score"] for e in events if e.get("event") == "eval"])
        log_kernel_choices(log, state.iter, choices_logged)
        log.write("done", state.iter, **result)
        write_json(run_dir / RESULT, result)
    return result


def tail_mean(events: list[dict], tail: int) -> dict:
    """The final score of a training: the mean IS and FID of its last `tail` evaluations (log `eval` events).
    One evaluation of a small GAN swings with its last few hundred steps; the mean of a few ranks
    architectures more steadily (the study's measure too)."""
    evals = [e for e in events if e.get("event") == "eval"][-tail:]
    return {"inception_score": sum(e["inception_score"] for e in evals) / len(evals),
            "fid": sum(e["fid"] for e in evals) / len(evals), "evals": len(evals),
            "iters": [e["iter"] for e in evals]}
