"""Distances between two image sets, each given as feature vectors (pure numpy/scipy, no Beam).

A metric is features -> statistics -> metric (as in torch-fidelity):
- `Moments`: n, mean and centred sum of outer products; Beam sums them exactly per
  (set, feature space) with a CombineFn (memgen.stages.moments).
- `frechet_distance`: from two (mean, covariance) pairs; the trace of the square root of
  the product is the sum of the square roots of its eigenvalues, as torch-fidelity takes it.
- `kid`: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 over
  seeded random subsets; mean and (population) std over subsets, as torch-fidelity.
- `precision_recall` (Kynkäänniemi et al. 2019, k = 3) and `density_coverage` (Naeem et
  al. 2020, k = 5) on k-NN balls; `c2st`: a 1-nearest-neighbour classifier two-sample test.
The k-NN metrics, KID and C2ST need the vectors themselves: they run on a capped subset
of each set chosen by a keyed hash of the image id (memgen.stages.distances).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

PR_K = 3
DC_K = 5
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
# KID takes every subset's kernel sums from the whole sets' kernel matrices while the two
# sets have at most this many rows together (the three matrices: <= 300 MB), else it
# computes each subset's own.
KID_DENSE_ROWS = 6144
# Relative slack (of |x|^2 + |y|^2) under which two squared distances from the expansion may
# be equal: its rounding is below ~1e-13 of that for the widest features (1280 dimensions).
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Moments:
    """n, mean and M2 = sum of (x - mean)(x - mean)^T of a set of d-dimensional vectors
    (memgen.stages.moments sums them exactly in a Beam CombineFn; `of` computes them in memory)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, vectors: np.ndarray) -> Moments:
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"expected a non-empty (n, d) array, got shape {x.shape}")
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (np.cov's default, as torch-fidelity and clean-fid use)."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 vectors, got {self.n}")
        return self.m2 / (self.n - 1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    The eigenvalues of sigma1 sigma2 are those of the symmetric R sigma2 R, R = sigma1^(1/2),
    so two symmetric eigendecompositions give the trace (3-5x faster than clean-fid's sqrtm
    of the product at d = 1280, 1.3x torch-fidelity's general eigenvalues, and singular
    covariances need no retry); rounding below zero is clipped, where torch-fidelity's
    complex square root takes the real part (0 too), and so is the distance.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shapes differ: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    values, vectors = np.linalg.eigh(sigma1)  # numpy's divide and conquer: ~1.4x scipy's default at d = 1280
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    product = root @ sigma2 @ root
    product_values = np.linalg.eigvalsh((product + product.T) / 2)  # symmetric up to rounding
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                     - 2 * np.sqrt(np.clip(product_values, 0, None)).sum())
    return max(distance, 0.0)  # a set against itself rounds to -1e-6 or so; a distance is not negative


def fd_from_moments(a: Moments, b: Moments) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size sets with the cubic polynomial kernel (KID's estimator)."""
    m = len(x)
    if len(y) != m or m < 2:
        raise ValueError(f"need two sets of the same size >= 2, got {len(x)} and {len(y)}")
    everything = np.ones((m, 1))
    return float(_subset_mmd2(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                              everything, everything)[0])


def _subset_mmd2(x: np.ndarray, y: np.ndarray, pick_x: np.ndarray, pick_y: np.ndarray) -> np.ndarray:
    """mmd2_unbiased of every pair of subsets: column j of pick_x (pick_y) marks with ones
    the rows of x (y) in subset j, all subsets of one size. A subset's kernel sums are
    indicator products with the whole sets' kernel matrices: three matrices for all the
    subsets instead of three for each."""
    m = pick_x[:, 0].sum()

    def within(kernel: np.ndarray, pick: np.ndarray) -> np.ndarray:  # off-diagonal sums
        return np.einsum("ij,ij->j", pick, kernel @ pick) - np.diagonal(kernel) @ pick

    within_sets = (within(_poly_kernel(x, x), pick_x) + within(_poly_kernel(y, y), pick_y)) / (m * (m - 1))
    return within_sets - 2 * np.einsum("ij,ij->j", pick_x, _poly_kernel(x, y) @ pick_y) / (m * m)


def _legacy_rng(seed: int) -> np.random.RandomState:
    """torch-fidelity's RandomState(seed) for seeds below 2**32 (its numbers exactly); a larger
    --seed, which RandomState refuses, seeds it with its 32-bit words."""
    if seed < 2**32:
        return np.random.RandomState(seed)
    words = []
    while seed:
        words.append(seed & 0xFFFFFFFF)
        seed >>= 32
    return np.random.RandomState(words)


def kid(x: np.ndarray, y: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of mmd2_unbiased over `subsets` random subsets of min(subset_size, n_x, n_y).

    Subsets are drawn as torch-fidelity draws them (a RandomState seeded by `seed`), so
    the same rows in the same order give its numbers exactly. Callers give rows in
    keyed-hash order, so the result does not depend on the order images arrived in.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs subsets of at least 2 vectors, got sets of {len(x)} and {len(y)}")
    rng = _legacy_rng(seed)
    draws = [(rng.choice(len(x), size, replace=False), rng.choice(len(y), size, replace=False))
             for _ in range(subsets)]
    if len(x) + len(y) <= KID_DENSE_ROWS:
        values = _subset_mmd2(x, y, _indicators(len(x), [dx for dx, _ in draws]),
                              _indicators(len(y), [dy for _, dy in draws]))
    else:  # memory bounded by the subset size
        values = np.array([mmd2_unbiased(x[dx], y[dy]) for dx, dy in draws])
    return float(values.mean()), float(values.std())


def _indicators(n: int, subsets: list[np.ndarray]) -> np.ndarray:
    pick = np.zeros((n, len(subsets)))
    for j, rows in enumerate(subsets):
        pick[rows, j] = 1.0
    return pick


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, float64. Exact for 0/1 vectors (pHash bits): the dots are integers."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * (a @ b.T)
    return np.sqrt(np.maximum(squared, 0.0))


def direct_distances(a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Distances of the pairs (a[rows[i]], b[cols[i]]) from their differences: the same numbers
    for the same rows, wherever they are. The expansion above rounds x.y by where a BLAS kernel
    met the pair (x @ x.T and x @ y.T take different paths), so a copy of a point can land
    inside a ball its original bounds."""
    diff = np.asarray(a, dtype=np.float64)[rows] - np.asarray(b, dtype=np.float64)[cols]
    return np.sqrt((diff * diff).sum(axis=1))


def _ties(d: np.ndarray, bounds: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs where d (a x b, by the expansion) may equal `bounds` (a x b or a x 1) but for
    rounding: the expansion's error in d^2 is below ~1e-13 (|x|^2 + |y|^2)."""
    norms_a, norms_b = ((np.asarray(v, dtype=np.float64) ** 2).sum(axis=1) for v in (a, b))
    slack = TIE_TOLERANCE * (norms_a[:, None] + norms_b[None, :])
    return np.nonzero(np.abs(d * d - bounds * bounds) <= slack)


def _ball_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself is the 0th),
    from differences (`direct_distances`), so that ball boundaries compare exactly."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} vectors, got {len(x)}")
    kth = np.argpartition(pairwise_distances(x, x), k, axis=1)[:, k]
    return direct_distances(x, x, np.arange(len(x)), kth)


def _in_balls(centres: np.ndarray, points: np.ndarray, k: int, closed: bool,
              d: np.ndarray | None = None) -> np.ndarray:
    """inside[i, j]: points[j] lies in the k-NN ball of centres[i] (among centres); `d`: the
    centres x points distances if already computed. Pairs on a boundary up to rounding are
    measured again from differences."""
    radii = _ball_radii(centres, k)[:, None]
    d = pairwise_distances(centres, points) if d is None else d.copy()
    rows, cols = _ties(d, radii, centres, points)
    d[rows, cols] = direct_distances(centres, points, rows, cols)
    return d <= radii if closed else d < radii


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K) -> tuple[float, float]:
    """Precision: share of fake inside some real k-NN ball; recall: real inside some fake ball.

    Balls are closed (<=), as in Kynkäänniemi et al.'s code and torch-fidelity.
    """
    d = pairwise_distances(real, fake)
    precision = _in_balls(real, fake, k, closed=True, d=d).any(axis=0).mean()
    recall = _in_balls(fake, real, k, closed=True, d=d.T).any(axis=0).mean()
    return float(precision), float(recall)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DC_K) -> tuple[float, float]:
    """Density: mean number of real k-NN balls holding a fake, over k; coverage: share of real
    balls holding some fake. Balls are open (<), as in Naeem et al.'s code (prdc)."""
    inside = _in_balls(real, fake, k, closed=False)
    return float(inside.sum(axis=0).mean() / k), float(inside.any(axis=1).mean())


