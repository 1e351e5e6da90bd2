"""Prevalence estimators: classifier labels -> a concept fraction with a 95% interval.

Pure functions over small sufficient statistics (no Beam), so the same numbers come
out whether the tallies were summed on one machine or merged from many workers.

Two estimands, over the images a classifier could label:
- unique: the fraction of unique images (memory rows) that show the concept;
- copy-weighted: the fraction of input records (each image counted `copies` times),
  i.e. the crawl as it was. This is a ratio sum(c*y) / sum(c).

Two designs:
- census: every image was classified; there is no sampling error, so the interval
  is the point (unless a calibration correction adds classifier uncertainty);
- sample: a uniform sample of n of the N unique images without replacement.
  unique: the exact hypergeometric interval (the finite-population Clopper-Pearson: the
  counts K of positives in the population whose tail probabilities reach 2.5%), which
  covers at least 95% for every N, n and K (above 1e10 images Clopper-Pearson's, which
  it then equals); Wilson with the finite-population correction, used before, covered
  83-91% when the positives were few (N=6, n=5; N=1000, n=500, K=4).
  copy-weighted: the ratio estimator with its
  linearisation (delta-method) variance, turned into a Wilson interval at the
  Kish effective sample size p(1-p)/var (Korn & Graubard 1998), hulled with Fieller's
  interval; when the sample holds no positive or no negative, the variance estimate is
  zero and the effective size falls back to Kish's unequal-weight design effect
  n * (sum c)^2 / (n sum c^2). Copies are skewed (most images 1, a few many), so the few
  images of the rarer class seldom hold their class's long tail and understate its
  variance: each class's relative dispersion of copies is taken as at least the two
  classes' pooled one, each about its own mean (see `pooled_dispersion`). Without that
  floor the interval covered 91-94% with 2% positives (n=400 of 5,000, log-normal copies)
  and with 10% positives in n=50; with it 97-98%, and no wider where one class is copied
  more than the other but not more unevenly. The population's totals bound it (see
  `within_totals`): a sample without one class says nothing of its copies. Copies with
  a Zipf tail of exponent <= 2 defeat any interval from a uniform sample (coverage
  0.83-0.88 at n = 400-2,000): a few images hold much of the records and a uniform sample
  seldom holds them. So a sample takes those whole (`take_all`, a take-all stratum:
  `Certain`) and draws the rest: each fraction is then the stratum's, known, plus the
  draw's estimate over the rest, weighted by their sizes; coverage 0.94-0.99 at exponent 2.
  Heavier tails still (1.5) with rare positives leave the rest too skewed: 0.85-0.90.
Both were checked for coverage by simulation (tests/test_prevalence.py).

Classifier error (Rogan & Gladen 1978): with sensitivity Se and specificity Sp from a
labelled calibration set, pi = (p + Sp - 1) / (Se + Sp - 1). Its interval carries the
uncertainty of p, Se and Sp by Monte Carlo over their Jeffreys (Beta(k+1/2, n-k+1/2))
distributions, from a seeded generator. p is taken as binomial over the labelled images
(effective size for the copy-weighted ratio) without the finite-population correction,
census included: which images the classifier gets wrong is itself a chance outcome,
and ignoring it made census intervals cover only ~80% of the time on the real photos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# scipy.stats is imported in the three functions that use it: it is ~0.6 s of start-up that
# `memgen evaluate --help` and its usage errors paid (memgen.classify.concept imports this module)

Z95 = 1.959963984540054
# Above it drawing without replacement is drawing with replacement (the hypergeometric
# interval is Clopper-Pearson's to ~1e-8), and scipy's hypergeometric tails get slow (9 s
# an interval at 1e12) and lose digits.
VAST_POPULATION = 10**10
MONTE_CARLO_DRAWS = 20_000


class Estimate(NamedTuple):
    estimate: float
    ci_low: float
    ci_high: float
    n: int  # unique images the estimate rests on
    method: str

    def row(self) -> dict:
        return self._asdict()


class Tally(NamedTuple):
    """Sufficient statistics of labelled images: counts and copy sums (mergeable)."""

    n: int = 0  # images labelled
    positives: int = 0  # of them, labelled as the concept
    copies: int = 0  # sum of copies
    positive_copies: int = 0  # sum of copies of positives
    copies_sq: int = 0  # sum of copies^2
    positive_copies_sq: int = 0  # sum of copies^2 of positives

    def add(self, positive: bool, copies: int) -> Tally:
        y = int(positive)
        return Tally(self.n + 1, self.positives + y, self.copies + copies,
                     self.positive_copies + y * copies, self.copies_sq + copies * copies,
                     self.positive_copies_sq + y * copies * copies)

    def merge(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(self, other, strict=True)))


def tally(labels: np.ndarray, copies: np.ndarray) -> Tally:
    """The Tally of arrays of labels (bool) and copies (int), for tests and small sets."""
    y = np.asarray(labels, dtype=np.int64)
    c = np.asarray(copies, dtype=np.int64)
    return Tally(len(y), int(y.sum()), int(c.sum()), int((y * c).sum()), int((c * c).sum()),
                 int((y * c * c).sum()))


class Certain(NamedTuple):
    """A sample's take-all stratum: the most copied images, scored whatever the draw
    (`take_all`), beside a uniform sample of the other images."""

    tally: Tally = Tally()  # its images the classifier labelled
    images: int = 0  # its images, those it could not label included
    copies: int = 0  # the input records they stand for


def take_all(copies: Sequence[int], n: int, population_copies: int) -> int:
    """How many of the most copied images (`copies`, largest first) a sample of n takes with
    certainty: the next one while it alone stands for at least as many records as an image
    drawn from the rest does on average (c (n - k) >= the rest's records, k taken), and at
    most n // 2, so the draw keeps half the sample.

    A uniform sample seldom holds the few images that hold much of a crawl's records (copies
    with a Zipf tail of exponent 2), and no interval from it covers then (0.83-0.88 at
    n = 400-2,000); with them taken whole, 0.95, and 7-17x narrower (uncorrected). Memories
    with few duplicates take none."""
    rest, taken = population_copies, 0
    for c in copies[: n // 2]:
        if c * (n - taken) < rest:
            break
        rest, taken = rest - c, taken + 1
    return taken


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (n may be an effective size).

    Its ends are exactly 0 at k = 0 and 1 at k = n, and it always holds k / n: the formula
    rounds there (5.6e-17, 0.9999999999999999), which excluded the estimate from its interval.
    """
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k <= 0 else max(0.0, min(p, centre - half))
    high = 1.0 if k >= n else min(1.0, max(p, centre + half))
    return low, high


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (conservative) binomial interval."""
    from scipy import stats

    if n <= 0:
        return 0.0, 1.0
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def hypergeometric(k: int, n: int, population: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact interval for the fraction K / N of positives in a population of N, from k
    positives in a uniform sample of n without replacement: the K whose probability of
    k or more (k or fewer) positives is at least alpha / 2, found by bisection (the tails
    are monotone in K)."""
    from scipy import stats

    big_n = population

    def smallest(ok, lo: int, hi: int) -> int:  # the least K in [lo, hi] with ok(K), ok(hi) true
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
        return lo

    feasible_low, feasible_high = k, big_n - (n - k)  # K that can give k positives in n
    low = 0 if k == 0 else smallest(
        lambda K: stats.hypergeom.sf(k - 1, big_n, K, n) >= alpha / 2, feasible_low, feasible_high)
    # the largest K with P(X <= k) >= alpha/2 is one below the least K where it falls short
    high = big_n if k == n else smallest(
        lambda K: stats.hypergeom.cdf(k, big_n, K, n) < alpha / 2, feasible_low, feasible_high + 1) - 1
    p = k / n
    return min(p, low / big_n), max(p, high / big_n)


