"""`python -m autogan_fast.train`: train a discovered architecture from scratch (AutoGAN's derived training).

Default: the demo preset on the embedded digits (seconds on a CPU) with AutoGAN's published CIFAR-10
generator. `--preset paper` is AutoGAN's derived-training setting on CIFAR-10. The architecture comes
from `--arch` or from a search's result.json (`--arch-from`, `--rank`). Every `--val-freq` generator
iterations the EMA generator is scored (IS, and FID against the training data's cached statistics),
a sample grid is saved and the run is checkpointed; `--resume DIR` continues a stopped run exactly.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .cli import (
    ArgumentParser,
    add_config_flags,
    add_run_flags,
    apply_resume_overrides,
    explicit_values,
    finished_run,
    open_inputs,
    open_run_folder,
    resume_dir,
    run_cli,
    torchrun_world,
    unstarted_config,
    unstarted_run,
)
from .config import PRESET_NAMES, TRAIN_PRESETS, TrainConfig, config_from_dict, flag, preset_config
from .data import DeviceImageData, EpochBatches
from .distributed import SINGLE, World, data_parallel
from .divergence import GAN_SETTINGS, NotFinite, check_checkpoint, diverged_error, require_finite
from .engines.cuda_graphs import GraphCache, capture_backend
from .engines.eager import discriminator_step, generator_step, make_capturable, set_lr
from .engines.graph import GANStep, resolve_engine
from .engines.precision import new_adam, set_layout
from .errors import UsageError
from .kernels import autoselect_choices
from .metrics.feature_net import FeatureNet
from .metrics.reference import reference_statistics
from .metrics.scoring import score_generator
from .models import Discriminator, initialized_gan
from .models.derived import DerivedGenerator
from .nas.collapse import COLLAPSE_IS, stage_collapsed
from .pretrained import CHECKPOINT_FORMAT, RELEASED, check_train_checkpoint, resolve_arch
from .run_dir import (
    CHECKPOINT,
    CONFIG,
    LOG,
    RESULT,
    JsonlLog,
    check_entries,
    device_name,
    load_checkpoint,
    locked_run_dir,
    log_kernel_choices,
    parse_json,
    restore_rng_state,
    restoring,
    rng_state,
    save_checkpoint,
    save_samples,
    write_json,
)
from .search_space import arch_to_str, validate_arch
from .tensorboard import ScalarLogger, check_tensorboard, scalar_logger

BEST = "best.pt"
# AutoGAN's best CIFAR-10 generator (the paper's Figure 3), trained when no architecture is given.
PAPER_ARCH = (1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3)


# Settings a resumed run may change: where things are, how long to go on and how it is scored.
RESUMABLE_OVERRIDES = ("max_iter", "data_path", "inception_weights", "device", "engine", "eval_batch_size",
                       "val_freq", "num_eval_imgs", "kernels")


# ---------------------------------------------------------------------------------------------
# The architecture to train


def arch_from_result(path: Path, rank: int) -> tuple[int, ...]:
    """The architecture ranked `rank` (1-based) in a search's result.json (a run folder means its result.json)."""
    if path.is_dir():
        path = path / RESULT
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--arch-from {path}: no such file (give a search run's result.json)") from None
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON or nested too deeply
        raise UsageError(f"--arch-from {path}: not a search result.json ({err})") from None
    archs = data.get("archs") if isinstance(data, dict) else None
    if not isinstance(archs, list) or not all(isinstance(e, dict) and "arch" in e for e in archs):
        raise UsageError(f"--arch-from {path}: not a search result.json (no list of 'archs' with an 'arch' each)")
    if not 1 <= rank <= len(archs):
        raise UsageError(f"--rank {rank} is out of range: {path} ranks {len(archs)} architectures "
                         f"(1..{len(archs)})")
    try:
        return validate_arch(archs[rank - 1]["arch"], stage=2)
    except UsageError as err:
        raise UsageError(f"--arch-from {path} rank {rank}: {err}") from None


def chosen_arch(args) -> tuple[int, ...]:
    """--arch, or --arch-from with --rank (default 1), or AutoGAN's published CIFAR-10 generator."""
    if args.arch is not None and args.arch_from is not None:
        raise UsageError("give --arch or --arch-from, not both")
    if args.rank is not None and args.arch_from is None:
        raise UsageError("--rank picks from --arch-from RESULT.json; give that too")
    if args.arch_from is not None:
        return arch_from_result(Path(args.arch_from), 1 if args.rank is None else args.rank)
    if args.arch is None:
        return PAPER_ARCH
    try:
        return resolve_arch(args.arch)  # 14 ints (one string or separate words) or a released generator's name
    except UsageError as err:
        raise UsageError(f"--arch: {err}") from None


# ---------------------------------------------------------------------------------------------
# State, scoring, the loop


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


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m autogan_fast.train", description=__doc__.splitlines()[0])
    demo = ", ".join(f"{flag(k)} {v}" for k, v in TRAIN_PRESETS["demo"].items())
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help=f"base settings: demo (CPU-sized, embedded digits: {demo}) or paper (AutoGAN's "
                             f"derived training on CIFAR-10: the defaults shown below)")
    parser.add_argument("--arch", nargs="+", metavar="ARCH",
                        help="the architecture to train: 14 integers (separate words or one quoted string) or a "
                             "released generator's name (" + ", ".join(RELEASED) + "; the name gives only the "
                             "architecture, not the bottom width) (default: AutoGAN's published CIFAR-10 "
                             "generator, " + " ".join(map(str, PAPER_ARCH)) + ")")
    parser.add_argument("--arch-from", metavar="RESULT_JSON",
                        help="take the architecture from a search's result.json (or its run folder)")
    parser.add_argument("--rank", type=int, metavar="K", help="with --arch-from: the K-th best architecture "
                                                              "(1-based, default 1)")
    add_run_flags(parser, stop_after="stop after the first checkpoint at G iteration ITER or later")
    add_config_flags(parser, TrainConfig)
    return parser


