"""The statistics a study reports: intervals, tests and verdicts, computed by scipy.

Every quality claim the study makes is one of these, with its n:
  - `mean_interval`: the mean of a metric over runs (seeds), with a bootstrap percentile interval from
    `MIN_INTERVAL_N` values on and the values alone below (a percentile interval stays inside the values'
    range, so never a negative FID; a Student-t interval at n = 2 spans +-12.7 standard errors);
  - `compare`: "arm A trains better generators than arm B" by a one-sided Mann-Whitney U test (no
    normality assumed: a handful of GAN runs per arm, with the occasional collapse, is far from
    normal), and the opposite one-sided test, so the verdict can be "reversed" as well as "holds";
  - `spearman_interval`: proxy score against final score, Spearman's rho with a bootstrap interval
    (pairs resampled) and its p-value, as the paper's 0.779 is stated;
  - `n_for_power`: the n at which the one-sided test would detect the observed effect with 80% power
    (Noether's normal approximation from the observed effect size, see there);
  - `spearman_brown` / `noise_ceiling`: how well any proxy could correlate with a final score that is
    itself noisy (from the score's test-retest correlation over train seeds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # of every interval the study reports
ALPHA = 0.05  # significance level of every verdict
VERDICTS = ("holds", "not shown", "reversed")
# Below this many values a mean gets no interval: a bootstrap of 2 or 3 values is little more than their
# range, and a t-interval at n = 2 reaches far outside the metric's range (negative FIDs).
MIN_INTERVAL_N = 4


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval and the number of values behind it."""

    estimate: float
    low: float  # NaN when n is too small for an interval
    high: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """A one-sided comparison "a is larger than b" and its verdict."""

    test: str  # the test's name, as the report prints it
    p_greater: float  # p-value of H1: a > b
    p_less: float  # p-value of H1: a < b
    verdict: str  # "holds" (a > b at ALPHA), "reversed" (a < b at ALPHA) or "not shown"
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


def _values(name: str, values: Sequence[float], minimum: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) < minimum:
        raise ValueError(f"{name} needs at least {minimum} values, got {len(array)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a non-finite value: {values}")
    return array


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = 5000,
                  seed: int = 0) -> Interval:
    """Mean and bootstrap percentile interval (values resampled, fixed seed: the report is reproducible);
    below `MIN_INTERVAL_N` values the mean with NaN bounds (the values alone mean something, an interval
    does not), constant values a zero-width interval."""
    x = _values("mean_interval", values, 1)
    mean = float(x.mean())
    if len(x) < MIN_INTERVAL_N or float(x.std()) == 0.0:
        bound = math.nan if len(x) < MIN_INTERVAL_N else mean
        return Interval(mean, bound, bound, len(x))
    boot = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=confidence,
                           method="percentile", rng=np.random.default_rng(seed))
    low, high = boot.confidence_interval
    return Interval(mean, float(low), float(high), len(x))


def verdict(p_greater: float, p_less: float, alpha: float = ALPHA) -> str:
    """"holds" when a > b is significant, "reversed" when a < b is, else "not shown"."""
    if p_greater < alpha:
        return "holds"
    if p_less < alpha:
        return "reversed"
    return "not shown"