def _fpc_factor(n: int, population: int | None) -> float:
    """Multiplier of n giving the effective sample size under sampling without replacement."""
    if population is None or population <= 1:
        return 1.0
    return (population - 1) / (population - n)


def is_census(t: Tally, population: int | None) -> bool:
    return population is not None and t.n >= population


def unique_fraction(t: Tally, population: int | None, certain: Certain | None = None) -> Estimate:
    """Fraction of unique images labelled positive; `population`: unique images sampled from;
    `certain`: the sample's take-all stratum, `t` then the drawn images'."""
    if certain and certain.images:
        rest = population - certain.images
        return _with_certain(unique_fraction(t, rest), certain.tally.positives, certain.tally.n, rest,
                             certain)
    if t.n == 0:
        return Estimate(math.nan, 0.0, 1.0, 0, "no image labelled")
    p = t.positives / t.n
    if is_census(t, population):
        return Estimate(p, p, p, t.n, "census")
    if population is None or population > VAST_POPULATION:
        return Estimate(p, *clopper_pearson(t.positives, t.n), t.n, "clopper-pearson")
    low, high = hypergeometric(t.positives, t.n, population)
    return Estimate(p, low, high, t.n, "exact hypergeometric (finite population)")


def ratio_variance(t: Tally, population: int | None) -> float:
    """Delta-method variance of the ratio estimator sum(c y)/sum(c) under simple random sampling."""
    n = t.n
    if n < 2:
        return math.inf
    r = t.positive_copies / t.copies
    # sum over the sample of (c_i (y_i - r))^2, expanded into the tallied sums
    residual_ss = t.positive_copies_sq * (1 - 2 * r) + r * r * t.copies_sq
    mean_c = t.copies / n
    fpc = 1.0 if population is None else max(0.0, 1 - n / population)
    return fpc * residual_ss / ((n - 1) * n * mean_c * mean_c)


