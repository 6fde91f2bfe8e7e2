"""The study's statistics against scipy and hand computations on known inputs."""

import math

import numpy as np
import pytest
from scipy import stats

from autogan_fast.study.statistics import (
    compare,
    compare_to_value,
    mean_interval,
    n_for_power,
    noise_ceiling,
    signed_superiority,
    spearman_brown,
    spearman_interval,
    superiority,
    verdict,
)


def test_mean_interval_is_the_bootstrap_percentile_interval():
    values = [5.9, 7.1, 4.2, 6.6, 5.0]
    got = mean_interval(values)
    expected = stats.bootstrap((np.array(values),), np.mean, n_resamples=5000, method="percentile",
                               rng=np.random.default_rng(0)).confidence_interval
    assert got.n == 5 and got.estimate == pytest.approx(float(np.mean(values)))
    assert (got.low, got.high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert mean_interval(values) == got  # seeded: reproducible


@pytest.mark.parametrize("values", [
    pytest.param([0.8, 1.1, 45.0, 60.0], id="two-low-two-high-FIDs: a t-interval reaches below 0"),
    pytest.param([1.0, 1.0, 1.0, 9.5], id="one-outlier: a t-interval reaches below the smallest value"),
    pytest.param([6.1, 6.4, 6.8, 9.9, 1.0, 5.5], id="n=6, a collapse among them"),
])
def test_mean_interval_stays_inside_the_values(values):
    """A percentile interval of the mean never leaves [min, max]: never a negative FID or an IS below 1."""
    got = mean_interval(values)
    assert min(values) <= got.low <= got.estimate <= got.high <= max(values)


@pytest.mark.parametrize("values, low_is_nan", [
    pytest.param([3.0], True, id="one-value-no-interval"),
    pytest.param([3.0, 9.0], True, id="two-values-the-points-alone"),
    pytest.param([3.0, 9.0, 5.0], True, id="three-values-the-points-alone"),
    pytest.param([2.0, 2.0, 2.0, 2.0], False, id="constant-zero-width"),
])
def test_mean_interval_degenerate_cases(values, low_is_nan):
    got = mean_interval(values)
    assert got.estimate == pytest.approx(float(np.mean(values))) and got.n == len(values)
    assert math.isnan(got.low) and math.isnan(got.high) if low_is_nan else got.low == got.high == values[0]


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


def test_superiority_is_u_over_the_pairs():
    a, b = [3.0, 4.0, 1.0, 2.5], [1.0, 3.0, 0.5]
    u = stats.mannwhitneyu(a, b, alternative="greater").statistic  # scipy's U of a: ties count 1/2
    assert superiority(a, b) == pytest.approx(u / (len(a) * len(b)))


def test_signed_superiority_counts_the_walsh_averages():
    d = [1.0, -0.5, 2.0, -3.0]
    walsh = [(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]  # by hand, 10 pairs
    assert signed_superiority([v + 5.0 for v in d], 5.0) == pytest.approx(sum(w > 0 for w in walsh) / len(walsh))


def simulated_power(test, shift: float, n: int, reps: int = 400) -> float:
    """The power of the exact one-sided test at n per group on normal data shifted by `shift` sds."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(reps):
        a = rng.normal(shift, 1.0, n)
        p = (stats.wilcoxon(a, alternative="greater").pvalue if test == "Wilcoxon"
             else stats.mannwhitneyu(a, rng.normal(0.0, 1.0, n), alternative="greater").pvalue)
        hits += p < 0.05
    return hits / reps


@pytest.mark.parametrize("test, shift", [
    pytest.param("Mann-Whitney U, one-sided", 1.0, id="mann-whitney-one-sd: P(a > b) = Phi(1 / sqrt 2)"),
    pytest.param("Wilcoxon", 0.6, id="signed-rank-0.6-sd: P(d_i + d_j > 0) = Phi(0.6 sqrt 2)"),
])
def test_n_for_power_reaches_about_80_percent(test, shift):
    """Noether's n, checked by simulation: the exact test at that n detects the shift about 80% of the time
    (the approximation is known to be a little generous or short at small n: 0.70-0.92 over 400 draws, whose
    own standard error is 0.02)."""
    effect = stats.norm.cdf(shift / math.sqrt(2)) if test != "Wilcoxon" else stats.norm.cdf(shift * math.sqrt(2))
    n = n_for_power(test, effect)
    assert 0.70 <= simulated_power(test, shift, n) <= 0.92
    assert simulated_power(test, shift, max(n // 2, 1)) < 0.70  # half of it falls clearly short


@pytest.mark.parametrize("test, effect, fraction, expected", [
    pytest.param("Mann-Whitney U, one-sided", 0.5, 0.5, None, id="no-effect-no-n"),
    pytest.param("Mann-Whitney U, one-sided", 0.2, 0.5, None, id="reversed-effect-no-n"),
    # p = 1, equal groups: Noether gives n = 4.12 -> 5 (above the exact floor of 4: 1 / C(8, 4) < 0.05)
    pytest.param("Mann-Whitney U, one-sided", 1.0, 0.5, 5, id="complete-separation"),
    # p = 1, signed rank: Noether gives 6.18 / 0.75 = 8.24 -> 9 (above the exact floor: 0.5^5 < 0.05)
    pytest.param("Wilcoxon signed-rank, one-sided", 1.0, 1.0, 9, id="complete-signed-rank"),
    # 6 searched against 30 archs, p = 1: Noether's n_a = 6.18 / (12 * 5/6 * 0.25) = 2.47 -> 3; the exact floor
    # (1 / C(3 + 15, 3) < 0.05 at 3, 1 / C(2 + 10, 2) < 0.05 at 2) does not bind
    pytest.param("Mann-Whitney U, one-sided", 1.0, 1 / 6, 3, id="unequal-groups-keep-their-ratio"),
])
def test_n_for_power_by_hand(test, effect, fraction, expected):
    assert n_for_power(test, effect, fraction) == expected


def test_noise_ceiling_is_the_square_root_of_the_spearman_brown_reliability():
    assert spearman_brown(0.5, 2) == pytest.approx(2 * 0.5 / 1.5)
    assert noise_ceiling(0.5, 2) == pytest.approx(math.sqrt(2 / 3))
    assert noise_ceiling(1.0) == pytest.approx(1.0)  # a noiseless score: any correlation up to 1
    assert math.isnan(noise_ceiling(-0.2)) and math.isnan(noise_ceiling(math.nan))


# --- the summary's new numbers, recomputed here from their definitions (scipy) --------------------------------


def test_the_summary_retest_correlation_and_ceiling():
    """Each random architecture's first two train seeds, Spearman across the architectures (an architecture
    with one score left out), Spearman-Brown for the 2-seed mean, the square root as the ceiling."""
    from autogan_fast.study.summary import retest_correlation

    first, second = [6.1, 5.0, 6.8, 4.2, 5.5, 6.0], [6.4, 4.6, 6.1, 4.9, 5.2, 6.6]
    archs = [{"trainings": [{"train_seed": 2, "inception_score": b, "fid": 50 - 3 * b},
                            {"train_seed": 1, "inception_score": a, "fid": 50 - 3 * a}]}  # out of order on purpose
             for a, b in zip(first, second, strict=True)]
    archs.append({"trainings": [{"train_seed": 1, "inception_score": 9.9, "fid": 1.0},
                                {"train_seed": 2, "inception_score": None, "fid": None}]})  # seed 2 diverged
    found = retest_correlation(archs, 2)
    rho = stats.spearmanr(first, second).statistic
    assert found["IS"]["rho"] == pytest.approx(rho) and found["IS"]["n"] == 6
    assert found["IS"]["mean_reliability"] == pytest.approx(2 * rho / (1 + rho))
    assert found["IS"]["ceiling"] == pytest.approx(math.sqrt(2 * rho / (1 + rho)))
    assert found["FID"]["rho"] == pytest.approx(rho)  # FID a decreasing function of IS here: the same ranks


def test_the_summary_comparison_row_carries_the_power_n():
    """The row's effect is P(a better than b) (FID: lower is better, so the sign flips), and its n the one
    Noether's formula gives for it at the observed group ratio."""
    from autogan_fast.study.summary import comparison_row

    a, b = [20.0, 14.0, 30.0], [25.0, 40.0, 33.0, 28.0]
    row = comparison_row("mlas", a, "random", b, "FID")
    wins = sum((x < y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))  # lower FID wins
    assert row["effect"] == pytest.approx(wins)
    z = stats.norm.ppf(0.95) + stats.norm.ppf(0.8)
    c = len(a) / (len(a) + len(b))
    assert row["n_for_power"] == math.ceil(c * z * z / (12 * c * (1 - c) * (wins - 0.5) ** 2))
    assert comparison_row("random", b, "mlas", a, "FID")["n_for_power"] is None  # the reverse effect: no n


@pytest.mark.parametrize("shares, said", [
    ([0.83, 0.34], None),  # every proxy under its ceiling: nothing to add
    ([1.48, 0.78], "slas IS 1.48"),  # the committed demo study's slas row: over the ceiling's point estimate
    ([None, 1.2], "slas −FID 1.20"),  # no ceiling for IS (one train seed), one for FID
])
def test_a_proxy_over_its_noise_ceiling_is_said_under_the_table(shares, said):
    from autogan_fast.study.summary import ceiling_exceeded_line

    rows = [{"arm": "slas", "metric": metric, "share_of_ceiling": share}
            for metric, share in zip(("IS", "FID"), shares, strict=True)]
    line = ceiling_exceeded_line(rows)
    assert (line is None) if said is None else (said in line and "not a bound" in line)
