"""A study's settings and its plan: the sub-runs it is made of, each an ordinary run folder.

The plan, in the order it runs:
  1. `search/ARM-seedS`: one search per arm and seed, every arm at the same budget (the search preset's
     schedule), the seeds shared between arms;
  2. `proxy/ARM-seedS`: the K random architectures rescored on each finished search of the proxy arms
     (its final shared GAN: the proxy the search ranks by), each arm reported on its own;
  3. `train/ARM-seedS-rankR-tseedT`: each search's top architectures trained from scratch;
  4. `train/random-K-tseedT`: the K uniformly sampled architectures trained the same way, the baseline
     "chance" is measured by and the final scores proxy-vs-final correlates with.
The plan is a pure function of the settings, so a resumed study rebuilds the same one.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field

import numpy as np

from ..config import (
    MAX_SEED,
    PRESET_NAMES,
    InputSettings,
    SearchConfig,
    TrainConfig,
    check_at_most,
    check_positive,
    config_from_dict,
    preset_config,
)
from ..errors import UsageError
from ..flags import ArgumentParser, add_config_flags, explicit_values
from ..search_space import NUM_CELLS, decision_sizes

# The arms, at equal search budget: AutoGAN's multi-level search, its single-level search, the same
# multi-level schedule with uniformly sampled architectures (no controller), and MLAS without dynamic reset.
ARM_SETTINGS: dict[str, dict[str, object]] = {
    "mlas": {"search_mode": "mlas"},
    "slas": {"search_mode": "slas"},
    "random": {"search_mode": "random"},
    "mlas-no-reset": {"search_mode": "mlas", "dynamic_reset_threshold": 0.0},
}
ARMS = tuple(ARM_SETTINGS)
# Bounds of the plan's sizes: each unit is a whole search or training, so these are far past real use (the
# defaults in brackets); 10**9 would hang drawing the plan before anything is said. K, random architectures
# (30), is trained from scratch and rescored on every proxy search.
MAX_RANDOM_ARCHS = 1000
STUDY_SIZE_LIMITS = {"seeds": 1000, "train_seeds": 100, "top": 100, "random_archs": MAX_RANDOM_ARCHS}
# Flags the study sets for each sub-run itself, so --search-flags / --train-flags may not.
RESERVED_FLAGS = {"--out", "--resume", "--seed", "--preset", "--search-mode", "--dynamic-reset-threshold", "--arch",
                  "--arch-from", "--rank", "--stop-after", "--json", "--quiet"}
# The settings that reach every sub-run unchanged (data, scoring, implementation): `InputSettings` but the
# seed, which the study sets per sub-run.
SHARED_INPUTS = tuple(f.name for f in dataclasses.fields(InputSettings) if f.name != "seed")
SETTINGS = {"search": SearchConfig, "train": TrainConfig}  # the typed settings of the searches and trainings


@dataclass
class StudySettings:
    """Every setting of one study; saved to the study folder's config.json (a resume rebuilds the plan)."""

    preset: str = "demo"  # the search and train preset of every sub-run: demo (digits, CPU) or paper
    arms: tuple[str, ...] = ARMS  # search arms compared (mlas, slas, random, mlas-no-reset)
    seeds: int = 2  # searches per arm (seeds seed, seed + 1, ...)
    train_seeds: int = 1  # from-scratch trainings per architecture (train seeds seed, seed + 1, ...)
    top: int = 1  # each search's top architectures trained (1 = its top-1)
    random_archs: int = 30  # K: uniformly sampled architectures trained as the baseline and rescored as proxies
    proxy_arms: tuple[str, ...] | None = None  # arms whose searches rescore the K archs, the first the headline
    seed: int = 1  # first seed of the searches, of the trainings and of the random architectures
    search_flags: str = ""  # more flags for every search, one string (--search-flags="--max-search-iter 30")
    train_flags: str = ""  # more flags for every training, one string (--train-flags="--max-iter 2000")
    inputs: dict[str, object] = field(default_factory=dict)  # `InputSettings` given to every sub-run (else: the preset)

    def resolved_proxy_arms(self) -> tuple[str, ...]:
        """The proxy arms, the headline first. By default every arm, slas first: its shared GAN trains every
        decision of the space to the end, while MLAS's has trained cells 1 and 2 only along its beams since
        the grows, so it scores a uniformly random architecture's first cells on paths it barely trained."""
        if self.proxy_arms is not None:
            return self.proxy_arms
        return tuple(sorted(self.arms, key=lambda arm: arm != "slas"))

    def validate(self) -> StudySettings:
        """Raise UsageError naming the first bad setting."""
        if self.preset not in PRESET_NAMES:
            raise UsageError(f"--preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise UsageError(f"--arms must name distinct arms of {', '.join(ARMS)}, got {', '.join(self.arms)}")
        check_positive(self, ("seeds", "train_seeds", "top", "random_archs"))
        check_at_most(self, STUDY_SIZE_LIMITS)
        if self.proxy_arms is not None:
            outside = [arm for arm in self.proxy_arms if arm not in self.arms]
            if outside or not self.proxy_arms or len(set(self.proxy_arms)) != len(self.proxy_arms):
                raise UsageError(f"--proxy-arms must name distinct arms of the study ({', '.join(self.arms)}), got "
                                 f"{', '.join(self.proxy_arms)}")
        unknown = sorted(set(self.inputs) - set(SHARED_INPUTS))
        if unknown:
            raise UsageError(f"unknown shared input setting {unknown[0]!r} (the shared ones: "
                             f"{', '.join(SHARED_INPUTS)})")
        config_from_dict(self.inputs, InputSettings)  # each of the right type
        if not 0 <= self.seed <= MAX_SEED - max(self.seeds, self.train_seeds):
            raise UsageError(f"--seed must be in 0..{MAX_SEED - max(self.seeds, self.train_seeds)}, got {self.seed}")
        for name in ("search_flags", "train_flags"):
            words = split_flags(name, getattr(self, name))
            reserved = RESERVED_FLAGS & {word.split("=")[0] for word in words}
            if reserved:
                raise UsageError(f"--{name.replace('_', '-')} must not set {sorted(reserved)[0]}: the study sets it "
                                 f"for each sub-run")
        return self


def split_flags(name: str, text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as err:
        raise UsageError(f"--{name.replace('_', '-')} {text!r}: {err}") from None


@dataclass(frozen=True)
class SubRun:
    """One run of the plan: its folder under the study, what it runs, and the sub-runs it needs first."""

    name: str  # its folder, relative to the study folder (e.g. "search/mlas-seed1")
    command: str  # "search", "train" or "proxy"
    settings: dict = field(default_factory=dict, compare=False)  # its job's settings given (the rest: the preset's)
    needs: tuple[str, ...] = ()  # sub-runs whose results it reads (a training's first: the search it trains from)
    arm: str | None = None  # the search arm it belongs to (None: the random baseline)
    seed: int | None = None  # the search's seed (search, proxy, and the training of its architectures)
    train_seed: int | None = None  # a training's seed
    rank: int | None = None  # a trained search architecture's rank in its search's result.json
    arch_index: int | None = None  # a trained random architecture's index among the K
    arch: tuple[int, ...] | None = None  # a random architecture's 14 integers (a search's: read from its result)


def random_archs(count: int, seed: int) -> list[list[int]]:
    """`count` architectures drawn uniformly from the whole (three-cell) search space, reproducibly."""
    rng = np.random.default_rng(seed)
    sizes = [size for cell in range(NUM_CELLS) for size in decision_sizes(cell)]
    return [[int(rng.integers(size)) for size in sizes] for _ in range(count)]


def sub_run_settings(settings: StudySettings, command: str) -> dict[str, object]:
    """What every search (`command` "search") or training ("train") of the study is given: the shared inputs
    and `--search-flags` / `--train-flags`, read by the job's settings flags (as its command reads them);
    refused in one line naming the flag."""
    text = settings.search_flags if command == "search" else settings.train_flags
    words = [word for name, value in settings.inputs.items() for word in (f"--{name.replace('_', '-')}", str(value))]
    parser = ArgumentParser(prog=f"the study's {command} flags")
    add_config_flags(parser, SETTINGS[command])
    try:
        return explicit_values(parser.parse_flags([*words, *shlex.split(text)]), SETTINGS[command])
    except UsageError as err:
        raise refused(command, err) from None


def refused(command: str, err: UsageError) -> UsageError:
    kind = {"search": "searches", "train": "trainings"}[command]
    return UsageError(f"the study's {kind} would be refused: {err} (their flags: --{command}-flags with the study's "
                      f"--preset and data flags)")


def check_settings(settings: StudySettings, plan: list[SubRun]) -> None:
    """Validate every search's and training's settings as its job will, before anything is written: a refusal
    names the setting in one line (not in a sub-run's output file, after the study folder exists, where
    `--resume` could never correct it)."""
    checked: set[tuple[str, str]] = set()
    for run in plan:
        key = (run.command, repr(sorted(run.settings.items())))
        if run.command == "proxy" or key in checked:
            continue
        checked.add(key)
        try:
            preset_config(settings.preset, SETTINGS[run.command], **run.settings).validate()  # as the job will
        except UsageError as err:
            raise refused(run.command, err) from None


def build_plan(settings: StudySettings) -> list[SubRun]:
    """Every sub-run of the study, in the order they run (see the module's header)."""
    search_settings = sub_run_settings(settings, "search")
    train_settings = sub_run_settings(settings, "train")
    seeds = [settings.seed + i for i in range(settings.seeds)]
    train_seeds = [settings.seed + i for i in range(settings.train_seeds)]
    archs = random_archs(settings.random_archs, settings.seed)

    searches = [SubRun(f"search/{arm}-seed{seed}", "search", {**search_settings, **ARM_SETTINGS[arm], "seed": seed},
                       arm=arm, seed=seed) for seed in seeds for arm in settings.arms]
    proxies = [SubRun(f"proxy/{run.arm}-seed{run.seed}", "proxy", needs=(run.name,), arm=run.arm, seed=run.seed)
               for arm in settings.resolved_proxy_arms() for run in searches if run.arm == arm]
    trained = [SubRun(f"train/{run.arm}-seed{run.seed}-rank{rank}-tseed{tseed}", "train",
                      {**train_settings, "seed": tseed}, needs=(run.name,), arm=run.arm, seed=run.seed,
                      train_seed=tseed, rank=rank)
               for run in searches for rank in range(1, settings.top + 1) for tseed in train_seeds]
    baseline = [SubRun(f"train/random-{index:03d}-tseed{tseed}", "train", {**train_settings, "seed": tseed},
                       train_seed=tseed, arch_index=index, arch=tuple(arch))
                for index, arch in enumerate(archs) for tseed in train_seeds]
    return searches + proxies + trained + baseline


def settings_from_dict(data: object) -> StudySettings:
    """Rebuild saved settings (a study folder's config.json), refusing damaged ones in one line. Studies saved
    before `inputs` held the shared inputs as settings of their own (None: not given); they still resume."""
    if isinstance(data, dict) and "inputs" not in data:
        data = {**{k: v for k, v in data.items() if k not in SHARED_INPUTS},
                "inputs": {k: data[k] for k in SHARED_INPUTS if data.get(k) is not None}}
    return config_from_dict(data, StudySettings).validate()


__all__ = ["ARMS", "ARM_SETTINGS", "StudySettings", "SubRun", "build_plan", "check_settings", "random_archs",
           "settings_from_dict"]
