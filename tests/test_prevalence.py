"""Prevalence estimators: reference values, invariances, and coverage by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from memgen import prevalence
from memgen.prevalence import (
    Calibration,
    CalibrationError,
    Certain,
    Tally,
    calibration_of,
    clopper_pearson,
    copy_weighted_fraction,
    corrected_copy_weighted,
    corrected_unique,
    fieller,
    hypergeometric,
    ratio_variance,
    rogan_gladen,
    take_all,
    tally,
    unique_fraction,
    wilson,
)

COVERAGE_MIN = 0.93
POPULATIONS = 500


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (81, 263), (3, 1000)])
def test_intervals_match_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    exact = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((exact.low, exact.high), abs=1e-9)


def test_wilson_ends_are_exact_where_the_formula_rounds():
    # the score formula gives 5.6e-17 and 0.9999999999999999 at these counts
    for n in range(1, 200):
        assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0
        for k in range(n + 1):
            low, high = wilson(k, n)
            assert low <= k / n <= high


@pytest.mark.parametrize("population,n", [(6, 5), (26, 3), (100, 50), (1000, 500), (1000, 900), (400, 37)])
def test_the_sample_interval_covers_95_percent_for_every_population_count(population, n):
    """Exact coverage, summed over the hypergeometric law of the sample's positives, for every
    K; Wilson with the finite-population correction covered 83-91% at small K here."""
    intervals = [hypergeometric(k, n, population) for k in range(n + 1)]
    for big_k in range(population + 1):
        pmf = stats.hypergeom.pmf(np.arange(n + 1), population, big_k, n)
        truth = big_k / population
        coverage = sum(p for p, (low, high) in zip(pmf, intervals, strict=True) if low <= truth <= high)
        assert coverage >= 0.95 - 1e-9, (big_k, coverage)
    for k, (low, high) in enumerate(intervals):
        assert low <= k / n <= high


@pytest.mark.parametrize("k,n", [(0, 50), (1, 50), (17, 50), (50, 50), (3, 1000)])
def test_the_sample_interval_of_a_vast_population_is_clopper_pearson(k, n):
    # drawing without replacement from 10^9 images is drawing with replacement (to ~n/N)
    exact = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert hypergeometric(k, n, 10**9) == pytest.approx((exact.low, exact.high), abs=1e-6)
    u = unique_fraction(Tally(n, k), 10**9)
    assert (u.ci_low, u.ci_high) == hypergeometric(k, n, 10**9) and u.method.startswith("exact")
    vast = unique_fraction(Tally(n, k), 10**12)
    assert (vast.ci_low, vast.ci_high) == pytest.approx((exact.low, exact.high), abs=1e-9)


def test_tally_merges_like_one_pass():
    rng = np.random.default_rng(0)
    y, c = rng.random(100) < 0.3, rng.integers(1, 9, 100)
    whole = tally(y, c)
    parts = [tally(y[i:i + 17], c[i:i + 17]) for i in range(0, 100, 17)]
    merged = Tally()
    for part in reversed(parts):
        merged = merged.merge(part)
    assert merged == whole
    one_by_one = Tally()
    for yi, ci in zip(y, c, strict=True):
        one_by_one = one_by_one.add(bool(yi), int(ci))
    assert one_by_one == whole


def test_census_has_no_sampling_error():
    y = np.array([1, 0, 0, 1, 1], bool)
    c = np.array([3, 1, 1, 1, 4])
    t = tally(y, c)
    u, w = unique_fraction(t, 5), copy_weighted_fraction(t, 5)
    assert (u.estimate, u.ci_low, u.ci_high, u.method) == (0.6, 0.6, 0.6, "census")
    assert (w.estimate, w.ci_low, w.ci_high) == (0.8, 0.8, 0.8)


def test_sample_without_positives_still_has_an_upper_bound():
    t = tally(np.zeros(50, bool), np.arange(1, 51))
    u, w = unique_fraction(t, 10_000), copy_weighted_fraction(t, 10_000)
    assert u.estimate == w.estimate == 0
    assert 0 < u.ci_high < 0.1 and 0 < w.ci_high < 0.2


def test_ratio_variance_matches_the_linearisation_on_arrays():
    rng = np.random.default_rng(1)
    y, c = rng.random(60) < 0.4, rng.integers(1, 20, 60)
    t = tally(y, c)
    r = (c * y).sum() / c.sum()
    e = c * (y - r)
    expected = (1 - 60 / 600) * (e**2).sum() / (59 * 60 * c.mean() ** 2)
    assert ratio_variance(t, 600) == pytest.approx(expected, rel=1e-12)


def test_fieller_endpoints_solve_the_defining_inequality_by_grid_search():
    rng = np.random.default_rng(2)
    y, c = rng.random(80) < 0.35, rng.integers(1, 30, 80)
    t, n, population = tally(y, c), 80, 2000
    grid = np.linspace(0, 1, 200_001)
    a, b = (c * y).sum(), c.sum()
    s2 = ((c * c * y).sum() * (1 - 2 * grid) + grid**2 * (c * c).sum() - (a - grid * b) ** 2 / n) / (n - 1)
    inside = ((a - grid * b) / n) ** 2 <= 1.959963984540054**2 * (1 - n / population) * s2 / n
    low, high = fieller(t, population)
    assert low == pytest.approx(grid[inside].min(), abs=1e-5)
    assert high == pytest.approx(grid[inside].max(), abs=1e-5)


def _copies(rng: np.random.Generator, kind: int, n: int) -> np.ndarray:
    """Duplicate counts as crawls have them: mostly 1, some images copied many times."""
    if kind == 0:
        return rng.geometric(0.5, n)
    if kind == 1:
        return np.ceil(rng.lognormal(0, 1.0, n)).astype(np.int64)
    return rng.zipf(3.0, n).clip(max=1000)


def test_coverage_of_both_intervals_over_simulated_populations_and_samples():
    rng = np.random.default_rng(20261125)
    covered_unique = covered_weighted = 0
    for i in range(POPULATIONS):
        size = int(rng.integers(300, 5000))
        p = rng.uniform(0.01, 0.95)
        y = rng.random(size) < p
        # cats copied more in a third of the populations: the two estimands then differ
        c = _copies(rng, i % 3, size) + (y * rng.integers(0, 3, size) if i % 3 == 2 else 0)
        n = int(rng.integers(30, min(600, size)))
        idx = rng.choice(size, n, replace=False)
        t = tally(y[idx], c[idx])
        u, w = unique_fraction(t, size), copy_weighted_fraction(t, size)
        covered_unique += u.ci_low <= y.mean() <= u.ci_high
        covered_weighted += w.ci_low <= (c * y).sum() / c.sum() <= w.ci_high
    assert covered_unique / POPULATIONS >= COVERAGE_MIN
    assert covered_weighted / POPULATIONS >= COVERAGE_MIN


@pytest.mark.parametrize("p, n", [(0.02, 400), (0.1, 50), (0.9, 50)])
def test_copy_weighted_interval_covers_when_one_class_is_rare(p, n):
    """Log-normal copies, a uniform sample of n of 5,000: cells where the interval, before each
    class's copy dispersion was floored at the pooled one, covered 0.93-0.94 (the rare class's
    few images missed its long tail); now 0.97-0.98, and about 15% wider. It stays narrow: on
    average under twice the width of the unique fraction's exact interval."""
    rng = np.random.default_rng(int(p * 1000) + n)
    reps, covered, width_ratio = 500, 0, 0.0
    for _ in range(reps):
        y = rng.random(5000) < p
        c = _copies(rng, 1, 5000)
        idx = rng.choice(5000, n, replace=False)
        t = tally(y[idx], c[idx])
        w, u = copy_weighted_fraction(t, 5000), unique_fraction(t, 5000)
        covered += w.ci_low <= (c * y).sum() / c.sum() <= w.ci_high
        width_ratio += (w.ci_high - w.ci_low) / (u.ci_high - u.ci_low) / reps
    assert covered / reps >= 0.95
    assert width_ratio < 2