def pooled_dispersion(t: Tally) -> Tally:
    """`t` with each class's sum of squared copies raised, where it is lower, to what the two
    classes' pooled relative dispersion (sum c^2 over sum of (sum c)^2 / n, each class about
    its own mean) gives for that class's copies and images.

    The variance of the ratio rests on those sums; the rarer class's few images seldom hold
    its long tail of copies, and its sum of squares is then too small (intervals that miss
    high when positives are rare, low when negatives are). The pooled dispersion rests on
    all n images; where the spread of copies does not depend on the label it is the class's
    own. Each class about its own mean: that one class is copied more than the other (the
    concept's images more often, say) is no spread within either, and widens nothing.
    Apply once: the result is a Tally of raised sums.
    """
    positives, negatives = t.positives, t.n - t.positives
    if not positives or not negatives:
        return t
    negative_copies = t.copies - t.positive_copies
    negative_sq = t.copies_sq - t.positive_copies_sq
    dispersion = t.copies_sq / (t.positive_copies ** 2 / positives + negative_copies ** 2 / negatives)
    positive_sq = max(t.positive_copies_sq, dispersion * t.positive_copies ** 2 / positives)
    negative_sq = max(negative_sq, dispersion * negative_copies ** 2 / negatives)
    return t._replace(positive_copies_sq=positive_sq, copies_sq=positive_sq + negative_sq)