# The entries of a train checkpoint and their types, checked before a resume uses any.
CHECKPOINT_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "arch": list, "iter": int, "gen": dict, "ema": dict, "dis": dict, "gen_opt": dict,
    "dis_opt": dict, "fixed_z": torch.Tensor, "metrics": (dict, type(None)), "best": (dict, type(None)),
    "wall_seconds": (int, float), "rng": dict, "real_batches": (dict, type(None)),
}


def resumed_checkpoint(run_dir: Path, overrides: dict[str, object]) -> tuple[dict, TrainConfig, tuple[int, ...]]:
    """The checkpoint in `run_dir`, its config (with the command line's `overrides`) and its architecture;
    refused in one line unless it is a train checkpoint holding, with their types, the entries a resume needs."""
    path = run_dir / CHECKPOINT
    saved = load_checkpoint(path)
    check_train_checkpoint(saved, path)
    check_entries(saved, path, CHECKPOINT_ENTRIES)
    if saved["iter"] < 0 or (saved["best"] is not None and not isinstance(saved["best"].get("fid"), float)):
        raise UsageError(f"corrupt checkpoint {path}: iteration {saved['iter']}, best metrics {saved['best']}")
    try:
        config = config_from_dict(saved["config"], TrainConfig)
        arch = validate_arch(saved["arch"], stage=2)
    except UsageError as err:
        raise UsageError(f"corrupt checkpoint {path}: {err}") from None
    return saved, apply_resume_overrides(run_dir, config, overrides, RESUMABLE_OVERRIDES, path), arch


def new_run_config(args) -> TrainConfig:
    """The settings of a new run from its parsed flags, refused in one line naming the first bad one (a
    study checks its trainings' flags with it before it makes its folder)."""
    return preset_config(args.preset, TrainConfig, **explicit_values(args, TrainConfig)).validate()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = explicit_values(args, TrainConfig)
    run_dir = resume_dir(args)
    preset = args.preset
    saved = None
    if run_dir is None:
        config = new_run_config(args)
        arch = chosen_arch(args)
    else:
        if args.arch is not None or args.arch_from is not None or args.rank is not None:
            raise UsageError(f"the architecture cannot change when resuming {run_dir}; drop --arch, "
                             f"--arch-from and --rank")
        unstarted = unstarted_run(run_dir)
        if unstarted is None:
            saved, config, arch = resumed_checkpoint(run_dir, overrides)
        else:  # stopped before its first checkpoint: start afresh with the saved settings and architecture
            config = unstarted_config(run_dir, unstarted, TrainConfig, overrides, RESUMABLE_OVERRIDES,
                                      ("arch", "preset"))
            try:
                arch = validate_arch(unstarted.get("arch", ()), stage=2)
            except UsageError as err:
                raise UsageError(f"cannot resume {run_dir} from its {CONFIG}: {err}") from None
            preset = unstarted.get("preset", preset)
    if args.stop_after is not None and args.stop_after < 0:
        raise UsageError(f"--stop-after must be >= 0, got {args.stop_after}")

    with torchrun_world(config.device) as world:
        return run_training(args, config, arch, saved, run_dir, world, preset)