@pytest.mark.parametrize("size, n, p, copied", [(2000, 30, 0.05, "positives"), (2000, 200, 0.01, "positives"),
                                                (50, 5, 0.3, "positives"), (2000, 30, 0.95, "negatives")])
def test_copy_weighted_interval_covers_when_the_sample_misses_the_class_copied_more(size, n, p, copied):
    """Cats copied 5 times, the rest once (or the reverse): a sample without a cat took them
    copied once, and the interval covered 0.78-0.86 (0.20 of the samples without one); the
    population's totals bound the records of the class the sample missed."""
    rng = np.random.default_rng(size + n)
    reps, covered = 1000, 0
    for _ in range(reps):
        y = rng.random(size) < p
        c = np.where(y == (copied == "positives"), 5, 1)
        idx = rng.choice(size, n, replace=False)
        w = copy_weighted_fraction(tally(y[idx], c[idx]), size, int(c.sum()))
        covered += w.ci_low <= (c * y).sum() / c.sum() <= w.ci_high
    assert covered / reps >= 0.95


def test_the_records_of_the_sample_bound_the_copy_weighted_interval():
    """One cat of 5 copies in a sample: the population holds at least those 5 of its 240
    records, so the interval cannot reach 0 (it did: 14.7% [0.0%, 47.8%])."""
    t = tally(np.arange(30) == 0, np.where(np.arange(30) == 0, 5, 1))
    w = copy_weighted_fraction(t, 200, 240)
    assert w.ci_low >= 5 / 240 and w.ci_high <= 1 - 29 / 240
    assert copy_weighted_fraction(t, 200).ci_low == 0  # without the totals: nothing to bound it