def copy_weighted_fraction(t: Tally, population: int | None, population_copies: int | None = None,
                           certain: Certain | None = None, copies_each: int | None = None) -> Estimate:
    """Fraction of input records (images weighted by copies) labelled positive;
    `population_copies`: the input records the `population` images stand for (see
    `within_totals`); `certain`: the sample's take-all stratum, `t` then the drawn images';
    `copies_each`: the records each image stands for, when that is one number for all."""
    from scipy import stats

    if certain and certain.images:
        rest, rest_copies = population - certain.images, population_copies - certain.copies
        return _with_certain(copy_weighted_fraction(t, rest, rest_copies), certain.tally.positive_copies,
                             certain.tally.copies, rest_copies, certain)
    if t.n == 0 or t.copies == 0:
        return Estimate(math.nan, 0.0, 1.0, t.n, "no image labelled")
    if equal_copies(population, population_copies, copies_each):  # the same fraction, and its
        unique = unique_fraction(t, population)  # exact interval (the ratio's covered 0.93)
        return unique._replace(method=f"{unique.method}; every image stands for as many records")
    r = t.positive_copies / t.copies
    if is_census(t, population):
        return Estimate(r, r, r, t.n, "census")
    pooled = pooled_dispersion(t)
    n_eff = effective_size(pooled, population)
    z = float(stats.t.ppf(0.975, t.n - 1)) if t.n > 1 else Z95  # the variance is estimated from n images
    low, high = wilson(r * n_eff, n_eff, z)
    f_low, f_high = fieller(pooled, population, z)
    low, high = min(low, f_low), max(high, f_high)
    method = ("ratio estimator; hull of Wilson at Kish n_eff (delta method) and Fieller; "
              "class dispersion of copies at least the pooled")
    if population and population_copies:
        low, high = within_totals(t, population, population_copies, low, high)
        method += "; bounded by the population's totals"
    return Estimate(r, low, high, t.n, method)


def equal_copies(population: int | None, population_copies: int | None, copies_each: int | None) -> bool:
    """Every image of the population stands for as many records (one each, or `copies_each`):
    the copy-weighted fraction is then the unique fraction."""
    return bool(population) and (copies_each is not None or population_copies == population)


def within_totals(t: Tally, population: int, population_copies: int, low: float, high: float
                  ) -> tuple[float, float]:
    """The copy-weighted interval [low, high] of a sample `t` made to agree with what the
    population's totals tell.

    A sample without a positive (or without a negative) says nothing of how often that
    class's images are copied, and the ratio interval then took them copied like the other
    class: with cats copied 5 times and none in a sample of 30 of 2,000 images it covered 20%
    of the time. Every image stands for at least one record, so the exact interval of the
    unique fraction bounds the records of the absent class: r <= 1 - (1 - u_high) N / C
    (r >= u_low N / C without negatives), N images and C records. That takes the images a
    classifier failed on to be copied like the others. And whatever the design, the records
    of the sample's positives (negatives) are the population's too: r >= their copies / C
    (r <= 1 - those of the negatives / C), sure bounds.
    """
    images_per_record = population / population_copies
    if t.positives == 0:
        high = max(high, 1 - (1 - unique_fraction(t, population).ci_high) * images_per_record)
    elif t.positives == t.n:
        low = min(low, unique_fraction(t, population).ci_low * images_per_record)
    low = max(low, t.positive_copies / population_copies)
    # C - negatives' records over C: 1 - (their share) rounded below the sure bound itself
    high = min(high, (population_copies - (t.copies - t.positive_copies)) / population_copies)
    return max(0.0, low), min(1.0, high)


def _with_certain(drawn: Estimate, known: int, known_of: int, rest: int, certain: Certain) -> Estimate:
    """The fraction over the take-all stratum and the rest: (known + rest f) / (known_of + rest),
    f the drawn images' fraction (of the rest, whose size is `rest`); increasing in f, so
    its interval maps end to end."""
    def whole(f: float) -> float:
        return (known + rest * f) / (known_of + rest)

    if not rest:  # every image taken whole: a census
        f = known / known_of if known_of else math.nan
        return Estimate(f, f, f, certain.tally.n, "census")
    of_draw = " in the uniform draw" if drawn.n == 0 else ""  # the estimate is then unknown, NaN
    return Estimate(whole(drawn.estimate), whole(drawn.ci_low), whole(drawn.ci_high),
                    drawn.n + certain.tally.n,
                    f"the {certain.images} most copied images taken whole; of the others: "
                    f"{drawn.method}{of_draw}")


