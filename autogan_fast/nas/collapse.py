"""When a stage's shared GAN has collapsed, and when the beams are copies of one architecture.

The test. A stage has collapsed when the mean reward (Inception Score) of each of its last
`COLLAPSE_WINDOW` search iterations (all of them, when it ran fewer) stayed below `COLLAPSE_IS`.
IS = exp(E_x KL(p(y|x) || p(y))) is at most the number of classes the images spread over evenly, and
1 when the classifier sees no class structure at all (every image the same class, or every image
ambiguous). Below 1.5 the generated images fall into effectively fewer than 1.5 classes: whatever
ranking the controller learns from such rewards ranks noise around one mode, not architectures.
The floor is the same for the 10-class digits net and Inception's 1,008 classes: it only asks for
more than one class. What it does not see: a generator that covers the classes but collapses within
each (sample diversity inside a class), which IS cannot measure.

The near-collapse test. A stage has nearly collapsed when the mean of its last `NEAR_COLLAPSE_WINDOW`
iterations' mean rewards (all of them, when it ran fewer) is below `NEAR_COLLAPSE_IS`: a shared GAN that
hovers just above the floor (rewards 1.35-1.9, one iteration now and then above 1.5) passes the test
above, yet ranks little more than noise. The threshold comes from measured digits-demo trajectories
(studies/calibration-notes.md, 2026-12-07): healthy stages' last-3 means were 1.8 and up at
stage 0 (4 px images: the digits classifier sees blurry blobs, so even a healthy stage scores low) and
higher at the later stages, the near-collapsed ones 1.3-1.7. The margin at stage 0 is thin: it is
the stage the threshold is set by.

How sure a mark is. Each iteration's mean reward is a mean over the architectures it sampled, so it
carries their spread: its standard error is their standard deviation over the root of their number.
The near-collapse mean's is the root of the sum of the last iterations' squared errors over their
count. It is logged and printed with the mark, because a mean within about one error of the line is a
borderline call. On the digits demo it was 0.12-0.14 (median). The demo search's held-out near-collapses
(both arms, 2 threads) lay 0.04-0.18 below the line: three stage-0 ones (1.67-1.71) within about one
error of it, the one stage-1 sink (1.61) at 1.2 errors, and one stage-0 mean (1.57) at 1.7 errors. That
last one is a full reset's doing: the iteration after a reset that restarts G scores a G one iteration
old (1.03), and a last-3 window that holds it reads as a near-collapse (studies/calibration-notes.md).

The mark. A collapsed (or nearly collapsed) stage is logged (`collapse` event, with its `kind`),
warned about on stderr, and recorded in `result.json` (`collapsed_stages`, and `finding: false`), so
its ranking is never presented as a finding. MLAS beams that are copies of one architecture are
logged at the grow (`distinct_beams`) and warned about too: the next stage then searches after one
prefix only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

COLLAPSE_IS = 1.5  # mean reward below which a stage's iterations count as collapsed
COLLAPSE_WINDOW = 2  # the stage's last iterations that must all be below it
NEAR_COLLAPSE_IS = 1.75  # the mean of a stage's last iterations' mean rewards below which it nearly collapsed
NEAR_COLLAPSE_WINDOW = 3  # the stage's last iterations that mean is taken over
COLLAPSED, NEAR_COLLAPSE = "collapsed", "near-collapse"  # `stage_verdict`'s answers besides None (healthy)


def stage_collapsed(mean_rewards: Sequence[float], floor: float = COLLAPSE_IS,
                    window: int = COLLAPSE_WINDOW) -> bool:
    """Whether a stage whose iterations had these mean rewards (in order) ended collapsed."""
    recent = list(mean_rewards)[-window:]
    return bool(recent) and all(value < floor for value in recent)


def tail_mean(mean_rewards: Sequence[float], window: int = NEAR_COLLAPSE_WINDOW) -> float | None:
    """The mean of the stage's last `window` iterations' mean rewards (what the near-collapse test reads);
    None before its first iteration."""
    recent = list(mean_rewards)[-window:]
    return sum(recent) / len(recent) if recent else None


def stage_near_collapse(mean_rewards: Sequence[float], floor: float = NEAR_COLLAPSE_IS,
                        window: int = NEAR_COLLAPSE_WINDOW) -> bool:
    """Whether the mean of the stage's last `window` iterations' mean rewards is below `floor`."""
    mean = tail_mean(mean_rewards, window)
    return mean is not None and mean < floor


def stage_verdict(mean_rewards: Sequence[float]) -> str | None:
    """COLLAPSED, NEAR_COLLAPSE, or None for a healthy stage (or one with no iteration yet)."""
    if stage_collapsed(mean_rewards):
        return COLLAPSED
    return NEAR_COLLAPSE if stage_near_collapse(mean_rewards) else None


def iteration_sampling_error(rewards: Sequence[float]) -> float | None:
    """The standard error of an iteration's mean reward over the architectures it scored; None for one
    (a single reward has no spread to measure it by)."""
    rewards = list(rewards)
    return statistics.stdev(rewards) / math.sqrt(len(rewards)) if len(rewards) > 1 else None


def tail_sampling_error(iteration_errors: Sequence[float | None],
                        window: int = NEAR_COLLAPSE_WINDOW) -> float | None:
    """The standard error of the mean of the stage's last `window` iterations' mean rewards (what the
    near-collapse test reads), from each iteration's `iteration_sampling_error`; None with none, or when
    one of them is unknown."""
    recent = list(iteration_errors)[-window:]
    if not recent or any(error is None for error in recent):
        return None
    return math.sqrt(sum(error * error for error in recent)) / len(recent)


def collapse_warning(stage: int, mean_rewards: Sequence[float], floor: float = COLLAPSE_IS,
                     sampling_error: float | None = None) -> str:
    """The stderr line for a stage `stage_verdict` marked; `sampling_error` (`tail_sampling_error`) is
    printed beside a near-collapse's mean when known."""
    def last(window: int) -> str:
        return ", ".join(f"{value:.3f}" for value in list(mean_rewards)[-window:])

    if stage_verdict(mean_rewards) == NEAR_COLLAPSE:
        mean = f"{tail_mean(mean_rewards):.3f}"
        if sampling_error is not None:
            mean += f" +- {sampling_error:.3f}, the sampling error of the architectures scored,"
        return (f"warning: the shared GAN of stage {stage} nearly collapsed (mean IS of its last iterations "
                f"{last(NEAR_COLLAPSE_WINDOW)}: their mean {mean} is below {NEAR_COLLAPSE_IS}): "
                f"its rewards rank little more than noise, and the result will be marked as no finding")
    recent = last(COLLAPSE_WINDOW)
    return (f"warning: the shared GAN of stage {stage} collapsed (mean IS of its last iterations {recent}, "
            f"below {floor}): its rewards rank noise, and the result will be marked as no finding")


def beams_warning(stage: int, distinct: int, topk: int) -> str:
    return (f"warning: the {topk} beams kept for stage {stage} are {distinct} distinct architecture"
            f"{'' if distinct == 1 else 's'}: the stage searches after {'one prefix' if distinct == 1 else 'few'}")


__all__ = ["COLLAPSED", "COLLAPSE_IS", "COLLAPSE_WINDOW", "NEAR_COLLAPSE", "NEAR_COLLAPSE_IS", "NEAR_COLLAPSE_WINDOW",
           "beams_warning", "collapse_warning", "iteration_sampling_error", "stage_collapsed", "stage_near_collapse",
           "stage_verdict", "tail_mean", "tail_sampling_error"]
