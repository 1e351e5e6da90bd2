"""MomentsFn: a CombineFn from d-dimensional vectors to memgen.metrics.Moments (n, mean, M2).

The sums are exact, so the moments do not depend on how a runner splits, orders or merges
the elements: floating-point sums do, in their last digits, and so did the Fréchet
distance of a run with another worker count. Each value is rounded to a fixed point grid
of 2^-FRACTION_BITS (every feature space is bounded by BOUND: bits and shares in [0, 1],
EfficientNet-Lite0's pooled ReLU6 outputs in [0, 6]), so a vector is integers below 2^22.
Vectors are buffered and folded with one float64 matrix product per EXACT_ROWS, exact
because every partial sum of its products stays below 2^53; the folds add up in int64,
the sum of outer products as two 32-bit limbs (exact for up to 2^39 vectors a key). The
mean and M2 are rounded from the exact sums (`_Accumulator.moments`).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from memgen.metrics import Moments

FRACTION_BITS = 19  # the grid, 1.9e-6: 4x float32's own spacing at the embedding's top (4.8e-7)
BOUND = 8.0  # |value| < BOUND: integers below 2^22, products below 2^44
BLOCK = 512  # vectors buffered before they are folded into the sums (one exact product)
EXACT_ROWS = 512  # rows of one exact matrix product: 2^9 products below 2^44 sum below 2^53
MAX_VECTORS = 1 << 39  # a set's int64 sums are exact up to this many vectors
_SCALE = float(1 << FRACTION_BITS)
_LIMB = 32
_LOW = (1 << _LIMB) - 1
_PIVOT_SHIFT = 11  # the pivot's grid, in units of 2^-FRACTION_BITS: 22 - 11 significant bits


class _Accumulator:
    """Exact sums of fixed point vectors: count, sum, and the sum of outer products as
    `high` * 2^32 + `low` (low in [0, 2^32)), all integers; and vectors not yet folded in."""

    __slots__ = ("n", "total", "high", "low", "pending")

    def __init__(self) -> None:
        self.n = 0
        self.total: np.ndarray | None = None
        self.high: np.ndarray | None = None
        self.low: np.ndarray | None = None
        self.pending: list[np.ndarray] = []

    def fold(self) -> _Accumulator:
        """Folds the pending vectors into the sums, EXACT_ROWS at a time (a merge may bring many)."""
        pending, self.pending = self.pending, []
        if len({v.shape for v in pending}) > 1:
            raise ValueError(f"vectors of different lengths: {sorted({len(v) for v in pending})}")
        for start in range(0, len(pending), EXACT_ROWS):
            x = np.stack(pending[start:start + EXACT_ROWS]).astype(np.float64)
            self._check_length(x.shape[1])
            if not (np.isfinite(x).all() and (np.abs(x) < BOUND).all()):
                raise ValueError(f"feature values must be finite and below {BOUND:g} in magnitude "
                                 f"(max |value| {np.nanmax(np.abs(x)):g})")
            q = np.rint(x * _SCALE)
            self._add(len(q), q.sum(axis=0).astype(np.int64), (q.T @ q).astype(np.int64), np.int64(0))
        return self

    def merge(self, other: _Accumulator) -> None:
        self.pending += other.pending
        if other.n:
            self._check_length(len(other.total))
            self._add(other.n, other.total, other.low, other.high)

    def folded_is_smaller(self) -> bool:
        """Whether folding the pending vectors in shrinks what a runner shuffles: always once there
        are sums, and a d x d triangle of 12-byte sums only for more than ~1.5 d vectors."""
        d = len(self.pending[0]) if self.pending else 0
        return bool(self.pending) and (self.n > 0 or sum(v.nbytes for v in self.pending) > 6 * d * d)

    def _check_length(self, d: int) -> None:
        if self.n and len(self.total) != d:
            raise ValueError(f"vectors of different lengths: {len(self.total)} and {d}")

    def _add(self, n: int, total: np.ndarray, low: np.ndarray, high: np.ndarray | np.int64) -> None:
        if self.n == 0:
            self.total, self.high = np.zeros_like(total), np.zeros(low.shape, np.int64)
            self.low = np.zeros(low.shape, np.uint32)
        if self.n + n > MAX_VECTORS:  # int64 sums would wrap silently
            raise ValueError(f"more than {MAX_VECTORS} vectors in one set (2^39)")
        self.n += n
        self.total = self.total + total
        low = self.low.astype(np.int64) + low
        self.high = self.high + high + (low >> _LIMB)  # >> floors, so a negative carry is right too
        self.low = (low & _LOW).astype(np.uint32)

    def __getstate__(self) -> tuple:
        """The sums' upper triangles only (they are symmetric): what a runner shuffles is halved."""
        upper = np.triu_indices(len(self.total)) if self.n else None
        return (self.n, self.total, *((m[upper] for m in (self.high, self.low)) if self.n else (None, None)),
                self.pending)

    def __setstate__(self, state: tuple) -> None:
        self.n, self.total, high, low, self.pending = state
        self.high = self.low = None
        if self.n:
            upper = np.triu_indices(len(self.total))
            self.high, self.low = (_symmetric(m, upper, len(self.total)) for m in (high, low))

    def moments(self) -> Moments:
        """Moments from the exact sums, in int64 and float64 (no Python integers: ~50 ms at d = 1280).

        M2 = T - a a^T / n, where T is the sum of outer products of q - c about a pivot c near
        the mean and a = sum - n c: T is computed exactly (c has few significant bits, so every
        product fits in int64) and rounded once, and a a^T / n is small beside it, so M2 keeps its
        digits when the mean is large against the spread: within an ulp or two of the exact value,
        ~1e-11 relative at worst when the spread is far below the pivot's grid (2^-8); a flat
        set's M2 is exactly 0.
        """
        n, total = self.n, self.total
        unit = n << _PIVOT_SHIFT
        c = (total + (unit >> 1)) // unit  # the pivot, in units of 2^_PIVOT_SHIFT: |c| <= 2^11
        a = total - n * (c << _PIVOT_SHIFT)  # |a| <= n 2^10
        ncc = n * np.outer(c, c)  # n c c^T / 2^(2 shift), below n 2^22
        ca = np.outer(c, a)
        ca = ca + ca.T  # (c a^T + a c^T) / 2^shift, below n 2^22
        # T = S - n c c^T - (c a^T + a c^T), each term cut into the limbs of S
        high = self.high - (ncc >> (_LIMB - 2 * _PIVOT_SHIFT)) - (ca >> (_LIMB - _PIVOT_SHIFT))
        low = (self.low.astype(np.int64) - ((ncc & _low_bits(2 * _PIVOT_SHIFT)) << 2 * _PIVOT_SHIFT)
               - ((ca & _low_bits(_PIVOT_SHIFT)) << _PIVOT_SHIFT))
        high, low = high + (low >> _LIMB), low & _LOW
        t = high.astype(np.float64) * float(1 << _LIMB) + low  # both exact, so T is rounded once
        af = a.astype(np.float64)
        m2 = t - np.outer(af, af / n)  # a_j / n is exact for a flat set: its M2 is exactly 0
        m2 = np.triu(m2) + np.triu(m2, 1).T  # a_i (a_j / n) and a_j (a_i / n) may round apart
        mean = total.astype(np.float64) / n / _SCALE
        return Moments(n, mean, m2 / (_SCALE * _SCALE))


