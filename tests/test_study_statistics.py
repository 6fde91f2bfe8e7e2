"""The study's statistics against scipy and hand computations on known inputs."""

import math

import numpy as np
import pytest
from scipy import stats

from autogan_fast.study.statistics import (
    compare,
    compare_to_value,
    mean_interval,
    spearman_interval,
    verdict,
)


def test_mean_interval_is_the_student_t_interval():
    values = [5.9, 7.1, 4.2, 6.6, 5.0]
    got = mean_interval(values)
    n, mean, sd = 5, float(np.mean(values)), float(np.std(values, ddof=1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)  # the textbook formula
    assert got.n == n and got.estimate == pytest.approx(mean)
    assert (got.low, got.high) == pytest.approx((mean - half, mean + half), rel=1e-12)


@pytest.mark.parametrize("values, low_is_nan", [
    pytest.param([3.0], True, id="one-value-no-interval"),
    pytest.param([2.0, 2.0, 2.0], False, id="constant-zero-width"),
])
def test_mean_interval_degenerate_cases(values, low_is_nan):
    got = mean_interval(values)
    assert got.estimate == values[0]
    assert math.isnan(got.low) if low_is_nan else got.low == got.high == values[0]


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least 1"):
        compare([], [1.0])
    with pytest.raises(ValueError, match="paired"):
        spearman_interval([1, 2, 3], [1, 2, 3, 4])


def test_compare_is_one_sided_mann_whitney_with_a_verdict():
    searched, random = [7.0, 7.5, 8.1, 6.9, 7.7], [5.1, 6.0, 5.5, 4.9, 6.2]
    got = compare(searched, random)
    assert got.p_greater == pytest.approx(stats.mannwhitneyu(searched, random, alternative="greater").pvalue)
    # every searched value above every random one: the exact one-sided p is 1 / C(10, 5)
    assert got.p_greater == pytest.approx(1 / math.comb(10, 5))
    assert got.verdict == "holds" and (got.n_a, got.n_b) == (5, 5)
    assert compare(random, searched).verdict == "reversed"
    assert compare([1.0, 3.0, 5.0], [2.0, 4.0, 6.0]).verdict == "not shown"


def test_compare_to_a_value_is_the_signed_rank_test():
    values = [1.2, 1.3, 1.9, 2.4, 1.1, 1.6]  # all above 1: exact one-sided p = 1 / 2^6
    got = compare_to_value(values, 1.0)
    expected = stats.wilcoxon(np.array(values) - 1.0, alternative="greater").pvalue
    assert got.p_greater == pytest.approx(expected) and got.verdict == "holds"
    assert compare_to_value([1.0, 1.0], 1.0).verdict == "not shown"  # no difference at all


def test_verdict_rule():
    assert verdict(0.01, 0.99) == "holds"
    assert verdict(0.99, 0.01) == "reversed"
    assert verdict(0.2, 0.8) == "not shown"
    assert verdict(0.05, 0.95) == "not shown"  # p must be below alpha, not equal


def test_spearman_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.5, size=40)
    interval, p = spearman_interval(x, y, resamples=2000)
    reference = stats.spearmanr(x, y)
    assert interval.estimate == pytest.approx(reference.statistic) and p == pytest.approx(reference.pvalue)
    assert interval.low < interval.estimate < interval.high <= 1.0 and interval.n == 40
    assert spearman_interval(x, y, resamples=2000) == (interval, p)  # seeded: reproducible
    # a perfect ranking has a zero-width interval at 1; a constant list has no correlation at all
    perfect, _ = spearman_interval([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], resamples=200)
    assert (perfect.estimate, perfect.low, perfect.high) == pytest.approx((1.0, 1.0, 1.0))
    flat, p_flat = spearman_interval([1, 2, 3], [5, 5, 5])
    assert math.isnan(flat.estimate) and math.isnan(p_flat)
