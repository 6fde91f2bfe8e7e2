"""The statistics a study reports: intervals, tests and verdicts, computed by scipy.

Every quality claim the study makes is one of these, with its n:
  - `mean_interval`: the mean of a metric over runs (seeds), with a Student-t interval;
  - `compare`: "arm A trains better generators than arm B" by a one-sided Mann-Whitney U test (no
    normality assumed: a handful of GAN runs per arm, with the occasional collapse, is far from
    normal), and the opposite one-sided test, so the verdict can be "reversed" as well as "holds";
  - `spearman_interval`: proxy score against final score, Spearman's rho with a bootstrap interval
    (pairs resampled) and its p-value, as the paper's 0.779 is stated.
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


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval; one value gives the mean with NaN bounds."""
    x = _values("mean_interval", values, 1)
    mean = float(x.mean())
    if len(x) < 2 or float(x.std()) == 0.0:
        bound = math.nan if len(x) < 2 else mean
        return Interval(mean, bound, bound, len(x))
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=stats.sem(x))
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


__all__ = ["ALPHA", "CONFIDENCE", "VERDICTS", "Comparison", "Interval", "compare", "compare_to_value",
           "mean_interval", "spearman_interval", "verdict"]