def _symmetric(upper_values: np.ndarray, upper: tuple[np.ndarray, np.ndarray], d: int) -> np.ndarray:
    matrix = np.zeros((d, d), upper_values.dtype)
    matrix[upper] = upper_values
    matrix.T[upper] = upper_values
    return matrix


def _low_bits(shift: int) -> int:
    """Mask of the bits a value loses when shifted right by _LIMB - shift (to be shifted left by shift)."""
    return (1 << (_LIMB - shift)) - 1


class MomentsFn(beam.CombineFn):
    """Vectors (1-d arrays of one length, values below BOUND) -> Moments; no input -> None."""

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, acc: _Accumulator, vector: np.ndarray) -> _Accumulator:
        vector = np.asarray(vector)
        if vector.ndim != 1:
            raise ValueError(f"expected a 1-d vector, got shape {vector.shape}")
        acc.pending.append(vector if vector.dtype.kind == "f" else vector.astype(np.float64))
        return acc.fold() if len(acc.pending) >= BLOCK else acc

    def merge_accumulators(self, accumulators) -> _Accumulator:
        merged = _Accumulator()
        for acc in accumulators:  # folded as they come: a key's accumulators may be thousands
            merged.merge(acc)
            if len(merged.pending) >= BLOCK:
                merged.fold()
        return merged

    def compact(self, acc: _Accumulator) -> _Accumulator:
        # A bundle's few vectors stay as they are: their sums would be a d x d matrix
        return acc.fold() if acc.folded_is_smaller() else acc

    def extract_output(self, acc: _Accumulator) -> Moments | None:
        acc.fold()
        return acc.moments() if acc.n else None
