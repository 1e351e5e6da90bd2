"""Copying and contamination: how close each image of a set is to its nearest memory image.

In: 64-bit pHashes (int64, as memgen.fingerprint stores them) of a query set and of the
memory. Out: the Hamming distance from each query to its nearest memory hash, exact up
to a search radius (farther ones are reported as radius + 1), then a histogram of those
distances and a rate:
- copy rate: share of a sample whose nearest memory image is within the threshold k
  (a sample drawn from the memory is all copies: MemGEN scores 100%);
- contamination rate: share of a reference (held-out test) set with a near duplicate in
  the memory, i.e. train/test leakage.
Queries are compared with every memory hash (vectorized popcount), unless multi-index
hashing (Norouzi et al. 2012) is cheaper: a hash within r of a query agrees with it on
one of 4 16-bit bands within floor(r/4) bits, so probing each band's bucket table
(memgen.near.Buckets) with those flips finds every memory hash within r. The choice
uses a cost measured on the earlier sorted-array index (a probed candidate ~100
popcounts: the index for r <= 11 and more than ~330k distinct hashes); the bucket
tables are faster than that (5k queries x 200k hashes, r = 10: 0.35 s vs 1.1 s
all-pairs), so the choice is conservative. Pure numpy, no Beam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memgen.fingerprint import FingerprintConfig, decode, phash
from memgen.near import MAX_THRESHOLD, Buckets, SearchPlan, band_values, flip_masks, popcount

BANDS, BAND_BITS = 4, 16
DEFAULT_RADIUS = 16  # the histogram's range
# Cost of one multi-index candidate in all-pairs popcounts: 5k queries against 200k hashes
# took 2.6 s (r = 10) and 59 s (r = 16) by the index, 2.8-3.1 s all-pairs (2 busy cores).
INDEX_CANDIDATE_COST = 100
_CHUNK_PAIRS = 1 << 22


def query_phash(data: bytes, config: FingerprintConfig) -> int:
    """The pHash of image bytes exactly as memorize computes it with the same config.

    Sample images are the memory's bytes, never re-encoded, so they hash to the very
    value stored in the memory (distance 0)."""
    return phash(decode(data, config).grey, config.mode)


def nearest_distances(queries: np.ndarray, memory: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Hamming distance from each query hash to its nearest memory hash; radius + 1 when > radius."""
    if not 0 <= radius <= MAX_THRESHOLD:
        raise ValueError(f"radius must be between 0 and {MAX_THRESHOLD}, got {radius}")
    q = np.asarray(queries, dtype=np.int64).view(np.uint64)
    m = np.unique(np.asarray(memory, dtype=np.int64)).view(np.uint64)
    if len(q) == 0 or len(m) == 0:
        return np.full(len(q), radius + 1, dtype=np.int64)
    best = _multi_index(q, m, radius) if _index_pays(len(m), radius) else _all_pairs(q, m)
    return np.minimum(best, radius + 1)


def _index_pays(n_memory: int, radius: int) -> bool:
    """Multi-index work per query (probes x expected bucket size) below all-pairs work."""
    probes = BANDS * len(flip_masks(BAND_BITS, radius // BANDS))
    return INDEX_CANDIDATE_COST * probes * (1 + n_memory / (1 << BAND_BITS)) < n_memory


def _all_pairs(q: np.ndarray, m: np.ndarray) -> np.ndarray:
    step = max(1, _CHUNK_PAIRS // len(m))
    return np.concatenate([popcount(q[i:i + step, None] ^ m[None, :]).min(axis=1)
                           for i in range(0, len(q), step)]).astype(np.int64)


def _multi_index(q: np.ndarray, m: np.ndarray, radius: int) -> np.ndarray:
    """Nearest distance within `radius` (64 beyond) by memgen.near's bucket tables."""
    plan = SearchPlan(radius, (BAND_BITS,) * BANDS, (radius // BANDS,) * BANDS, 0)
    queries, inverse = np.unique(q, return_inverse=True)
    best = np.full(len(queries), 64, dtype=np.int64)
    for band, band_radius in enumerate(plan.radii):
        table = Buckets(m, band_values(m, plan, band), BAND_BITS, radius)
        probes = band_values(queries, plan, band)
        for mask in flip_masks(BAND_BITS, band_radius).tolist():
            a, b = table.lookup(probes ^ mask, queries)
            np.minimum.at(best, np.searchsorted(queries, a), popcount(a ^ b).astype(np.int64))
    return best[inverse]


def distance_histogram(distances: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Counts of distance 0, 1, ..., radius and, last, of everything farther."""
    return np.bincount(np.minimum(distances, radius + 1), minlength=radius + 2).astype(np.int64)


@dataclass(frozen=True)
class CopyStats:
    threshold: int
    n: int
    n_within: int
    rate: float | None  # None for an empty set
    histogram: tuple[int, ...]  # distance 0..radius, then "> radius"

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "n": self.n, "n_within": self.n_within, "rate": self.rate,
                "radius": len(self.histogram) - 2, "histogram": list(self.histogram)}


def copy_stats(histogram: np.ndarray, threshold: int) -> CopyStats:
    """Share of the set within `threshold` of the memory, from its nearest-distance histogram."""
    radius = len(histogram) - 2
    if not 0 <= threshold <= radius:
        raise ValueError(f"threshold {threshold} is outside the histogram's radius {radius}")
    n = int(np.sum(histogram))
    within = int(np.sum(histogram[:threshold + 1]))
    return CopyStats(threshold, n, within, within / n if n else None, tuple(int(c) for c in histogram))


def copying_section(copy_histogram: np.ndarray | None, contamination_histogram: np.ndarray | None,
                    threshold: int) -> dict:
    """report.json's `copying`: the sample against the memory, the reference against the memory
    (None for a set that was not given)."""
    def stats(histogram: np.ndarray | None) -> dict | None:
        return None if histogram is None else copy_stats(histogram, threshold).to_json()
    return {"threshold": threshold, "copy": stats(copy_histogram),
            "contamination": stats(contamination_histogram)}
