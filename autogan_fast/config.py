"""Typed settings of the commands, validated once per base, and their presets as data.

`InputSettings` (data, scoring, kernels, device, seed: every command) <- `GANSettings` (the GAN, its
scoring and engine: search and train) <- `SearchConfig` / `TrainConfig` (each command's own fields).
Field names are AutoGAN's own, so `--max-search-iter` sets `max_search_iter`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

from .errors import UsageError
from .kernels import BACKENDS as KERNEL_BACKENDS

SEARCH_MODES = ("mlas", "slas", "random")
FEATURE_NETS = ("digits", "inception")


@dataclass
class InputSettings:
    """The settings every command shares (search, train, evaluate): data, scoring, implementation, device
    and seed."""

    # --- data and scoring
    dataset: str = "digits"  # digits (embedded), cifar10, stl10 or folder
    data_path: str | None = None  # dataset folder (not needed for digits)
    split: str | None = None  # dataset split; None = the dataset's training split
    feature_net: str | None = None  # digits or inception; None = digits for digits, inception otherwise
    inception_weights: str | None = None  # Inception-v3 weights file; None = look in $TORCH_HOME
    # --- implementation, device and seed
    kernels: str = "auto"  # fused ops: auto (Triton on CUDA), triton, or torch (the reference); $AUTOGAN_FAST_KERNELS
    device: str = "auto"  # auto, cpu or cuda
    seed: int = 12345  # seed of every random stream, scoring noise included (0 to 2**63 - 1)

    def resolved_feature_net(self) -> str:
        return default_feature_net(self.dataset, self.feature_net)

    def validate_inputs(self) -> None:
        """Raise UsageError naming the first bad shared setting."""
        check_finite(self)
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed must be in 0..{MAX_SEED} (2**63 - 1), got {self.seed}")
        if self.kernels not in KERNEL_BACKENDS:
            raise UsageError(f"--kernels (or $AUTOGAN_FAST_KERNELS) must be one of {', '.join(KERNEL_BACKENDS)}, "
                             f"got {self.kernels!r}")
        if self.feature_net is not None and self.feature_net not in FEATURE_NETS:
            raise UsageError(f"--feature-net must be one of {', '.join(FEATURE_NETS)}, got {self.feature_net!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class GANSettings(InputSettings):
    """The GAN settings search and train share: batches, sizes, optimizers, scoring and engine (AutoGAN's
    search values; train's preset and fields change some)."""

    # --- GAN
    gen_bs: int = 128  # generator batch size
    dis_bs: int = 64  # discriminator batch size (real and fake each)
    gf_dim: int = 128  # generator channels
    df_dim: int = 64  # discriminator channels
    latent_dim: int = 128  # noise dimension
    bottom_width: int = 4  # spatial size after the first linear layer; images are 8x that (4 -> 32 px; at least 2)
    n_critic: int = 5  # discriminator steps per generator step
    g_lr: float = 2e-4  # generator Adam learning rate
    d_lr: float = 2e-4  # discriminator Adam learning rate
    beta1: float = 0.0  # Adam beta1 of both GAN optimizers
    beta2: float = 0.9  # Adam beta2 of both GAN optimizers
    # --- scoring and engine
    is_splits: int = 10  # Inception Score splits
    eval_batch_size: int = 250  # images generated per batch when scoring
    num_grid_images: int = 64  # images in each samples/ PNG grid (a square number)
    engine: str = "auto"  # auto (graph on CUDA, else eager), eager, or graph (captured CUDA graphs)
    precision: str = "fp32"  # GAN training: fp32, tf32 (TF32 on CUDA; fp32 on a CPU), or bf16 (autocast, channels-last)

    def validate_gan(self) -> None:
        """Raise UsageError naming the first bad shared or GAN setting."""
        self.validate_inputs()
        check_positive(self, ("gen_bs", "dis_bs", "gf_dim", "df_dim", "latent_dim", "bottom_width", "n_critic",
                              "g_lr", "d_lr", "is_splits", "eval_batch_size", "num_grid_images"))
        check_at_most(self, GAN_SIZE_LIMITS)
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:  # torch.optim.Adam refuses others (mid-run, if not here)
                raise UsageError(f"--{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.bottom_width < 2:  # instance norm, a cell's norm choice, needs more than one pixel
            raise UsageError(f"--bottom-width must be at least 2 (instance norm needs more than one pixel), got "
                             f"{self.bottom_width}")
        check_engine(self.engine)
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if round(self.num_grid_images ** 0.5) ** 2 != self.num_grid_images:
            raise UsageError(f"--num-grid-images must be a square number, got {self.num_grid_images}")


@dataclass
class SearchConfig(GANSettings):
    """Every setting of one search run; saved to config.json and into each checkpoint."""

    # --- search schedule (AutoGAN's released values)
    search_mode: str = "mlas"  # mlas: grow cell by cell with beams; slas: all cells at once; random: mlas, uniform
    max_search_iter: int = 65  # search iterations
    grow_step1: int = 15  # iteration at which stage 1 (second cell) starts
    grow_step2: int = 35  # iteration at which stage 2 (third cell) starts
    shared_epoch: int = 15  # shared-GAN epochs per search iteration (an epoch = len(data) // dis_bs D steps)
    ctrl_step: int = 30  # controller updates per search iteration
    ctrl_sample_batch: int = 1  # architectures sampled per controller update (torchrun: the world size if not given)
    num_candidate: int = 10  # architectures sampled at a stage change to pick the beams from
    topk: int = 5  # beams kept at a stage change (and archs reported at the end)
    rl_num_eval_img: int = 5000  # generated images per Inception Score reward
    # --- controller
    ctrl_lr: float = 3.5e-4  # controller Adam learning rate (betas 0, 0.9)
    hid_size: int = 100  # controller LSTM hidden size
    entropy_coeff: float = 1e-3  # entropy bonus added to the reward
    baseline_decay: float = 0.9  # moving-average decay of the REINFORCE baseline (in [0, 1])
    # --- dynamic reset
    dynamic_reset_threshold: float = 1e-3  # loss-variance level that ends an iteration's GAN training
    dynamic_reset_window: int = 500  # G and D losses kept for the variance check
    fresh_gan_at_grow: bool = False  # re-initialize G, D and their Adam states at each grow (AutoGAN keeps them)
    reset_keeps_healthy_g: bool = False  # a dynamic reset restarts D alone when the iteration's mean reward is >= 1.75
    # --- engine
    graph_cache_size: int | None = None  # graphs kept per cache; None = the stage's key space (at most 2048)
    reward_precision: str = "fp32"  # feature network of the reward: fp32, tf32, or bf16 (autocast, channels-last)
    reward_feature_batch: int | None = None  # feature-net batch of a reward; None: 500 on CUDA, one eval batch on CPU

    def validate(self) -> SearchConfig:
        """Raise UsageError naming the first bad setting."""
        self.validate_gan()
        check_positive(self, ("max_search_iter", "shared_epoch", "ctrl_step", "ctrl_sample_batch", "num_candidate",
                              "topk", "rl_num_eval_img", "hid_size", "dynamic_reset_window", "ctrl_lr"))
        check_at_most(self, SEARCH_SIZE_LIMITS)
        if not 0.0 <= self.baseline_decay <= 1.0:  # a moving average's decay; past 1 the baseline explodes
            raise UsageError(f"--baseline-decay must be in [0, 1], got {self.baseline_decay}")
        for name in ("graph_cache_size", "reward_feature_batch"):
            if getattr(self, name) is not None:
                check_positive(self, (name,))
                check_at_most(self, {name: OPTIONAL_SEARCH_SIZE_LIMITS[name]})
        if self.search_mode not in SEARCH_MODES:
            raise UsageError(f"--search-mode must be one of {', '.join(SEARCH_MODES)}, got {self.search_mode!r}")
        if self.reward_precision not in REWARD_PRECISIONS:
            raise UsageError(f"--reward-precision must be one of {', '.join(REWARD_PRECISIONS)}, got "
                             f"{self.reward_precision!r}")
        if self.topk > self.num_candidate:
            raise UsageError(f"--topk ({self.topk}) must not exceed --num-candidate ({self.num_candidate})")
        if self.search_mode != "slas" and not 0 < self.grow_step1 < self.grow_step2:
            raise UsageError(f"grow steps must satisfy 0 < --grow-step1 < --grow-step2, got "
                             f"{self.grow_step1} and {self.grow_step2}")
        if self.search_mode != "slas" and self.grow_step2 >= self.max_search_iter:
            # the last cell is searched from iteration grow_step2 on: a search that stops before has no
            # complete (14-integer) architecture to report or train
            raise UsageError(f"--grow-step2 ({self.grow_step2}) must be below --max-search-iter "
                             f"({self.max_search_iter}): the third cell is searched from iteration --grow-step2 on")
        if self.rl_num_eval_img < self.is_splits:
            raise UsageError(f"--rl-num-eval-img ({self.rl_num_eval_img}) must be at least --is-splits "
                             f"({self.is_splits})")
        return self

    def stage_at(self, search_iter: int) -> int:
        """The stage that search iteration `search_iter` runs at."""
        if self.search_mode == "slas":
            return 2
        return int(search_iter >= self.grow_step1) + int(search_iter >= self.grow_step2)


@dataclass
class TrainConfig(GANSettings):
    """Every setting of one derived-training run; saved to config.json and into each checkpoint."""

    # --- schedule (AutoGAN's derived-training values)
    max_iter: int = 50000  # generator iterations (each follows n_critic discriminator steps)
    val_freq: int = 3125  # score IS / FID, save samples and checkpoint every this many G iterations
    num_eval_imgs: int = 50000  # generated images per IS / FID evaluation
    gf_dim: int = 256  # generator channels (derived training's; the search shares the GAN at 128)
    df_dim: int = 128  # discriminator channels (derived training's; the search's is 64)
    ema: float = 0.999  # decay of the moving average of G's weights that is evaluated (0 = G itself)
    lr_decay: bool = False  # decay both learning rates linearly to 0 over max_iter (AutoGAN's --lr_decay)
    tail_evals: int = 3  # result.json's final score: the mean IS and FID of the last this many evaluations

    def validate(self) -> TrainConfig:
        """Raise UsageError naming the first bad setting."""
        self.validate_gan()
        check_positive(self, ("max_iter", "val_freq", "num_eval_imgs", "tail_evals"))
        if not 0.0 <= self.ema < 1.0:
            raise UsageError(f"--ema must be in [0, 1), got {self.ema}")
        if self.num_eval_imgs < max(self.is_splits, 2):
            raise UsageError(f"--num-eval-imgs ({self.num_eval_imgs}) must be at least --is-splits "
                             f"({self.is_splits}) and 2 (FID needs a covariance)")
        return self


def flag(name: str) -> str:
    """Field name -> command-line flag name."""
    return name.replace("_", "-")


def check_positive(config: object, names: tuple[str, ...]) -> None:
    """UsageError naming the first setting in `names` that is not > 0 (NaN included)."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise UsageError(f"--{flag(name)} must be positive, got {value}")


def check_at_most(config: object, limits: dict[str, int]) -> None:
    """UsageError naming the first setting in `limits` above its bound (see GAN_SIZE_LIMITS)."""
    for name, limit in limits.items():
        value = getattr(config, name)
        if value > limit:
            raise UsageError(f"--{flag(name)} must be at most {limit:,} (a bound far above real use), got {value:,}")


# Upper bounds of the sizes that allocate memory. A size no machine holds (--gf-dim 10**12) would fail on
# allocation once the run folder exists, and each --resume would repeat it; these refuse it up front. Each is
# far above real use (the paper's values in brackets); they stop the absurd, not every combination a given
# machine cannot hold (several sizes near their bounds at once end in torch's out-of-memory error).
GAN_SIZE_LIMITS: dict[str, int] = {
    "gen_bs": 4096,  # [128; BigGAN trains at 2048]
    "dis_bs": 4096,  # [64]
    "gf_dim": 4096,  # [256 in training, 128 in the search; a 3x3 conv of 4096 channels holds 151 M weights]
    "df_dim": 4096,  # [128]
    "latent_dim": 4096,  # [128; StyleGAN's is 512]
    "bottom_width": 32,  # [4: 32-px images; 6 for STL-10's 48 px; 32 gives 256 px]
    "is_splits": 1000,  # [10]
    "eval_batch_size": 4096,  # [250; the feature network runs at 299 px]
    "num_grid_images": 1024,  # [64: an 8 x 8 grid; 1024 is 32 x 32, generated in one batch]
}
SEARCH_SIZE_LIMITS: dict[str, int] = {
    "shared_epoch": 1000,  # [15; an iteration's architectures, epochs x D steps per epoch, are drawn at once]
    "ctrl_sample_batch": 4096,  # [1]
    "num_candidate": 4096,  # [10]
    "hid_size": 4096,  # [100]
    "dynamic_reset_window": 10_000_000,  # [500]
}
# Settings that may be left unset (None: chosen by the run); their bounds when given.
OPTIONAL_SEARCH_SIZE_LIMITS: dict[str, int] = {
    "graph_cache_size": 100_000,  # [the stage's key space, at most 2,048 graphs]
    "reward_feature_batch": 4096,  # [500 on CUDA; images through the feature net at once]
}


FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: the networks and their optimizers compute in float32


def check_finite(config: object) -> None:
    """UsageError naming the first float setting that is inf or NaN: `inf` passes "must be positive" and
    NaN fails every comparison, so either would reach the run (a NaN network, a reset that never fires).
    Beyond float32's range counts as infinite: Adam cannot even take such a learning rate (a traceback)."""
    for name, kind in typing.get_type_hints(type(config)).items():
        value = getattr(config, name, None)
        if kind is float and isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise UsageError(f"--{flag(name)} must be a finite number (float32: at most {FLOAT32_MAX:.4g} in "
                             f"magnitude), got {value}")


MAX_SEED = 2**63 - 1  # the largest seed torch's (CPU and CUDA) and NumPy's generators all take


ENGINES = ("auto", "eager", "graph")
REWARD_PRECISIONS = ("fp32", "tf32", "bf16")  # the reward feature network's arithmetic: autogan_fast/nas/reward.py
PRECISIONS = ("fp32", "tf32", "bf16")  # GAN training's arithmetic (--precision): autogan_fast/engines/precision.py


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def default_feature_net(dataset: str, feature_net: str | None) -> str:
    """The feature network a dataset is scored with: digits for the digits, Inception-v3 otherwise."""
    return feature_net or ("digits" if dataset == "digits" else "inception")


# Presets as data: the base values of each command's settings; any flag given overrides them.
# The search's demo: the whole search in about 70 s on a 2-core CPU at 2 threads (measured 2026-12-07, digits
# classifier cached), on the embedded digits. Smaller nets, 8x8-scale images (bottom width 2: 4 -> 8 -> 16 px),
# short iterations and rewards. Calibrated over seeds (studies/calibration-notes.md): the paper's learning
# rates (2e-4; 1e-3 and 5e-4 left the shared GAN near collapse after each grow), 5 / 5 / 10 iterations per
# stage (4 / 4 / 7 ended stage 2 before the shared GAN had recovered from the last grow), and AutoGAN's 5 D
# steps per G step (at 2 the whole shared GAN mode-collapsed after the stage-1 grow on some seeds, 2026-12-07;
# tuned on seeds 1001-1003, held out 2001 and up). Two reset settings that AutoGAN does not have: a fresh shared
# GAN at each grow, and a dynamic reset that restarts D alone while the rewards are healthy (from the logs of 66
# random-arm searches: stage 0's reset threw away a G still learning, and stages restarted at their start did
# better; tuned on seeds 1001-1020, held out 2011-2070 and 3001-3006). Its paper preset is the field defaults
# (AutoGAN's released search).
SEARCH_PRESETS: dict[str, dict[str, object]] = {
    "demo": dict(
        max_search_iter=20, grow_step1=5, grow_step2=10, shared_epoch=2, ctrl_step=6, num_candidate=6, topk=3,
        rl_num_eval_img=500, gen_bs=64, dis_bs=32, gf_dim=32, df_dim=32, latent_dim=32, bottom_width=2,
        n_critic=5, g_lr=2e-4, d_lr=2e-4, ctrl_lr=3e-3, dynamic_reset_window=60, eval_batch_size=250,
        fresh_gan_at_grow=True, reset_keeps_healthy_g=True,
    ),
    "paper": {"dataset": "cifar10"},
}
# Derived training's demo: a whole run in about 55 s on a 2-core CPU (measured 2026-12-07), on the embedded
# digits at 16 px (bottom width 2): small nets, 800 iterations (so a fast EMA and a large G learning rate),
# 1,000-image evaluations every 100. The paper's architecture over seeds 1-3: final score (the mean of the
# last 3 evaluations) IS 6.1-6.8, FID 12.9-20.3; still improving at 800, and 200 had not settled (FID 46 ± 37
# over 3 seeds). Its paper preset is the field defaults (AutoGAN's derived training).
TRAIN_PRESETS: dict[str, dict[str, object]] = {
    "demo": dict(
        max_iter=800, val_freq=100, num_eval_imgs=1000, gen_bs=32, dis_bs=32, gf_dim=16, df_dim=16,
        latent_dim=32, bottom_width=2, n_critic=2, g_lr=2e-3, d_lr=1e-3, ema=0.95,
    ),
    "paper": {"dataset": "cifar10"},
}
PRESET_NAMES = ("demo", "paper")


def preset_config(preset: str, cls: type = SearchConfig, **overrides: object):
    """The named preset of `cls`'s command (SearchConfig: search, TrainConfig: train) with `overrides`
    (None values are ignored) applied on top."""
    presets = {SearchConfig: SEARCH_PRESETS, TrainConfig: TRAIN_PRESETS}[cls]
    if preset not in presets:
        raise UsageError(f"unknown preset {preset!r}: choose one of {', '.join(presets)}")
    values = {**presets[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return cls(**values)


def config_from_dict(data: object, cls: type = SearchConfig):
    """Rebuild a config (of dataclass `cls`) saved with `dataclasses.asdict`, refusing unknown keys and
    values of the wrong type (a damaged or hand-edited file) in one line; `validate` checks the values."""
    if not isinstance(data, dict):
        raise UsageError(f"saved config is a {type(data).__name__}, not a mapping of settings")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise UsageError(f"saved config has unknown settings: {', '.join(map(str, unknown))}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _typed(name, value, hints[name]) for name, value in data.items()})


def _typed(name: str, value: object, kind: object) -> object:
    """A saved setting `value` as type `kind` (int, float, str, bool, one of them | None, a tuple of one, a dict):
    an int is a valid float; anything else of another type is a UsageError naming the setting."""
    if isinstance(kind, types.UnionType) and value is None and type(None) in typing.get_args(kind):
        return None
    if isinstance(kind, types.UnionType):
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if typing.get_origin(kind) is dict:  # dict[str, object]: settings by name, each checked by its owner
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return dict(value)
        raise UsageError(f"saved config: {name} must be a mapping of settings, got {value!r}")
    if typing.get_origin(kind) is tuple:  # tuple[str, ...]: JSON saved it as a list
        item = typing.get_args(kind)[0]
        if isinstance(value, list | tuple) and all(isinstance(v, item) for v in value):
            return tuple(value)
        raise UsageError(f"saved config: {name} must be a list of {item.__name__}, got {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise UsageError(f"saved config: {name} must be {getattr(kind, '__name__', kind)}, got {value!r}")


__all__ = [
    "GAN_SIZE_LIMITS",
    "MAX_SEED",
    "PRESET_NAMES",
    "SEARCH_PRESETS",
    "SEARCH_SIZE_LIMITS",
    "TRAIN_PRESETS",
    "GANSettings",
    "InputSettings",
    "SearchConfig",
    "TrainConfig",
    "check_at_most",
    "check_finite",
    "check_positive",
    "config_from_dict",
    "default_feature_net",
    "field_docs",
    "flag",
    "preset_config",
]


def field_docs(cls: type) -> dict[str, str]:
    """The one-line comment after each field of a config dataclass (its --help text)."""
    import inspect
    import re

    docs = {}
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass):
            for line in inspect.getsource(klass).splitlines():
                match = re.match(r"\s+(\w+): [^=]+=.*?  # (.+)$", line)
                if match:
                    docs.setdefault(match.group(1), match.group(2))
    return docs
