"""Near-duplicate search and clustering on 64-bit hashes (pure numpy, no Beam).

Candidate search is multi-index hashing (Norouzi et al. 2012) with the generalized
pigeonhole principle: the 64 bits are split into m bands with radii r_i such that
sum(r_i + 1) = k + 1, so two hashes within Hamming distance k agree on some band i
within r_i bits (exact recall). m is chosen per input size by a cost model (probes
plus VERIFY_COST x expected candidates), because the best band width grows with log2(n); the bands
probed at the larger radius may take more of the 64 bits than the others.

The search is cut into blocks that a distributed runner can spread: the blocks of
band i are the values of its top `prefix_bits` bits. A hash is *home* in its own block
and *visits* the blocks whose prefix is smaller and within r_i bits of its own, so a
pair is examined in exactly one block (the smaller prefix's) and reported for exactly
one band (the first whose radius it meets). Inside a block, a bucket table over the
remaining bits is probed with every flip mask, vectorized, and candidates are
verified by popcount.

- `plan_search`, `route`, `block_pairs`: the pieces the Beam stage runs.
- `near_pairs`: the same pieces on one machine; `split_clusters`: connected
  components of those pairs, each split greedily (`split_chain`) so that every member
  is within k of its representative. Chains therefore never glue unrelated images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from functools import cache
from itertools import combinations
from math import comb
from typing import NamedTuple

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASH_BITS = 64
MAX_THRESHOLD = 32  # beyond this, "near" means little for a 64-bit hash
# Bands at most 22 bits wide (so m >= 3) keep a block's bucket table at <= 4M entries.
MAX_BAND_BITS = 22
MIN_BANDS, MAX_BANDS = 3, 16
# Hashes a block may hold (home + visitors), 128 MB of them: searching a block takes
# about 3.2x its input beyond it (benchmarks/README.md, section 3). A smaller cap routes
# more copies of every hash (the search's shuffle at 0.9 billion hashes, k = 10: 912 a
# hash for 4M, 524 for 16M) for no less CPU.
BLOCK_TARGET = 1 << 24
# Home hashes a block may hold: below the memory cap, the search of ~10M hashes would
# run as 3 blocks of minutes each; this floor spreads it over tens of blocks.
HOME_TARGET = 1 << 20
# Probes a bucket lookup handles in one vectorized pass: its temporaries then stay in
# cache (a 17M-hash block searches ~20% faster than in one pass of 400k probes).
LOOKUP_CHUNK = 1 << 16
# (hash, block) pairs `route` expands a chunk of a batch into: ~50 MB of working memory.
ROUTE_CHUNK = 1 << 21
# What verifying a candidate costs relative to a probe (~1.9 ns vs ~4.8 ns), fitted on
# timed searches (benchmarks/bench_layouts.py). Costing them alike picked 3 bands of ~21 bits at
# 10^6 hashes and k = 10, which search 1.7x slower than the 4 bands of ~17 bits picked now.
VERIFY_COST = 0.4


class SearchPlan(NamedTuple):
    """How distinct hashes are searched; a pure function of (n, k, block_target)."""

    k: int
    widths: tuple[int, ...]  # band widths, band 0 = lowest bits
    radii: tuple[int, ...]  # -1: band not probed
    prefix_bits: int  # bits of a band value that name its block

    @property
    def shifts(self) -> tuple[int, ...]:
        return tuple(sum(self.widths[:i]) for i in range(len(self.widths)))


def popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.asarray(x, dtype=np.uint64))


def ball_size(bits: int, radius: int) -> int:
    """Number of `bits`-bit masks with at most `radius` bits set."""
    return sum(comb(bits, i) for i in range(min(radius, bits) + 1))


@cache
def flip_masks(bits: int, radius: int) -> np.ndarray:
    """All `bits`-bit masks with at most `radius` bits set, by popcount (0 first)."""
    masks = [0]
    for r in range(1, min(radius, bits) + 1):
        for positions in combinations(range(bits), r):
            masks.append(sum(1 << p for p in positions))
    return np.array(masks, dtype=np.int64)


def _layouts(m: int, k: int) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(widths, radii) of m bands that spread the k + 1 pigeonhole units evenly, for every
    split of the 64 bits between the bands with the larger radius and the others.

    The bands probed at the larger radius make the most probes, so a wider band (fewer
    candidates a probe) pays most there: at k = 10 and 0.9 billion hashes, (22, 22, 20)
    bits for radii (3, 3, 2) search with 20% less CPU than (22, 21, 21).
    """
    q, more = divmod(k + 1, m)
    radii = tuple(q if i < more else q - 1 for i in range(m))
    for wide_bits in range(more, HASH_BITS - (m - more) + 1) if more else (0,):
        widths = _spread(wide_bits, more) + _spread(HASH_BITS - wide_bits, m - more)
        if max(widths) <= MAX_BAND_BITS:
            yield widths, radii


