"""The AutoGAN search loop, top to bottom: grow, train the shared GAN, train the controller, repeat.

Each search iteration: (at a grow step: pick the previous stage's top-k beams, start a fresh
controller for the new cell) -> shared-GAN training with one controller-sampled architecture per
step -> `ctrl_step` REINFORCE updates scored by Inception Score -> (after a dynamic reset:
re-initialize the shared GAN) -> sample grid, log, atomic checkpoint. At the end the same top-k
selection gives the result.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import SearchConfig
from ..data import DeviceImageData
from ..distributed import SINGLE, World
from ..divergence import (
    CONTROLLER_SETTINGS,
    GAN_SETTINGS,
    NotFinite,
    check_checkpoint,
    diverged_error,
    require_finite,
)
from ..engines.cuda_graphs import GraphCache, capture_backend
from ..engines.eager import LossWindow, SharedGAN, make_capturable, train_shared
from ..engines.graph import train_shared_graph
from ..kernels import autoselect_choices
from ..metrics.feature_net import FeatureNet
from ..metrics.scoring import inception_score
from ..models.samples import save_samples
from ..runs.checkpoint import restore_rng_state, rng_state, save_checkpoint, write_json
from ..runs.folder import CHECKPOINT, LOG, JsonlLog, device_name, log_kernel_choices
from ..search_space import arch_to_str, search_space_size
from ..tensorboard import ScalarLogger
from .collapse import (
    COLLAPSE_IS,
    NEAR_COLLAPSE_IS,
    beams_warning,
    collapse_warning,
    iteration_sampling_error,
    stage_verdict,
    tail_sampling_error,
)
from .controller import Beams, Controller, ReinforceBaseline, Samples, reinforce_loss
from .reward import RewardPipeline

# The settings a divergence message names for each part of the checkpoint.
CHECKPOINT_SETTINGS = {"gan": GAN_SETTINGS, "g_window": GAN_SETTINGS, "d_window": GAN_SETTINGS,
                       "controller": CONTROLLER_SETTINGS, "ctrl_opt": CONTROLLER_SETTINGS}
CHECKPOINT_FORMAT = "autogan_fast.search/2"  # 2: one to-RGB head, per-phase baselines


@dataclass
class SearchState:
    """Everything a search needs to continue exactly where it stopped (the checkpoint's content)."""

    config: SearchConfig
    gan: SharedGAN
    controller: Controller
    ctrl_opt: torch.optim.Adam
    g_window: LossWindow
    d_window: LossWindow
    fixed_z: torch.Tensor  # latent batch of the sample grids
    search_iter: int = 0  # next iteration to run
    stage: int = 0
    beams: Beams | None = None
    best: dict = field(default_factory=lambda: {"arch": None, "inception_score": None})  # best IS of this stage
    wall_seconds: float = 0.0  # time spent in earlier sessions of this run
    stage_mean_is: list = field(default_factory=list)  # mean reward of each iteration of the current stage
    stage_reward_se: list = field(default_factory=list)  # each one's sampling error (collapse.py), in step
    collapsed_stages: list = field(default_factory=list)  # stages that ended collapsed or nearly (collapse.py)
    engine: str = "eager"  # the resolved engine (not saved: a run may resume on another machine)
    reward: RewardPipeline | None = None  # the reward's static buffers and graphs (set by `run_search`)
    world: World = SINGLE  # the torchrun ranks searching together (not saved: any world size resumes)

    @classmethod
    def create(cls, config: SearchConfig, device: torch.device, engine: str = "eager",
               world: World = SINGLE) -> SearchState:
        gan = SharedGAN.create(config, device, capturable=engine == "graph", world=world)
        stage = config.stage_at(0)
        controller, ctrl_opt = new_controller(config, stage, device)
        window = config.dynamic_reset_window
        return cls(config, gan, controller, ctrl_opt, LossWindow(window, device), LossWindow(window, device),
                   torch.randn(config.num_grid_images, config.latent_dim, device=device), stage=stage,
                   engine=engine, world=world)

    def state_dict(self) -> dict:
        beams = None if self.beams is None else {k: v.cpu() for k, v in dataclasses.asdict(self.beams).items()}
        return {
            "format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(self.config),
            "search_iter": self.search_iter, "stage": self.stage, "gan": self.gan.state_dict(),
            "controller": self.controller.state_dict(), "ctrl_opt": self.ctrl_opt.state_dict(),
            "g_window": self.g_window.state_dict(),
            "d_window": self.d_window.state_dict(), "fixed_z": self.fixed_z.cpu(), "beams": beams,
            "best": self.best, "wall_seconds": self.wall_seconds, "rng": rng_state(self.fixed_z.device),
            "stage_mean_is": list(self.stage_mean_is), "stage_reward_se": list(self.stage_reward_se),
            "collapsed_stages": list(self.collapsed_stages),
        }

    @classmethod
    def from_state_dict(cls, state: dict, config: SearchConfig, device: torch.device,
                        engine: str = "eager", world: World = SINGLE) -> SearchState:
        """Rebuild from a checkpoint; `config` is the saved one (possibly with run-length overrides)."""
        self = cls.create(config, device, engine, world)
        self.search_iter, self.stage = state["search_iter"], state["stage"]
        self.gan.load_state_dict(state["gan"])
        for opt in (self.gan.gen_opt, self.gan.dis_opt):  # the checkpoint restored its run's Adam mode
            make_capturable(opt, capturable=engine == "graph")
        self.controller, self.ctrl_opt = new_controller(config, self.stage, device)
        self.controller.load_state_dict(state["controller"])
        self.ctrl_opt.load_state_dict(state["ctrl_opt"])
        self.g_window.load_state_dict(state["g_window"])
        self.d_window.load_state_dict(state["d_window"])
        self.fixed_z = state["fixed_z"].to(device)
        self.beams = None if state["beams"] is None else Beams(**{k: v.to(device) for k, v in state["beams"].items()})
        self.best, self.wall_seconds = state["best"], state["wall_seconds"]
        # absent from checkpoints written before collapse detection: the check then sees this session only
        self.stage_mean_is = [float(v) for v in state.get("stage_mean_is", [])]
        # None for an iteration that scored one architecture, and for each iteration of a checkpoint written
        # before the errors were kept (2026-12-07): the list stays in step with stage_mean_is
        errors = state.get("stage_reward_se", [None] * len(self.stage_mean_is))
        self.stage_reward_se = [None if v is None else float(v) for v in errors]
        self.collapsed_stages = [int(v) for v in state.get("collapsed_stages", [])]
        restore_rng_state(state["rng"], device)
        world.sync_random_state()  # every rank continues rank 0's streams, whatever the saving run's devices
        return self


def new_controller(config: SearchConfig, stage: int, device: torch.device) -> tuple[Controller, torch.optim.Adam]:
    controller = Controller.for_stage(stage, config.search_mode, config.hid_size).to(device)
    return controller, torch.optim.Adam(controller.parameters(), config.ctrl_lr, betas=(0.0, 0.9))


def top_k_archs(state: SearchState, feature_net: FeatureNet, device: torch.device,
                ) -> tuple[list[tuple[list[int], float]], Beams]:
    """Sample `num_candidate` archs, score each by IS, keep the `topk` best candidates with their hidden states.

    As AutoGAN's `get_topk_arch_hidden`: every candidate is scored, a repeated architecture again (with
    other noise), and the top-k are candidates, not distinct architectures, so an architecture the
    controller samples often can take several beams. Ties keep sampling order. Best first.
    """
    config = state.config
    with torch.no_grad():
        samples = state.controller.sample(config.num_candidate, state.beams)
    archs = sampled_archs(samples)
    scores = score_archs(state, archs, feature_net, device)
    order = sorted(range(len(archs)), key=lambda i: -scores[i])[: config.topk]
    keep = torch.tensor(order, device=samples.archs.device)
    beams = Beams(samples.archs[keep], samples.hx[keep], samples.cx[keep])
    return [(archs[i], scores[i]) for i in order], beams


def distinct(ranked: list[tuple[list[int], float]]) -> list[tuple[list[int], float]]:
    """The first (best) entry of each architecture in a best-first list."""
    seen: set[tuple[int, ...]] = set()
    kept = []
    for arch, value in ranked:
        if tuple(arch) not in seen:
            seen.add(tuple(arch))
            kept.append((arch, value))
    return kept


@torch.no_grad()
def sample_phase_archs(state: SearchState, steps: int) -> list[list[int]]:
    """The architectures of a whole shared-training phase, in one batched controller call before it starts.

    The controller does not change during the phase, so this is the distribution of one call per step
    (AutoGAN), and choosing a step's graph then reads nothing from the device.
    """
    return sampled_archs(state.controller.sample(steps, state.beams))  # host sync: one per phase


def sampled_archs(samples: Samples) -> list[list[int]]:
    """The sampled architectures on the host (host sync: the read every use of samples makes), or
    NotFinite when the controller's logits were not (`Samples.finite`, read with them)."""
    archs = samples.archs.tolist()  # host sync
    if not bool(samples.finite):  # host read: the queue is drained by the line above
        raise NotFinite("the controller's logits are not finite", CONTROLLER_SETTINGS)
    return archs


def score_archs(state: SearchState, archs: list[list[int]], feature_net: FeatureNet, device: torch.device,
                ) -> list[float]:
    """The reward of each architecture, in order. Under torchrun rank r scores archs r, r + W, ... and the
    ranks exchange the scores, then all continue from rank 0's random state (each drew other noise)."""
    world = state.world
    mine = {}
    for index in world.batch_starts(len(archs), 1):
        mine[index] = score(state, archs[index], feature_net, device)
    if world.distributed:
        scores = world.all_gather_floats(mine, len(archs))  # host sync
        world.sync_random_state()
    else:
        scores = [mine[index] for index in range(len(archs))]
    for arch, value in zip(archs, scores, strict=True):
        if not math.isfinite(value):
            raise NotFinite(f"the reward (Inception Score) of {arch_to_str(arch)} is {value}", GAN_SETTINGS)
    return scores


def score(state: SearchState, arch: list[int], feature_net: FeatureNet, device: torch.device) -> float:
    """IS of architecture `arch` of the shared generator (the reward), through the run's reward pipeline;
    without one (`run_search` always sets it; the benchmark's eager baseline does not) the eager
    `inception_score`."""
    config = state.config
    if state.reward is None:
        return inception_score(state.gan.gen, arch, feature_net, config.rl_num_eval_img, config.latent_dim,
                               config.eval_batch_size, config.is_splits, device)
    return state.reward.score(state.gan.gen, arch)  # host sync: one per reward


def train_controller(state: SearchState, feature_net: FeatureNet, device: torch.device, log: JsonlLog,
                     bar: tqdm, curves: ScalarLogger | None = None) -> list[tuple[list[int], float]]:
    """`ctrl_step` REINFORCE updates; returns each sampled arch with its Inception Score (no entropy bonus).

    The baseline starts afresh here, as AutoGAN's `train_controller` (its first step's advantage is 0)."""
    config = state.config
    baseline = ReinforceBaseline(config.baseline_decay)
    scored = []
    for step in range(config.ctrl_step):
        samples = state.controller.sample(config.ctrl_sample_batch, state.beams)
        archs = sampled_archs(samples)
        rewards = score_archs(state, archs, feature_net, device)
        for arch, reward in zip(archs, rewards, strict=True):
            best = state.best["inception_score"]
            if best is None or reward > best:  # best of the current stage (a reset at each grow)
                state.best = {"arch": arch, "inception_score": reward}
        if config.search_mode == "random":  # the random arm scores as many samples and learns nothing
            values, bases = rewards, [None] * len(rewards)
        else:
            values, bases = reinforce_step(state, samples, rewards, baseline, step, curves)
        for arch, reward, value, base in zip(archs, rewards, values, bases, strict=True):
            log.write("controller_step", state.search_iter, step=step, stage=state.stage, arch=arch,
                      inception_score=reward, reward=value, baseline=base)
        scored.extend(zip(archs, rewards, strict=True))
        bar.update(1)
    return scored


def reinforce_step(state: SearchState, samples: Samples, rewards: list[float], baseline: ReinforceBaseline,
                   step: int, curves: ScalarLogger | None) -> tuple[list[float], list[float]]:
    """One REINFORCE update of the controller; returns each sample's reward with the entropy bonus and its
    baseline."""
    config = state.config
    loss, total = reinforce_loss(samples, torch.tensor(rewards, dtype=torch.float64), baseline,
                                 config.entropy_coeff)
    if not torch.isfinite(total).all():  # on the host: the rewards are host floats
        raise NotFinite(f"the controller's rewards with the entropy bonus are not finite ({total.tolist()})",
                        CONTROLLER_SETTINGS)
    state.ctrl_opt.zero_grad(set_to_none=True)
    loss.backward()
    state.ctrl_opt.step()
    if curves is not None:  # AutoGAN's controller/* curves, per update (.item(): host syncs)
        curves.scalars("controller", {
            "inception_score": sum(rewards) / len(rewards), "reward": total.mean().item(),
            "baseline": baseline.value.mean().item(), "entropy": samples.entropy.mean().item(),
            "loss": loss.item()}, state.search_iter * config.ctrl_step + step)
    return total.tolist(), baseline.value.tolist()


def reset_generator(config: SearchConfig, mean_is: float) -> bool:
    """Whether a dynamic reset restarts G too (AutoGAN: always). With `reset_keeps_healthy_g`, an iteration
    whose mean reward is at least the near-collapse line keeps G: the variance check fires when D's loss
    has flattened, which at the demo's 4 px happens while G is still learning (studies/calibration-notes.md)."""
    return not (config.reset_keeps_healthy_g and mean_is >= NEAR_COLLAPSE_IS)


def check_stage_collapse(state: SearchState, search_iter: int, log: JsonlLog) -> None:
    """At the end of a stage: log, warn and record it when its shared GAN collapsed or nearly did
    (`stage_verdict`); start the next stage's history."""
    verdict = stage_verdict(state.stage_mean_is)
    if verdict is not None and state.stage not in state.collapsed_stages:
        state.collapsed_stages.append(state.stage)
        error = tail_sampling_error(state.stage_reward_se)
        log.write("collapse", search_iter, stage=state.stage, mean_inception_score=state.stage_mean_is,
                  sampling_error=error, floor=COLLAPSE_IS, near_floor=NEAR_COLLAPSE_IS, kind=verdict)
        if state.world.is_main:  # a warning even with --quiet: it changes what the result means
            print(collapse_warning(state.stage, state.stage_mean_is, sampling_error=error), file=sys.stderr)
    state.stage_mean_is = []
    state.stage_reward_se = []


AUTO_GRAPH_CACHE_CAP = 2048  # graphs per cache when the key space is larger (SLAS: 373,248 architectures)


def graph_cache_sizes(config: SearchConfig, stage: int) -> tuple[int, int]:
    """Graphs the (training, reward) caches hold at `stage`: `--graph-cache-size`, or by default the
    stage's whole key space, so no cache is flushed within a stage (every graph shares its cache's
    pool, so a graph costs its executable, not its activations). Training keys: D and D + G steps of
    each architecture the stage can sample; reward keys: a generator step per architecture and one
    feature step. The MLAS stage s samples its new cell after one of `topk` beams (stage 0: no beam)."""
    if config.graph_cache_size is not None:
        return config.graph_cache_size, config.graph_cache_size
    if config.search_mode == "slas":
        archs = search_space_size()
    else:
        beams = 1 if stage == 0 else config.topk
        archs = beams * search_space_size(stage) // (search_space_size(stage - 1) if stage else 1)
    return min(2 * archs, AUTO_GRAPH_CACHE_CAP), min(archs + 1, AUTO_GRAPH_CACHE_CAP)


def run_search(state: SearchState, data: DeviceImageData, feature_net: FeatureNet, run_dir: Path,
               device: torch.device, stop_after: int | None = None, quiet: bool = False,
               curves: ScalarLogger | None = None) -> dict | None:
    """Run the search from `state.search_iter` to the end (or past iteration `stop_after`).

    Returns the result (also written to result.json), or None when stopped early. `curves` (e.g.
    TensorBoard) gets the losses, controller updates and per-iteration scores.

    Under torchrun (`state.world`, design in `distributed`): the shared GAN trains data-parallel and
    the controller's samples are scored in parallel.
    """
    config = state.config
    world = state.world
    curves = curves or ScalarLogger()
    log = JsonlLog(run_dir / LOG, enabled=world.is_main)
    graphs = reward_graphs = None
    if state.engine == "graph":  # each cache its own backend (capture stream): see engines/cuda_graphs.py
        train_size, reward_size = graph_cache_sizes(config, state.stage)
        graphs = GraphCache(capture_backend(device), train_size)
        reward_graphs = GraphCache(capture_backend(device), reward_size)
    state.reward = RewardPipeline(feature_net, config.rl_num_eval_img, config.eval_batch_size, config.is_splits,
                                  config.latent_dim, device, config.reward_precision, reward_graphs,
                                  config.reward_feature_batch)
    started = time.perf_counter()
    search_bar = tqdm(total=config.max_search_iter, initial=state.search_iter, desc="search", unit="iter",
                      disable=quiet, dynamic_ncols=True)
    it = state.search_iter  # the iteration under way (for a divergence's message)
    last_good = state.search_iter - 1 if state.search_iter else None  # the checkpointed iteration, if any
    choices_logged = 0  # `--kernels auto` choices already in the log (kernel_choices events)
    try:
        while state.search_iter < config.max_search_iter:
            it = state.search_iter
            if config.stage_at(it) > state.stage:  # grow: keep the top-k beams, fresh controller for the new cell
                check_stage_collapse(state, it, log)
                kept, state.beams = top_k_archs(state, feature_net, device)
                state.stage = config.stage_at(it)
                state.controller, state.ctrl_opt = new_controller(config, state.stage, device)
                state.best = {"arch": None, "inception_score": None}  # ISs of another resolution do not compare
                if config.fresh_gan_at_grow:  # the new stage trains every cell from scratch at its resolution
                    state.gan.reinitialize(config, world)
                    state.g_window.clear()
                    state.d_window.clear()
                distinct_beams = len(distinct(kept))
                log.write("grow", it, stage=state.stage, topk=[{"arch": a, "inception_score": s} for a, s in kept],
                          distinct_beams=distinct_beams, fresh_gan=config.fresh_gan_at_grow)
                if distinct_beams == 1 < len(kept) and world.is_main:
                    print(beams_warning(state.stage, distinct_beams, len(kept)), file=sys.stderr)
                if graphs is not None:  # the old stage's keys never come back: drop them all, size for the new
                    sizes = graph_cache_sizes(config, state.stage)
                    for cache, size in zip((graphs, reward_graphs), sizes, strict=True):
                        cache.flush()
                        cache.resize(size)

            steps = config.shared_epoch * data.steps_per_epoch(config.dis_bs)
            archs = sample_phase_archs(state, steps)
            with tqdm(total=steps, desc=f"  shared GAN (stage {state.stage})", leave=False, disable=quiet,
                      dynamic_ncols=True) as bar:
                if graphs is None:
                    summary = train_shared(state.gan, data, config, state.stage, archs, state.g_window,
                                           state.d_window, progress=bar.update, world=world)
                else:
                    summary = train_shared_graph(state.gan, data, config, state.stage, archs, state.g_window,
                                                 state.d_window, graphs, progress=bar.update)
            log.write("shared_train", it, stage=state.stage, **dataclasses.asdict(summary))
            require_finite("the shared GAN's loss means", GAN_SETTINGS, D=summary.d_loss, G=summary.g_loss)
            if graphs is not None:
                log.write("graph_cache", it, **graphs.stats.as_dict(), reward=reward_graphs.stats.as_dict())
            curves.scalars("shared_gan", {"d_loss": summary.d_loss, "g_loss": summary.g_loss,
                                          "dynamic_reset": int(summary.dynamic_reset)}, it)

            with tqdm(total=config.ctrl_step, desc="  controller", leave=False, disable=quiet,
                      dynamic_ncols=True) as bar:
                scored = train_controller(state, feature_net, device, log, bar, curves)

            iteration_best = max(scored, key=lambda item: item[1])[0]
            rewards = [value for _, value in scored]
            mean_is = sum(rewards) / len(rewards)
            if summary.dynamic_reset:  # AutoGAN: the iteration's controller steps run first, then the reset
                # in place (the values of a fresh SharedGAN.create): the captured graphs address the same
                # tensors, so they stay valid and the cache is kept
                generator = reset_generator(config, mean_is)
                state.gan.reinitialize(config, world, generator=generator)
                log.write("dynamic_reset", it, stage=state.stage, generator=generator)
            state.stage_mean_is.append(mean_is)  # before the checkpoint: a resumed stage keeps its history
            state.stage_reward_se.append(iteration_sampling_error(rewards))
            state.search_iter = it + 1
            state.wall_seconds += time.perf_counter() - started
            started = time.perf_counter()
            checkpoint = state.state_dict()
            check_checkpoint(checkpoint, CHECKPOINT_SETTINGS)  # before anything is written from these weights
            # The iteration's events before its checkpoint: a kill between the two leaves them logged once the
            # checkpoint is there (else they would be lost for good), or redoes the iteration, whose events
            # `truncate_from` drops on resume.
            choices_logged = log_kernel_choices(log, it, choices_logged)
            log.write("iteration", it, stage=state.stage, mean_inception_score=mean_is, best=state.best)
            if world.is_main:
                save_samples(state.gan.gen, iteration_best, state.fixed_z,
                             run_dir / "samples" / f"iter_{it:03d}.png")
                save_checkpoint(run_dir / CHECKPOINT, checkpoint)
            last_good = it
            curves.scalars("search", {"mean_inception_score": mean_is, "stage": state.stage,
                                      "stage_best_inception_score": state.best["inception_score"]}, it)
            search_bar.update(1)
            if not quiet:  # progress lines go to stderr, beside the bars; stdout carries only the result
                search_bar.write(
                    f"iter {it:3d} | stage {state.stage} | mean IS {mean_is:6.3f} | D {summary.d_loss:+.3f} "
                    f"G {summary.g_loss:+.3f}{' | reset' if summary.dynamic_reset else ''} | stage best "
                    f"{state.best['inception_score']:.3f} {arch_to_str(state.best['arch'])}", file=sys.stderr)
            if stop_after is not None and it >= stop_after and state.search_iter < config.max_search_iter:
                search_bar.close()
                return None
        search_bar.close()

        it = config.max_search_iter
        check_stage_collapse(state, config.max_search_iter, log)
        final, _ = top_k_archs(state, feature_net, device)
    except NotFinite as err:  # nothing of the diverged state is written: the last checkpoint stays as it is
        search_bar.close()
        step = (f"search iteration {it} (stage {config.stage_at(it)})" if it < config.max_search_iter
                else "the final scoring of the top-k architectures")
        error = diverged_error("search", step, err, config, run_dir / CHECKPOINT,
                               None if last_good is None else f"after search iteration {last_good}")
        log.write("diverged", it, error=str(error))
        raise error from None
    state.wall_seconds += time.perf_counter() - started
    result = {
        "archs": [{"arch": arch, "inception_score": value} for arch, value in distinct(final)],
        "search_mode": config.search_mode,
        # a collapsed stage's rewards rank noise: the list above is then no finding (nas/collapse.py)
        "finding": not state.collapsed_stages,
        "collapsed_stages": list(state.collapsed_stages),
        "wall_seconds": state.wall_seconds,
        "device": device_name(device),
        "kernel_choices": autoselect_choices(),  # `--kernels auto`: fused or reference per op and shape
    }
    log_kernel_choices(log, config.max_search_iter, choices_logged)
    log.write("done", config.max_search_iter, **result)
    if world.is_main:
        write_json(run_dir / "result.json", result)
    return result