def compare(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> Comparison:
    """Mann-Whitney U of "a larger than b" (and of the reverse), exact where scipy can be."""
    x, y = _values("compare (a)", a, 1), _values("compare (b)", b, 1)
    greater = stats.mannwhitneyu(x, y, alternative="greater").pvalue
    less = stats.mannwhitneyu(x, y, alternative="less").pvalue
    return Comparison("Mann-Whitney U, one-sided", float(greater), float(less),
                      verdict(float(greater), float(less), alpha), len(x), len(y))


def compare_to_value(a: Sequence[float], value: float, alpha: float = ALPHA) -> Comparison:
    """Wilcoxon signed-rank of "a larger than `value`" (e.g. the median of a random baseline)."""
    x = _values("compare_to_value", a, 1) - value
    if not np.any(x):
        return Comparison("Wilcoxon signed-rank, one-sided", 1.0, 1.0, "not shown", len(x), 1)
    greater = stats.wilcoxon(x, alternative="greater").pvalue
    less = stats.wilcoxon(x, alternative="less").pvalue
    return Comparison("Wilcoxon signed-rank, one-sided", float(greater), float(less),
                      verdict(float(greater), float(less), alpha), len(x), 1)


def spearman_interval(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE,
                      resamples: int = 5000, seed: int = 0) -> tuple[Interval, float]:
    """Spearman's rho of paired values, its bootstrap percentile interval (pairs resampled, fixed seed:
    the report is reproducible) and the p-value of rho != 0."""
    a, b = _values("spearman_interval (x)", x, 3), _values("spearman_interval (y)", y, 3)
    if len(a) != len(b):
        raise ValueError(f"spearman_interval needs paired values, got {len(a)} and {len(b)}")
    if len(set(a.tolist())) < 2 or len(set(b.tolist())) < 2:  # a constant list: no ranking to correlate
        return Interval(math.nan, math.nan, math.nan, len(a)), math.nan
    result = stats.spearmanr(a, b)
    rho, p = float(result.statistic), float(result.pvalue)
    with warnings.catch_warnings():  # a resample of few pairs can be constant: its rho is NaN, not news
        warnings.simplefilter("ignore", (stats.ConstantInputWarning, stats.DegenerateDataWarning))
        boot = stats.bootstrap((a, b), lambda u, v: stats.spearmanr(u, v).statistic, paired=True,
                               vectorized=False, n_resamples=resamples, confidence_level=confidence,
                               method="percentile", rng=np.random.default_rng(seed))
    low, high = boot.confidence_interval
    return Interval(rho, float(low), float(high), len(a)), p


POWER = 0.8  # the power `n_for_power` asks for
MAX_POWER_N = 100_000  # `n_for_power` answers at most this (a tiny effect needs millions: "more than" this)


def superiority(a: Sequence[float], b: Sequence[float]) -> float:
    """P(A > B) + P(A = B) / 2 for a value of a against one of b: the Mann-Whitney U of a over n_a n_b."""
    x, y = _values("superiority (a)", a, 1), _values("superiority (b)", b, 1)
    return float(((x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum()) / (len(x) * len(y)))


def signed_superiority(a: Sequence[float], value: float) -> float:
    """P(D_i + D_j > 0) + P(= 0) / 2 over the pairs i <= j of the differences D = a - value (the Walsh
    averages): the effect the Wilcoxon signed-rank test detects."""
    d = _values("signed_superiority", a, 1) - value
    i, j = np.triu_indices(len(d))
    sums = d[i] + d[j]
    return float(((sums > 0).sum() + 0.5 * (sums == 0).sum()) / len(sums))


def n_for_power(test: str, effect: float, fraction_a: float = 0.5, alpha: float = ALPHA,
                power: float = POWER) -> int | None:
    """The smallest n of group a at which `test` (one-sided, "a larger") detects `effect` with `power`.

    Noether's (1987) normal approximation, `effect` the observed probability of superiority:
      - Mann-Whitney U (`superiority`): N = (z_{1-alpha} + z_power)^2 / (12 c (1 - c) (effect - 1/2)^2) in
        all, a's share c = `fraction_a` (the observed ratio of the group sizes), n_a = c N;
      - Wilcoxon signed-rank (`signed_superiority`): n = (z_{1-alpha} + z_power)^2 / (3 (effect - 1/2)^2).
    Raised, where needed, to the smallest n whose exact test can reach p < alpha at all (`smallest_p`).
    None when the observed effect is not in the tested direction (effect <= 1/2): no n detects it.
    The observed effect of a handful of runs is itself uncertain, so this is a planning figure; near complete
    separation (effect close to 1) the normal approximation overstates n (the exact test gets there sooner)."""
    if effect <= 0.5:
        return None
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
    if test.startswith("Wilcoxon"):
        n = z * z / (3 * (effect - 0.5) ** 2)
        floor = next(k for k in range(1, 64) if smallest_p(test, k, 1) < alpha)
    else:
        n = fraction_a * z * z / (12 * fraction_a * (1 - fraction_a) * (effect - 0.5) ** 2)
        floor = next(k for k in range(1, MAX_POWER_N)
                     if smallest_p(test, k, max(1, round(k * (1 - fraction_a) / fraction_a))) < alpha)
    return min(max(math.ceil(n), floor), MAX_POWER_N)


def smallest_p(test: str, n_a: int, n_b: int) -> float:
    """The smallest one-sided p-value the test can reach with these n (no ties): below ALPHA or the
    verdict can never be "holds", however large the effect."""
    if test.startswith("Wilcoxon"):
        return 0.5 ** n_a
    return 1.0 / math.comb(n_a + n_b, n_a)


def spearman_brown(rho: float, k: int = 2) -> float:
    """The reliability of the mean of k measurements from one measurement's test-retest correlation rho:
    k rho / (1 + (k - 1) rho) (the Spearman-Brown prophecy formula); NaN for NaN."""
    return k * rho / (1 + (k - 1) * rho)


def noise_ceiling(test_retest: float, k: int = 2) -> float:
    """The highest correlation any proxy can reach with the mean of k noisy final scores: the square root of
    that mean's reliability (classical attenuation: r_observed = r_true sqrt(rel_x rel_y), a perfect proxy
    has rel_x = 1). NaN when the test-retest correlation is not positive (no reliable signal to reach)."""
    if not test_retest > 0:
        return math.nan
    return math.sqrt(spearman_brown(test_retest, k))


__all__ = ["ALPHA", "CONFIDENCE", "MIN_INTERVAL_N", "POWER", "VERDICTS", "Comparison", "Interval", "compare",
           "compare_to_value", "mean_interval", "n_for_power", "noise_ceiling", "signed_superiority", "smallest_p",
           "spearman_brown", "spearman_interval", "superiority", "verdict"]