def _spread(bits: int, bands: int) -> tuple[int, ...]:
    base, extra = divmod(bits, bands) if bands else (0, 0)
    return tuple(base + 1 if i < extra else base for i in range(bands))


def search_cost(n: int, widths: tuple[int, ...], radii: tuple[int, ...]) -> float:
    """Expected work per hash, in probes: probes + VERIFY_COST x candidates verified."""
    return sum(ball_size(w, r) * (1 + VERIFY_COST * n / 2**w)
               for w, r in zip(widths, radii, strict=True) if r >= 0)


def plan_search(n: int, k: int, block_target: int = BLOCK_TARGET) -> SearchPlan:
    """The cheapest band layout for n distinct hashes and threshold k, and its blocking."""
    if not 0 <= k <= MAX_THRESHOLD:
        raise ValueError(f"threshold must be between 0 and {MAX_THRESHOLD}, got {k}")
    if k == 0:  # distinct hash values are never within 0 of each other
        return SearchPlan(0, (), (), 0)
    plans = [_blocked(n, SearchPlan(k, widths, radii, 0), block_target)
             for m in range(MIN_BANDS, MAX_BANDS + 1) for widths, radii in _layouts(m, k)]
    # A band narrower than the prefix its blocks need cannot be cut finely enough; such
    # layouts only win at thresholds near 32, where brute force is the cheapest search.
    fitting = [plan for plan in plans if not _too_big(n, plan, block_target)]
    if not fitting:  # a threshold too large for n: at least keep the blocks small
        return min(plans, key=lambda plan: _block_hashes(n, plan))
    return min(fitting, key=lambda plan: search_cost(n, plan.widths, plan.radii))


def _blocked(n: int, plan: SearchPlan, block_target: int) -> SearchPlan:
    """The plan with the fewest prefix bits whose blocks fit, or as many as its narrowest band has."""
    while plan.prefix_bits < min(plan.widths) and _too_big(n, plan, block_target):
        plan = plan._replace(prefix_bits=plan.prefix_bits + 1)
    return plan


def _too_big(n: int, plan: SearchPlan, block_target: int) -> bool:
    """Whether the plan's blocks hold more home hashes, or more hashes in all, than allowed."""
    return n / 2**plan.prefix_bits > HOME_TARGET or _block_hashes(n, plan) > block_target


def _block_hashes(n: int, plan: SearchPlan) -> float:
    """Expected hashes (home and visitors) in a block of the band with the largest radius."""
    return n * _copies(plan.prefix_bits, max(plan.radii)) / 2**plan.prefix_bits


def _copies(prefix_bits: int, radius: int) -> float:
    """Expected blocks a hash is routed to in one band: its home and, on average, half of
    its prefix ball (the smaller prefixes), so also the hashes a block holds per home hash."""
    return 1 + (ball_size(prefix_bits, radius) - 1) / 2


def routed_copies(plan: SearchPlan) -> float:
    """Expected copies of each distinct hash that `route` emits (the search's shuffle)."""
    return sum(_copies(plan.prefix_bits, r) for r in plan.radii if r >= 0)


def band_values(hashes: np.ndarray, plan: SearchPlan, band: int) -> np.ndarray:
    """The band's bits of each hash, as int32 (bands are at most MAX_BAND_BITS wide)."""
    shift, width = plan.shifts[band], plan.widths[band]
    return ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int32)