def fieller(t: Tally, population: int | None, z: float = Z95) -> tuple[float, float]:
    """Fieller's interval for sum(c y)/sum(c): the r where mean(c (y - r)) is within z of 0.

    With d_i = c_i (y_i - r): mean(d)^2 <= z^2 (1 - f) s_d^2 / n, a quadratic in r
    whose coefficients are the tallied sums.
    """
    n = t.n
    if n < 2:
        return 0.0, 1.0
    fpc = 1.0 if population is None else max(0.0, 1 - n / population)
    a_sum, b_sum = t.positive_copies, t.copies
    g = z * z * fpc / (n * (n - 1))
    h = 1 / (n * n) + g / n
    a = h * b_sum * b_sum - g * t.copies_sq
    b = -2 * h * a_sum * b_sum + 2 * g * t.positive_copies_sq
    c = h * a_sum * a_sum - g * t.positive_copies_sq
    disc = b * b - 4 * a * c
    if a <= 0 or disc < 0:  # the set is unbounded or empty: no information beyond [0, 1]
        return 0.0, 1.0
    root = math.sqrt(disc)
    return max(0.0, (-b - root) / (2 * a)), min(1.0, (-b + root) / (2 * a))


def effective_size(t: Tally, population: int | None) -> float:
    """Effective sample size of the copy-weighted ratio: p(1-p)/var, or Kish's when var is 0."""
    r = t.positive_copies / t.copies
    var = ratio_variance(t, population)
    if 0 < r < 1 and var > 0:
        return r * (1 - r) / var
    kish = t.copies * t.copies / t.copies_sq
    return kish * _fpc_factor(t.n, population)


