"""Near-duplicate search and clustering on 64-bit hashes (pure numpy, no Beam).

- `near_pairs`: every pair of distinct hash values within Hamming distance k, by
  multi-index hashing (Norouzi et al. 2012): the 64 bits are split into 4 bands of
  16; two hashes within k agree on some band within floor(k/4) bits, so probing
  each band's bucket table with every flip pattern of <= floor(k/4) bits finds all
  pairs (exact recall) and popcount verifies them.
- `split_clusters`: connected components of those pairs, then each component is
  split greedily so that every member is within k of its representative: the
  most-preferred unassigned node becomes a representative and takes every
  unassigned node within k of it. Chains therefore never glue unrelated images.
"""

from __future__ import annotations

from functools import cache
from itertools import combinations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

BANDS = 4
BAND_BITS = 64 // BANDS
MAX_THRESHOLD = 32  # beyond this, "near" means little for a 64-bit hash


def popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.asarray(x, dtype=np.uint64))


@cache
def flip_masks(bits: int, radius: int) -> np.ndarray:
    """All `bits`-bit masks with at most `radius` bits set (0 first)."""
    masks = [0]
    for r in range(1, radius + 1):
        for positions in combinations(range(bits), r):
            masks.append(sum(1 << p for p in positions))
    return np.array(masks, dtype=np.int64)


def near_pairs(hashes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) of `hashes` (distinct uint64) with popcount(h_i ^ h_j) <= k.

    Returns (i, j, distance) arrays, sorted by (i, j).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found = []
    masks = flip_masks(BAND_BITS, k // BANDS)
    for band in range(BANDS):
        values = ((hashes >> np.uint64(band * BAND_BITS)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(values, kind="stable")
        counts = np.bincount(values, minlength=1 << BAND_BITS)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        for mask in masks:
            probe = values ^ mask
            i, j = _expand(starts[probe], counts[probe], order)
            keep = i < j
            i, j = i[keep], j[keep]
            d = popcount(hashes[i] ^ hashes[j])
            keep = d <= k
            found.append(i[keep].astype(np.int64) * n + j[keep])
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    codes = np.unique(np.concatenate(found))
    i, j = codes // n, codes % n
    return i, j, popcount(hashes[i] ^ hashes[j]).astype(np.int64)


def _expand(starts: np.ndarray, counts: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each probe p with bucket [starts[p], starts[p]+counts[p]) of `order`, all (p, member)."""
    total = int(counts.sum())
    probe_idx = np.repeat(np.arange(len(counts)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return probe_idx, order[np.repeat(starts, counts) + offsets]


def split_clusters(hashes: np.ndarray, k: int) -> np.ndarray:
    """Representative index for each node; nodes are given most-preferred first.

    Every node ends within k of its representative; a representative is its own.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    rep = np.arange(n)
    i, j, _ = near_pairs(hashes, k)
    if len(i) == 0:
        return rep
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")  # node order within a component = preference
    boundaries = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, boundaries):
        if len(members) > 1:
            rep[members] = members[_greedy(hashes[members], k)]
    return rep


def _greedy(hashes: np.ndarray, k: int) -> np.ndarray:
    """Local representative of each of a component's nodes (most preferred first)."""
    rep = np.full(len(hashes), -1)
    for center in range(len(hashes)):
        if rep[center] >= 0:
            continue
        close = (rep < 0) & (popcount(hashes ^ hashes[center]) <= k)
        rep[close] = center
    return rep