def route(hashes: np.ndarray, plan: SearchPlan) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """((band, block), hashes) for a batch of distinct uint64 hashes: one array for each block
    that some of them must reach, their home (the band prefix) or a smaller prefix they visit.

    One array per block and chunk of the batch, not per (home, block): at 0.9 billion hashes a
    batch reaches thousands of blocks, and a shuffled element costs ~140 bytes beside its
    8 bytes a hash. The block tells home hashes from visitors by their prefix.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    for band, radius in enumerate(plan.radii):
        if radius < 0 or len(hashes) == 0:
            continue
        prefixes = band_values(hashes, plan, band) >> (plan.widths[band] - plan.prefix_bits)
        masks = flip_masks(plan.prefix_bits, radius).astype(np.int32)
        step = max(1, ROUTE_CHUNK // len(masks))
        for start in range(0, len(hashes), step):
            own = prefixes[start:start + step, None]
            reached = own ^ masks[None, :]
            keep = reached <= own  # home, and the smaller prefixes within the radius
            blocks = reached[keep]
            members = np.broadcast_to(hashes[start:start + step, None], reached.shape)[keep]
            order = np.argsort(blocks, kind="stable")
            values, starts = np.unique(blocks[order], return_index=True)
            for block, part in zip(values.tolist(), np.split(members[order], starts[1:]), strict=True):
                yield (band, block), part


def block_pairs(plan: SearchPlan, band: int, block: int,
                parts: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b as uint64, distance) within k that this block owns, from `route` parts."""
    suffix_bits = plan.widths[band] - plan.prefix_bits
    low = (1 << suffix_bits) - 1
    home, visitors, spare = _split_block(plan, band, block, parts)
    found: list[tuple[np.ndarray, np.ndarray]] = []
    if len(home):
        table = Buckets(home, band_values(home, plan, band) & low, suffix_bits, plan.k)
        found.extend(table.pairs_within(plan.radii[band]))
        for bits in np.unique(spare).tolist():  # visitors that may differ in as many suffix bits
            group = visitors[spare == bits]
            probes = band_values(group, plan, band) & low
            masks = flip_masks(suffix_bits, bits).astype(np.int32).tolist()
            found.extend(table.lookup(probes ^ mask, group) for mask in masks)
    a = np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.uint64)
    b = np.concatenate([f[1] for f in found]) if found else np.zeros(0, np.uint64)
    a, b = _unclaimed(plan, band, a, b)
    return np.minimum(a, b), np.maximum(a, b), popcount(a ^ b).astype(np.int64)