def run_training(args, config: TrainConfig, arch: tuple[int, ...], saved: dict | None, run_dir: Path | None,
                 world: World, preset: str = "demo") -> int:
    """`main` once the settings are known, in its torchrun world (a single process without torchrun).

    `saved` is the checkpoint to resume, None for a new run (`run_dir` None) or for a resumed run folder
    that holds none yet (started afresh in `run_dir`, with its saved settings). The run folder is locked
    from the moment it is known to the end (`locked_run_dir`): a resumed one before anything else, a new
    one as soon as it is made. Resuming a finished run prints its result and writes nothing.
    """
    # Everything that can fail on bad input runs before the run folder is written (a resumed one is locked
    # first, before its log is read: another run may be writing there).
    world.check_divides(gen_bs=config.gen_bs, dis_bs=config.dis_bs)
    if args.tensorboard:
        check_tensorboard()
    with contextlib.ExitStack() as lock:  # the run folder's lock, held to the end once taken
        if run_dir is not None:
            lock.enter_context(locked_run_dir(run_dir, world))
        if saved is not None and saved["iter"] >= config.max_iter:
            result = finished_run(run_dir, world, "iter", saved["iter"],
                                  f"the training in {run_dir} is finished ({config.max_iter} G iterations); give "
                                  f"a larger --max-iter to train on")
            if result is not None:
                if world.is_main:
                    print_result(args, result, run_dir)
                return 0
        resolution = config.bottom_width * 8
        device, data, feature_net = open_inputs(config, resolution, world)
        engine = resolve_engine(config.engine, device, world.size)
        reference = reference_statistics(config.dataset, config.data_path, config.split, resolution, feature_net,
                                         lambda: data.images, config.eval_batch_size, device, world=world)

        settings = {**dataclasses.asdict(config), "arch": list(arch), "preset": preset}  # config.json
        run_dir, fresh = open_run_folder(lock, args.out, run_dir, saved, settings, world)
        if fresh:
            state = TrainState.create(config, arch, device, engine, world)
        else:
            with restoring(run_dir / CHECKPOINT):
                state = TrainState.from_state_dict(saved, config, device, engine, world)
            if world.is_main:
                JsonlLog(run_dir / LOG, counter="iter").truncate_from(state.iter + 1)
        quiet = args.quiet or not world.is_main
        if not quiet:
            params = sum(p.numel() for p in state.gen.parameters())
            ranks = f"  ranks: {world.size}" if world.distributed else ""
            print(f"run folder: {run_dir}  device: {device}{ranks}  feature net: {feature_net.name}  G: "
                  f"{params:,} parameters\narch: {arch_to_str(arch)}", file=sys.stderr)

        curves = scalar_logger(args.tensorboard and world.is_main, run_dir)
        try:
            result = train(state, data, feature_net, reference, run_dir, device, stop_after=args.stop_after,
                           quiet=quiet, curves=curves)
        finally:
            curves.close()
    if not world.is_main:
        return 0
    if result is None:
        print(f"stopped after iteration {state.iter}; continue with --resume {run_dir}", file=sys.stderr)
        return 0
    if result.get("collapsed"):  # a warning even with --quiet: it changes what the score means
        print(collapse_warning(result), file=sys.stderr)
    print_result(args, result, run_dir)
    return 0


def collapse_warning(result: dict) -> str:
    return (f"warning: the training collapsed (IS {result['inception_score']:.3f} at its last evaluation; the "
            f"search's collapse test: IS below {COLLAPSE_IS} at the last evaluations): its images fall into about "
            f"one class, so its scores rank no architecture; result.json says \"collapsed\": true (lower --g-lr "
            f"/ --d-lr)")


def print_result(args, result: dict, run_dir: Path) -> None:
    if args.json:
        print(json.dumps({**result, "run_dir": str(run_dir)}))
    else:
        best = result["best"]
        print(f"run folder: {run_dir}  ({result['wall_seconds']:.0f} s on {result['device']})")
        print(f"IS {result['inception_score']:.3f} ± {result['inception_score_std']:.3f}  FID {result['fid']:.3f}  "
              f"(EMA generator, iteration {result['iter']}, {result['num_eval_imgs']} images)")
        tail = result.get("tail_mean")  # absent from results of runs finished before it was added
        if tail is not None:
            print(f"mean of the last {tail['evals']} evaluations: IS {tail['inception_score']:.3f}  FID "
                  f"{tail['fid']:.3f} (the final score to rank architectures by)")
        print(f"best FID {best['fid']:.3f} at iteration {best['iter']} (best.pt)")
        if result.get("collapsed"):  # absent from results of runs finished before it was added
            print(f"COLLAPSED: its last evaluations scored IS below {COLLAPSE_IS}; the scores above rank no "
                  f"architecture")


if __name__ == "__main__":
    run_cli(main)