def test_without_duplicates_the_copy_weighted_fraction_is_the_unique_one_with_its_exact_interval():
    """Every image one record: the two fractions are one number, but the ratio interval was
    narrower than the exact one (1 of 5 of 20: high 0.613 for 0.65; coverage 0.926 at N = 50,
    n = 10, counted over every number of cats K below)."""
    t = tally(np.arange(5) == 0, np.ones(5, dtype=int))
    assert copy_weighted_fraction(t, 20, 20)[:4] == unique_fraction(t, 20)[:4]
    cal = Calibration(40, 10, 45, 5)  # and corrected alike (separate draws gave [39.4%, 61.9%] and
    t = tally(np.arange(100) < 50, np.ones(100, dtype=int))  # [39.5%, 61.8%] for one number)
    assert corrected_copy_weighted(t, 376, cal, 1, 376)[:4] == corrected_unique(t, 376, cal, 1)[:4]
    population, n = 50, 10
    for cats in range(population + 1):  # every sample's chance, exactly (hypergeometric)
        covered = sum(stats.hypergeom.pmf(k, population, cats, n)
                      for k in range(n + 1)
                      if (w := copy_weighted_fraction(tally(np.arange(n) < k, np.ones(n, dtype=int)),
                                                      population, population)).ci_low
                      <= cats / population <= w.ci_high)
        assert covered >= 0.95 - 1e-9, (cats, covered)


@pytest.mark.parametrize("population, n", [(20, 10), (100, 20)])
def test_with_as_many_copies_each_the_copy_weighted_fraction_is_the_unique_one(population, n):
    """Every image two records: the fractions are one number, but the ratio interval covered
    0.928-0.944 (N = 100, n = 20, K = 60: 0.928), counted exactly over every number of cats."""
    t = tally(np.arange(20) < 6, np.full(20, 2))
    assert copy_weighted_fraction(t, 100, 200, copies_each=2)[:4] == unique_fraction(t, 100)[:4]
    cal = Calibration(40, 10, 45, 5)
    assert (corrected_copy_weighted(t, 100, cal, 1, 200, copies_each=2)[:4]
            == corrected_unique(t, 100, cal, 1)[:4])
    for cats in range(population + 1):
        covered = sum(stats.hypergeom.pmf(k, population, cats, n)
                      for k in range(n + 1)
                      if (w := copy_weighted_fraction(tally(np.arange(n) < k, np.full(n, 2)),
                                                      population, 2 * population, copies_each=2)).ci_low
                      <= cats / population <= w.ci_high)
        assert covered >= 0.95 - 1e-9, (cats, covered)


def test_a_small_sample_of_uneven_copies_is_covered():
    """10 of 20 images of 1 or 2 records each: the ratio's variance is estimated from 10
    images, and with the normal quantile its interval covered 0.937 (Student's t: 0.97)."""
    rng = np.random.default_rng(3)
    y, c = np.arange(20) < 9, rng.integers(1, 3, 20)
    truth = (c * y).sum() / c.sum()
    reps, covered = 4000, 0
    for _ in range(reps):
        idx = rng.choice(20, 10, replace=False)
        w = copy_weighted_fraction(tally(y[idx], c[idx]), 20, int(c.sum()))
        covered += w.ci_low <= truth <= w.ci_high
    assert covered / reps >= 0.95