class Calibration(NamedTuple):
    """Confusion counts of the classifier on a labelled calibration set."""

    true_positives: int
    false_negatives: int
    true_negatives: int
    false_positives: int

    @property
    def positives(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def negatives(self) -> int:
        return self.true_negatives + self.false_positives

    def sensitivity(self) -> Estimate:
        return _proportion(self.true_positives, self.positives)

    def specificity(self) -> Estimate:
        return _proportion(self.true_negatives, self.negatives)


def calibration_of(truth: np.ndarray, predicted: np.ndarray) -> Calibration:
    y = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    return Calibration(int((y & p).sum()), int((y & ~p).sum()), int((~y & ~p).sum()), int((~y & p).sum()))


def _proportion(k: int, n: int) -> Estimate:
    if n == 0:
        return Estimate(math.nan, 0.0, 1.0, 0, "no image labelled")
    low, high = wilson(k, n)
    return Estimate(k / n, low, high, n, "wilson")


class CalibrationError(ValueError):
    """A calibration set that cannot correct anything (a class missing, or a useless classifier)."""


def rogan_gladen(p: float, se: float, sp: float) -> float:
    """The prevalence that would produce apparent prevalence p, clipped to [0, 1]."""
    return float(np.clip((p + sp - 1) / (se + sp - 1), 0.0, 1.0))


def corrected(apparent: Estimate, k_eff: float, n_eff: float, cal: Calibration, seed: int) -> Estimate:
    """Rogan-Gladen correction of an apparent fraction with an interval carrying Se, Sp uncertainty.

    k_eff / n_eff describe the apparent fraction's distribution (effective positives and size).
    """
    if cal.positives == 0 or cal.negatives == 0:
        raise CalibrationError("the calibration set needs both positive and negative images, got "
                               f"{cal.positives} positive and {cal.negatives} negative")
    se, sp = cal.sensitivity().estimate, cal.specificity().estimate
    if se + sp - 1 <= 0:
        raise CalibrationError(f"sensitivity {se:.3f} + specificity {sp:.3f} <= 1: the classifier is "
                               "no better than chance on the calibration set")
    rng = np.random.default_rng(seed)
    se_draws = rng.beta(cal.true_positives + 0.5, cal.false_negatives + 0.5, MONTE_CARLO_DRAWS)
    sp_draws = rng.beta(cal.true_negatives + 0.5, cal.false_positives + 0.5, MONTE_CARLO_DRAWS)
    p_draws = rng.beta(k_eff + 0.5, n_eff - k_eff + 0.5, MONTE_CARLO_DRAWS)
    youden = se_draws + sp_draws - 1
    usable = youden > 0
    pi = np.empty(MONTE_CARLO_DRAWS)
    pi[usable] = np.clip((p_draws[usable] + sp_draws[usable] - 1) / youden[usable], 0.0, 1.0)
    # A draw where the classifier is no better than chance leaves the prevalence anywhere in
    # [0, 1]: put at both ends, half each, so the interval holds 95% of all draws among those
    # that tell (dropped, a classifier barely better than chance got a point interval, its
    # other draws clipped to one end); from 5% of such draws on, it is [0, 1].
    pi[~usable] = np.arange((~usable).sum()) % 2
    low, high = np.quantile(pi, [0.025, 0.975])
    point = rogan_gladen(apparent.estimate, se, sp)
    # the correction adds the classifier's uncertainty to the sampling one and never takes
    # any away: the apparent interval, corrected at the point Se and Sp, lies inside. (The
    # Beta draws of p rest on n_eff alone; the apparent copy-weighted interval also hulls
    # Fieller's, and without it the corrected one covered 83-89% with skewed copies.)
    low = min(low, rogan_gladen(apparent.ci_low, se, sp))
    high = max(high, rogan_gladen(apparent.ci_high, se, sp))
    return Estimate(point, float(min(low, point)), float(max(high, point)), apparent.n,
                    f"Rogan-Gladen corrected ({apparent.method}); Monte Carlo over Jeffreys Se, Sp, p")


def corrected_unique(t: Tally, population: int | None, cal: Calibration, seed: int,
                     certain: Certain | None = None) -> Estimate:
    apparent = unique_fraction(t, population, certain)
    # binomial over the n images, without the finite-population correction: even a census
    # carries the chance of which of its images the classifier gets wrong
    k_eff, n_eff = float(t.positives), float(t.n)
    if certain and certain.images:
        n_eff = _with_certain_size(n_eff, certain.tally.n, population - certain.images,
                                   t.n + certain.tally.n)
        k_eff = apparent.estimate * n_eff
    return corrected(apparent, k_eff, n_eff, cal, seed)


def corrected_copy_weighted(t: Tally, population: int | None, cal: Calibration, seed: int,
                            population_copies: int | None = None, certain: Certain | None = None,
                            copies_each: int | None = None) -> Estimate:
    if equal_copies(population, population_copies, copies_each):  # the same fraction
        unique = corrected_unique(t, population, cal, seed, certain)
        return unique._replace(method=f"{unique.method}; every image stands for as many records")
    apparent = copy_weighted_fraction(t, population, population_copies, certain)
    n_eff = effective_size(pooled_dispersion(t), None)  # as above: no finite-population correction
    if certain and certain.images:
        whole = t.merge(certain.tally)
        n_eff = _with_certain_size(n_eff, certain.tally.copies, population_copies - certain.copies,
                                   effective_size(pooled_dispersion(whole), None))
    return corrected(apparent, apparent.estimate * n_eff, n_eff, cal, seed)


def _with_certain_size(drawn_size: float, known_of: int, rest: int, labelled_size: float) -> float:
    """The effective size of a fraction over a take-all stratum and a draw from the rest: the
    draw's, grown as its share s = rest / (known_of + rest) of the whole shrinks its variance
    (by s^2), but no more than that of every labelled image (the classifier's chance of
    misreading the stratum's images remains)."""
    share = rest / (known_of + rest) if known_of + rest else 0.0
    return min(labelled_size, drawn_size / share**2) if share else labelled_size