@dataclass(frozen=True)
class C2st:
    accuracy: float
    p_value: float
    n_test: int


def c2st(x: np.ndarray, y: np.ndarray, seed: int = 0) -> C2st:
    """Classifier two-sample test: a 1-NN classifier trained on half of each set, tested on the rest.

    The sets are cut to the same size, so a fair coin scores 0.5; the p-value is the
    one-sided binomial probability of at least this many correct under that coin.
    An accuracy well below 0.5 is also telling: test images whose copies sit in the
    other set's training half (memorisation) are classified as the other set.
    Equally near neighbours of both sets are decided by a seeded coin, which keeps the
    binomial null exact.
    """
    m = min(len(x), len(y))
    if m < 4:
        raise ValueError(f"C2ST needs at least 4 vectors in each set, got {len(x)} and {len(y)}")
    rng = np.random.Generator(np.random.PCG64(seed))
    half = m // 2
    order_x, order_y = rng.permutation(len(x))[:m], rng.permutation(len(y))[:m]
    train_x, test_x = x[order_x[:half]], x[order_x[half:]]
    train_y, test_y = y[order_y[:half]], y[order_y[half:]]
    test = np.concatenate([test_x, test_y])
    truth = np.concatenate([np.zeros(len(test_x), bool), np.ones(len(test_y), bool)])
    to_x = pairwise_distances(test, train_x).min(axis=1)
    to_y = pairwise_distances(test, train_y).min(axis=1)
    coin = rng.random(len(test)) < 0.5
    predicted = np.where(to_x == to_y, coin, to_y < to_x)
    correct = int((predicted == truth).sum())
    p_value = stats.binomtest(correct, len(test), 0.5, alternative="greater").pvalue
    return C2st(correct / len(test), float(p_value), len(test))