def test_the_sure_bound_of_the_records_is_not_rounded_below_itself():
    """5 negatives of 2 records each, of 12 records: the cats are at most 2 of 12, and
    1 - 10/12 rounded to 0.16666666666666663, below the true 2/12 it must hold."""
    t = tally(np.zeros(5, bool), np.full(5, 2))
    assert copy_weighted_fraction(t, 6, 12).ci_high >= 2 / 12


def _stratified(rng: np.random.Generator, y: np.ndarray, c: np.ndarray, n: int) -> tuple[Tally, Certain]:
    """A sample of n as evaluate draws it: the most copied taken whole, the rest uniformly."""
    order = np.lexsort((np.arange(len(c)), -c))
    k = take_all(c[order[: n // 2]].tolist(), n, int(c.sum()))
    whole = order[:k]
    drawn = rng.choice(order[k:], n - k, replace=False)
    return tally(y[drawn], c[drawn]), Certain(tally(y[whole], c[whole]), k, int(c[whole].sum()))


@pytest.mark.parametrize("size, n", [(5000, 400), (20000, 2000)])
def test_copies_with_a_zipf_tail_are_covered_with_the_most_copied_taken_whole(size, n):
    """Copies with a Zipf tail of exponent 2: a few images hold much of the records, a uniform
    sample seldom holds them, and no interval from it covers (0.83-0.87 here, whatever n);
    taken whole, the rest drawn uniformly, both intervals cover (and the copy-weighted one is
    6-30x narrower)."""
    rng = np.random.default_rng(size + n)
    reps, plain, covered_weighted, covered_unique = 300, 0, 0, 0
    for _ in range(reps):
        y, c = rng.random(size) < 0.3, rng.zipf(2.0, size).clip(max=100_000)
        truth = (c * y).sum() / c.sum()
        idx = rng.choice(size, n, replace=False)
        w = copy_weighted_fraction(tally(y[idx], c[idx]), size, int(c.sum()))
        plain += w.ci_low <= truth <= w.ci_high
        drawn, certain = _stratified(rng, y, c, n)
        w = copy_weighted_fraction(drawn, size, int(c.sum()), certain)
        u = unique_fraction(drawn, size, certain)
        covered_weighted += w.ci_low <= truth <= w.ci_high
        covered_unique += u.ci_low <= y.mean() <= u.ci_high
    assert plain / reps < 0.9
    assert covered_weighted / reps >= COVERAGE_MIN and covered_unique / reps >= COVERAGE_MIN


def test_take_all_takes_what_one_drawn_image_could_not_stand_for():
    assert take_all([300, 100, 5, 5], 8, 517) == 2  # 300*8 >= 517; 100*7 >= 217; 5*6 < 117
    assert take_all([5, 5, 5], 8, 120) == 0  # no image holds an eighth of the records
    assert take_all([200, 200, 200, 10], 4, 610) == 2  # the third would be taken too: half the sample at most


def test_copies_that_depend_on_the_label_widen_nothing(monkeypatch):
    """Cats copied ten times as often as the rest is no spread of copies within either class:
    the dispersion floor, pooled about each class's own mean, leaves the interval as it was
    (pooled about one mean it made them 1.8x wider on average, at a coverage of 0.985)."""
    rng = np.random.default_rng(12)
    tallies = []
    for _ in range(50):
        y = rng.random(5000) < 0.3
        c = _copies(rng, 1, 5000) * np.where(y, 10, 1)
        idx = rng.choice(5000, 100, replace=False)
        tallies.append(tally(y[idx], c[idx]))
    floored = [copy_weighted_fraction(t, 5000) for t in tallies]
    monkeypatch.setattr(prevalence, "pooled_dispersion", lambda t: t)
    unfloored = [copy_weighted_fraction(t, 5000) for t in tallies]
    ratios = [(f.ci_high - f.ci_low) / (u.ci_high - u.ci_low)
              for f, u in zip(floored, unfloored, strict=True)]
    assert min(ratios) >= 1 and np.mean(ratios) < 1.1


def test_rogan_gladen_inverts_the_apparent_prevalence():
    for pi, se, sp in [(0.3, 0.9, 0.95), (0.05, 0.7, 0.99), (0.8, 0.6, 0.8)]:
        apparent = pi * se + (1 - pi) * (1 - sp)
        assert rogan_gladen(apparent, se, sp) == pytest.approx(pi, abs=1e-12)
    assert rogan_gladen(0.0, 0.9, 0.9) == 0.0  # below the false-positive rate: clipped


def test_correction_refuses_a_useless_or_one_sided_calibration():
    t = tally(np.array([1, 0, 0], bool), np.ones(3, int))
    with pytest.raises(CalibrationError, match="no better than chance"):
        corrected_unique(t, 100, Calibration(5, 5, 5, 5), seed=0)
    with pytest.raises(CalibrationError, match="both positive and negative"):
        corrected_unique(t, 100, Calibration(5, 1, 0, 0), seed=0)


def test_a_classifier_hardly_better_than_chance_corrects_to_anything():
    """Se 6/10, Sp 41/100: Se + Sp - 1 = 0.01, but half its draws are at most 0, where the
    prevalence could be anything; dropped, the rest clipped to one end: 100% [100%, 100%]."""
    cal = Calibration(6, 4, 41, 59)
    for cats in (20, 3):
        e = corrected_unique(tally(np.arange(20) < cats, np.ones(20, int)), 20, cal, seed=0)
        assert (e.ci_low, e.ci_high) == (0.0, 1.0)


def test_correction_is_deterministic_and_wider_than_the_apparent_interval():
    t = tally(np.r_[np.ones(30, bool), np.zeros(70, bool)], np.ones(100, int))
    cal = Calibration(85, 15, 95, 5)
    a = corrected_unique(t, 1000, cal, seed=3)
    assert a == corrected_unique(t, 1000, cal, seed=3)
    apparent = unique_fraction(t, 1000)
    assert a.ci_high - a.ci_low > apparent.ci_high - apparent.ci_low
    assert a.estimate == pytest.approx((0.3 + 0.95 - 1) / (0.85 + 0.95 - 1))
    census = corrected_unique(t, 100, cal, seed=3)
    assert census.ci_low < census.estimate < census.ci_high  # a census too: which images are misread


@pytest.mark.parametrize("copies", [[50, 1, 1, 1, 1, 1, 1, 1, 1, 1], [3, 1, 2, 1, 1, 4, 1, 1, 2, 1]])
def test_a_correction_never_narrows_the_apparent_interval(copies):
    """With a perfect classifier (Se = Sp = 1) the correction is the identity, and the
    corrected interval holds the apparent one (its Beta draws of p once dropped Fieller's
    part of the copy-weighted interval: [0.51, 0.99] where the apparent was [0, 1])."""
    perfect = Calibration(200, 0, 200, 0)
    t = tally(np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0]), np.array(copies))
    pairs = ((copy_weighted_fraction(t, 1000), corrected_copy_weighted(t, 1000, perfect, 0)),
             (unique_fraction(t, 1000), corrected_unique(t, 1000, perfect, 0)))
    for apparent, corrected in pairs:
        assert corrected.estimate == pytest.approx(apparent.estimate)
        # (p + Sp - 1) / (Se + Sp - 1) rounds in the last digits
        assert corrected.ci_low <= apparent.ci_low + 1e-12 and corrected.ci_high >= apparent.ci_high - 1e-12


@pytest.mark.parametrize("design", ["census", "sample", "sample, the most copied taken whole"])
def test_coverage_of_the_corrected_interval(design):
    rng = np.random.default_rng({"census": 8, "sample": 7}.get(design, 9))
    reps, covered = 200, 0
    for rep in range(reps):
        size, pi = int(rng.integers(200, 3000)), rng.uniform(0.02, 0.8)
        se, sp = rng.uniform(0.7, 0.98), rng.uniform(0.9, 1.0)
        y = rng.random(size) < pi
        predicted = np.where(y, rng.random(size) < se, rng.random(size) > sp)
        c = rng.zipf(2.0, size).clip(max=100_000) if "whole" in design else _copies(rng, rep % 3, size)
        n = size if design == "census" else int(rng.integers(50, size))
        truth = np.r_[np.ones(150, bool), np.zeros(150, bool)]
        cal = calibration_of(truth, np.where(truth, rng.random(300) < se, rng.random(300) > sp))
        if "whole" in design:
            t, certain = _stratified(rng, predicted, c, n)
        else:
            idx = rng.choice(size, n, replace=False)
            t, certain = tally(predicted[idx], c[idx]), None
        target = y.mean() if rep % 2 else (c * y).sum() / c.sum()
        e = (corrected_unique(t, size, cal, rep, certain) if rep % 2
             else corrected_copy_weighted(t, size, cal, rep, int(c.sum()), certain))
        covered += e.ci_low <= target <= e.ci_high
    assert covered / reps >= COVERAGE_MIN