def _split_block(plan: SearchPlan, band: int, block: int,
                 parts: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(home hashes, visiting hashes, the bits each visitor's suffix may differ in).

    A visitor's prefix differs from the block's in d bits, so its suffix may differ in
    radius - d. The temporaries die on return, before the search."""
    hashes = np.concatenate([np.zeros(0, np.uint64), *parts])
    prefixes = band_values(hashes, plan, band) >> (plan.widths[band] - plan.prefix_bits)
    away = prefixes != block
    # popcount of the int32 prefixes themselves (not popcount()'s uint64 copy): a large block's memory
    spare = plan.radii[band] - np.bitwise_count(prefixes[away] ^ block).astype(np.int8)
    return np.unique(hashes[~away]), hashes[away], spare


class Buckets:
    """Home hashes bucketed by band suffix; probes return the pairs within k, verified."""

    def __init__(self, hashes: np.ndarray, suffixes: np.ndarray, bits: int, k: int) -> None:
        order = np.argsort(suffixes, kind="stable")
        self.hashes, self.suffixes = hashes[order], suffixes[order]
        self.bits, self.k = bits, k
        self.counts = np.bincount(suffixes, minlength=1 << bits).astype(np.int32)
        self.starts = np.cumsum(self.counts, dtype=np.int64) - self.counts

    def lookup(self, probes: np.ndarray, probe_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probe hash, member hash) within k for every member of each probed bucket."""
        a: list[np.ndarray] = []
        b: list[np.ndarray] = []
        for i in range(0, len(probes), LOOKUP_CHUNK):
            self._collect(probes[i:i + LOOKUP_CHUNK], probe_hashes[i:i + LOOKUP_CHUNK], a, b)
        return (np.concatenate(a), np.concatenate(b)) if a else (probe_hashes[:0], probe_hashes[:0])

    def _collect(self, probes: np.ndarray, probe_hashes: np.ndarray, a: list, b: list) -> None:
        counts = self.counts[probes]
        hit = np.flatnonzero(counts)
        starts, counts, probe_hashes = self.starts[probes[hit]], counts[hit], probe_hashes[hit]
        rank = 0
        while len(starts):  # the rank-th member of every bucket that has one; buckets are small
            members = self.hashes[starts + rank]
            close = popcount(members ^ probe_hashes) <= self.k
            a.append(probe_hashes[close])
            b.append(members[close])
            rank += 1
            more = counts > rank
            starts, counts, probe_hashes = starts[more], counts[more], probe_hashes[more]

    def pairs_within(self, radius: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each unordered pair of home hashes within k whose suffixes are within `radius`, once."""
        gap = 1
        while gap < len(self.suffixes):  # same bucket: sorted neighbours `gap` apart
            same = np.flatnonzero(self.suffixes[gap:] == self.suffixes[:-gap])
            if not len(same):
                break
            a, b = self.hashes[same], self.hashes[same + gap]
            close = popcount(a ^ b) <= self.k
            yield a[close], b[close]
            gap += 1
        masks = flip_masks(self.bits, radius)[1:]
        # Probe only from the side whose highest flipped bit is 0, so each pair is seen once.
        top = np.frexp(masks.astype(np.float64))[1] - 1
        for bit in np.unique(top).tolist():
            probers = ((self.suffixes >> bit) & 1) == 0
            probes, hashes = self.suffixes[probers], self.hashes[probers]
            for mask in masks[top == bit].tolist():
                yield self.lookup(probes ^ mask, hashes)


def _unclaimed(plan: SearchPlan, band: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs that no earlier band claims (each pair is reported by one band only)."""
    for earlier in range(band):
        radius = plan.radii[earlier]
        if radius >= 0:
            keep = popcount(band_values(a ^ b, plan, earlier)) > radius
            a, b = a[keep], b[keep]
    return a, b


def near_pairs(hashes: np.ndarray, k: int,
               block_target: int = BLOCK_TARGET) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) of `hashes` (distinct uint64) with popcount(h_i ^ h_j) <= k.

    The blocks the Beam stage spreads over workers, run in turn. Returns (i, j,
    distance) arrays, sorted by (i, j).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    return planned_pairs(hashes, plan_search(len(hashes), k, block_target))


def planned_pairs(hashes: np.ndarray, plan: SearchPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`near_pairs` with a given plan (distinct uint64 hashes)."""
    blocks: dict[tuple[int, int], list] = defaultdict(list)
    for key, part in route(hashes, plan):
        blocks[key].append(part)
    sorter = np.argsort(hashes)
    codes = [np.zeros(0, dtype=np.int64)]
    for (band, block), parts in blocks.items():
        a, b, _ = block_pairs(plan, band, block, parts)
        i = sorter[np.searchsorted(hashes, a, sorter=sorter)]
        j = sorter[np.searchsorted(hashes, b, sorter=sorter)]
        codes.append(np.minimum(i, j) * len(hashes) + np.maximum(i, j))
    codes = np.sort(np.concatenate(codes))
    i, j = codes // max(len(hashes), 1), codes % max(len(hashes), 1)
    return i, j, popcount(hashes[i] ^ hashes[j]).astype(np.int64)


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
            rep[members] = members[split_chain(hashes[members], k)]
    return rep


def split_chain(hashes: np.ndarray, k: int) -> np.ndarray:
    """Local representative of each of a component's nodes (given most preferred first).

    The most preferred unassigned node becomes a representative and takes every
    unassigned node within k of it, so nobody is further than k from its representative.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    rep = np.full(len(hashes), -1)
    for center in range(len(hashes)):
        if rep[center] >= 0:
            continue
        close = (rep < 0) & (popcount(hashes ^ hashes[center]) <= k)
        rep[close] = center
    return rep
