"""MomentsFn: a CombineFn from d-dimensional vectors to memgen.metrics.Moments (n, mean, M2).

Vectors are buffered and folded in blocks with one matrix product, because a rank-one
update per element would cost a d x d outer product each (1280^2 for the embedding).
Accumulators merge exactly (Chan et al.), so the result does not depend on how a
runner splits or orders the elements beyond floating-point rounding.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from memgen.metrics import Moments

BLOCK = 256  # vectors buffered before they are folded into the moments


class _Accumulator:
    __slots__ = ("moments", "pending")

    def __init__(self) -> None:
        self.moments: Moments | None = None
        self.pending: list[np.ndarray] = []

    def fold(self) -> _Accumulator:
        if self.pending:
            block = Moments.of(np.stack(self.pending))
            self.moments = block if self.moments is None else self.moments.merge(block)
            self.pending = []
        return self


class MomentsFn(beam.CombineFn):
    """Vectors (1-d arrays of one length) -> Moments; no input -> None."""

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, acc: _Accumulator, vector: np.ndarray) -> _Accumulator:
        acc.pending.append(np.asarray(vector, dtype=np.float64))
        return acc.fold() if len(acc.pending) >= BLOCK else acc

    def merge_accumulators(self, accumulators) -> _Accumulator:
        merged = _Accumulator()
        for acc in accumulators:
            acc.fold()
            if acc.moments is not None:
                merged.moments = acc.moments if merged.moments is None else merged.moments.merge(acc.moments)
        return merged

    def compact(self, acc: _Accumulator) -> _Accumulator:
        return acc.fold()

    def extract_output(self, acc: _Accumulator) -> Moments | None:
        return acc.fold().moments