METRIC_KEYS = ("fd", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
               "c2st_accuracy", "c2st_p_value")


def compare(a_moments: Moments, b_moments: Moments, a_subset: np.ndarray, b_subset: np.ndarray,
            seed: int = 0, kid_subsets: int = KID_SUBSETS) -> dict[str, Any]:
    """Every metric of set b against set a ("real" = a, "fake" = b); None where a set is too small.

    FD uses the moments of the whole sets; the rest use the capped subsets.
    """
    row: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    row.update(n_a=a_moments.n, n_b=b_moments.n, n_subset_a=len(a_subset), n_subset_b=len(b_subset),
               n_kid_subset=None)
    if min(a_moments.n, b_moments.n) >= 2:
        row["fd"] = fd_from_moments(a_moments, b_moments)
    n_sub = min(len(a_subset), len(b_subset))
    if n_sub >= 2:
        row["kid_mean"], row["kid_std"] = kid(a_subset, b_subset, subsets=kid_subsets, seed=seed)
        row["n_kid_subset"] = min(KID_SUBSET_SIZE, n_sub)
        if row["n_kid_subset"] == len(a_subset) == len(b_subset):  # each subset is both sets whole:
            row["kid_std"] = None  # its spread, 0, would read as a certainty it does not measure
    if n_sub > PR_K:
        row["precision"], row["recall"] = precision_recall(a_subset, b_subset)
    if n_sub > DC_K:
        row["density"], row["coverage"] = density_coverage(a_subset, b_subset)
    if n_sub >= 4:
        result = c2st(a_subset, b_subset, seed=seed)
        row["c2st_accuracy"], row["c2st_p_value"] = result.accuracy, result.p_value
    return row


def compare_sets(statistics: Mapping[str, tuple[Moments, np.ndarray]], pairs: Sequence[tuple[str, str]],
                 seed: int = 0, kid_subsets: int = KID_SUBSETS) -> list[dict[str, Any]]:
    """One `compare` row per pair (a, b) of set names whose statistics are both present.

    `statistics` maps a set name to its moments and capped subset in one feature space.
    """
    rows = []
    for a, b in pairs:
        if a in statistics and b in statistics:
            (a_moments, a_subset), (b_moments, b_subset) = statistics[a], statistics[b]
            rows.append({"a": a, "b": b, **compare(a_moments, b_moments, a_subset, b_subset,
                                                   seed=seed, kid_subsets=kid_subsets)})
    return rows


def distances_section(rows: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]], spaces: Sequence[str],
                      subset_cap: int, seed: int, kid_subsets: int = KID_SUBSETS,
                      failures: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """report.json's `distances`: the settings, the rows ordered by pair, then feature space, and
    per set the images left out because they could not be read or decoded (or gave unusable
    features: memgen.stages.distances), by error type."""
    pair_order = {pair: i for i, pair in enumerate(pairs)}
    space_order = {space: i for i, space in enumerate(spaces)}
    ordered = sorted(rows, key=lambda r: (pair_order[(r["a"], r["b"])],
                                          space_order.get(r["space"], len(spaces)), r["space"]))
    return {"subset_cap": subset_cap, "seed": seed, "kid_subsets": kid_subsets,
            "kid_subset_size": KID_SUBSET_SIZE, "precision_recall_k": PR_K, "density_coverage_k": DC_K,
            "rows": ordered,
            "failures": {name: dict(sorted(counts.items()))
                         for name, counts in sorted((failures or {}).items())}}
