"""Near-duplicate search and clustering on 64-bit hashes (pure numpy, no Beam).

Candidate search is multi-index hashing (Norouzi et al. 2012) with the generalized
pigeonhole principle: the 64 bits are split into m bands with radii r_i such that
sum(r_i + 1) = k + 1, so two hashes within Hamming distance k agree on some band i
within r_i bits (exact recall). m is chosen per input size by a cost model (probes
plus VERIFY_COST x expected candidates), because the best band width grows with
log2(n); the bands probed at the larger radius may take more of the 64 bits.

The search is cut into blocks that a distributed runner can spread: a block of band i
is keyed by `prefix_bits` of its bits, the top ones (side 0) or, where the band's
radius is split between two sides (`key_radii`), the bottom ones (side 1). A hash is
*home* in its own block and *visits* the blocks whose key is smaller and within the
side's key radius of its own, so a pair is examined in exactly one block (the smaller
key's, on the one side whose radius it meets) and reported for exactly one band (the
first whose radius it meets). Inside a block, a bucket table over the band's other
bits is probed with every flip mask the pair may still differ by, vectorized, and
candidates are verified by popcount.

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

HASH_BITS = 64
MAX_THRESHOLD = 32  # beyond this, "near" means little for a 64-bit hash
DEFAULT_THRESHOLD = 10  # calibrated on the shared photos (benchmarks/README.md, section 1)
# Bands at most 22 bits wide (so m >= 3) keep a block's bucket table at <= 4M entries.
MAX_BAND_BITS = 22
MIN_BANDS, MAX_BANDS = 3, 16
# Hashes a block may hold (home + visitors), 128 MB of them: searching a block takes
# about 3.2x its input beyond it (benchmarks/README.md, section 3). A smaller cap routes
# more copies of every hash for no less CPU.
BLOCK_TARGET = 1 << 24
# Home hashes a block may hold: below the memory cap, the search of ~10M hashes would
# run as 3 blocks of minutes each; this floor spreads it over tens of blocks.
HOME_TARGET = 1 << 20
# Probes, and row cells (probes x row width), a bucket lookup handles in one vectorized
# pass: its temporaries then stay in cache (a 17M-hash block searches ~20% faster than in
# one pass of 400k probes), while a dense table's passes stay long enough to amortize the
# rank-by-rank gathers past its rows (benchmarks/README.md, section 3).
LOOKUP_CHUNK = 1 << 16
LOOKUP_CELLS = 1 << 20
# What verifying a padded row cell costs relative to a member gathered rank by rank past
# the rows, fitted on a dense table (200 members a bucket, as at 0.9 billion hashes): a
# cell is ~4 ns, a gathered member ~10 ns plus a pass of Python per rank.
ROW_CELL_COST = 0.1
# (hash, block) pairs `route` expands a chunk of a batch into: ~50 MB of working memory.
ROUTE_CHUNK = 1 << 21
# What verifying a candidate costs relative to a probe (~1.5 ns vs ~8.5 ns since the
# padded-row tables), fitted on timed searches (benchmarks/bench_layouts.py). Costing them
# alike picked 3 bands of ~21 bits at 10^6 hashes and k = 10, which search 1.7x slower
# than the 4 bands of ~17 bits picked now.
VERIFY_COST = 0.18
# Components larger than this are split through their near pairs (split_chain): about where
# scanning every node for each representative stops being the cheaper way (a random-walk
# component at k = 10: 0.03 vs 0.10 s at 10k nodes, 0.31 vs 0.38 at 40k, 7.7 vs 2.4 at 160k).
SPLIT_SCAN_MAX = 1 << 16


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


def distinct(values: np.ndarray) -> np.ndarray:
    """np.unique(values) by one sort: numpy >= 2.3's np.unique hashes integers, 0.8 s for a
    million uint64 where sorting them takes 0.01 s (it was 15% of the search at 1M)."""
    ordered = np.sort(values)
    first = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


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
    """Expected hashes (home and visitors) in the largest blocks of the plan."""
    return n * _copies(plan.prefix_bits, max(_all_key_radii(plan))) / 2**plan.prefix_bits


def _copies(prefix_bits: int, radius: int) -> float:
    """Expected blocks a hash is routed to on one side of a band: its home and, on average,
    half of its key ball (the smaller keys), so also the hashes a block holds per home hash."""
    return 1 + (ball_size(prefix_bits, radius) - 1) / 2


def key_radii(plan: SearchPlan, band: int) -> tuple[int, ...]:
    """How far from its own key a hash visits blocks, on each side of the band's blocks.

    Side 0 keys a block by the band's top `prefix_bits` bits, side 1 by its bottom ones.
    By the pigeonhole principle again, a pair within r on the band is within r0 on the
    top bits or within r - r0 - 1 on the bottom ones: side 0 finds the first pairs and
    side 1 the others, so a hash visits two small key balls instead of one of radius r
    (at 0.9 billion hashes and k = 10, 31 copies of a hash instead of 524, for a third
    more CPU, as the blocks get bigger). One side where the two keys would overlap, or
    where two route no fewer copies.
    """
    radius, bits = plan.radii[band], plan.prefix_bits
    if radius < 0:
        return ()
    split = (radius // 2, radius - radius // 2 - 1)
    if radius < 1 or 2 * bits > plan.widths[band] or (
            sum(_copies(bits, r) for r in split) >= _copies(bits, radius)):
        return (radius,)
    return split


def _all_key_radii(plan: SearchPlan) -> Iterator[int]:
    """The key radius of every side of every band."""
    for band in range(len(plan.radii)):
        yield from key_radii(plan, band)


def routed_copies(plan: SearchPlan) -> float:
    """Expected copies of each distinct hash that `route` emits (the search's shuffle)."""
    return sum(_copies(plan.prefix_bits, r) for r in _all_key_radii(plan))


def band_values(hashes: np.ndarray, plan: SearchPlan, band: int) -> np.ndarray:
    """The band's bits of each hash, as int32 (bands are at most MAX_BAND_BITS wide)."""
    shift, width = plan.shifts[band], plan.widths[band]
    return ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int32)


def _key_and_rest(hashes: np.ndarray, plan: SearchPlan, band: int,
                  side: int) -> tuple[np.ndarray, np.ndarray]:
    """(block key, the band's other bits) of each hash on one side of the band's blocks."""
    values = band_values(hashes, plan, band)
    key_bits, rest_bits = plan.prefix_bits, plan.widths[band] - plan.prefix_bits
    if side == 0:
        return values >> rest_bits, values & ((1 << rest_bits) - 1)
    return values & ((1 << key_bits) - 1), values >> key_bits


@cache
def _probe_masks(rest_bits: int, radius: int, top_bits: int, top_floor: int) -> np.ndarray:
    """Masks over a block's table bits with at most `radius` bits set, and more than
    `top_floor` of them among the top `top_bits` (side 1 leaves the rest to side 0)."""
    masks = flip_masks(rest_bits, radius)
    if top_bits:
        masks = masks[popcount(masks >> (rest_bits - top_bits)) > top_floor]
    return masks.astype(np.int32)


def route(hashes: np.ndarray, plan: SearchPlan) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
    """((band, side, block), hashes) for a batch of distinct uint64 hashes: one array for each
    block that some of them must reach, their home (their key) or a smaller key they visit.

    One array per block and chunk of the batch, not per (home, block): at 0.9 billion hashes a
    batch reaches thousands of blocks, and a shuffled element costs ~140 bytes beside its
    8 bytes a hash. The block tells home hashes from visitors by their key.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) == 0:
        return
    for band in range(len(plan.radii)):
        for side, radius in enumerate(key_radii(plan, band)):
            keys = _key_and_rest(hashes, plan, band, side)[0]
            masks = flip_masks(plan.prefix_bits, radius).astype(np.int32)
            step = max(1, ROUTE_CHUNK // len(masks))
            for start in range(0, len(hashes), step):
                own = keys[start:start + step, None]
                reached = own ^ masks[None, :]
                keep = reached <= own  # home, and the smaller keys within the radius
                blocks = reached[keep]
                members = np.broadcast_to(hashes[start:start + step, None], reached.shape)[keep]
                order = np.argsort(blocks, kind="stable")
                blocks = blocks[order]
                starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])  # each block's first
                for block, part in zip(blocks[starts].tolist(), np.split(members[order], starts[1:]),
                                       strict=True):
                    yield (band, side, block), part


def block_pairs(plan: SearchPlan, band: int, side: int, block: int,
                parts: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b as uint64, distance) within k that this block owns, from `route` parts."""
    rest_bits = plan.widths[band] - plan.prefix_bits
    top = (plan.prefix_bits, key_radii(plan, band)[0]) if side else (0, 0)
    home, visitors, spare = _split_block(plan, band, side, block, parts)
    found: list[tuple[np.ndarray, np.ndarray]] = []
    if len(home):
        table = Buckets(home, _key_and_rest(home, plan, band, side)[1], rest_bits, plan.k)
        found.extend(table.pairs_within(_probe_masks(rest_bits, plan.radii[band], *top)))
        for bits in distinct(spare).tolist():  # visitors that may differ in as many other bits
            group = visitors[spare == bits]
            probes = _key_and_rest(group, plan, band, side)[1]
            masks = _probe_masks(rest_bits, bits, *top).tolist()
            found.extend(table.lookup(probes ^ mask, group) for mask in masks)
    a = np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.uint64)
    b = np.concatenate([f[1] for f in found]) if found else np.zeros(0, np.uint64)
    a, b = _unclaimed(plan, band, a, b)
    return np.minimum(a, b), np.maximum(a, b), popcount(a ^ b).astype(np.int64)


def _split_block(plan: SearchPlan, band: int, side: int, block: int,
                 parts: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(home hashes, visiting hashes, the bits each visitor's other bits may differ in).

    A visitor's key differs from the block's in d bits, so its other bits may differ in
    radius - d. The temporaries die on return, before the search."""
    hashes = np.concatenate([np.zeros(0, np.uint64), *parts])
    keys = _key_and_rest(hashes, plan, band, side)[0]
    away = keys != block
    # popcount of the int32 keys themselves (not popcount()'s uint64 copy): a large block's memory
    spare = plan.radii[band] - np.bitwise_count(keys[away] ^ block).astype(np.int8)
    return distinct(hashes[~away]), hashes[away], spare


class Buckets:
    """Home hashes bucketed by a block's table bits; probes return the pairs within k, verified.

    The first `width` members of every bucket also sit in one padded row, so a probe verifies
    them in a few contiguous vector operations; members beyond it (rare unless the table is
    skewed) are gathered rank by rank.
    """

    def __init__(self, hashes: np.ndarray, buckets: np.ndarray, bits: int, k: int) -> None:
        order = np.argsort(buckets, kind="stable")
        self.hashes, self.buckets = hashes[order], buckets[order]
        self.bits, self.k = bits, k
        self.counts = np.bincount(buckets, minlength=1 << bits).astype(np.int32)
        self.starts = np.cumsum(self.counts, dtype=np.int64) - self.counts
        self.width = row_width(self.counts)
        rank = np.arange(len(self.hashes)) - self.starts[self.buckets]
        in_row = rank < self.width
        self.rows = np.zeros((len(self.counts), self.width), np.uint64)
        self.rows[self.buckets[in_row], rank[in_row]] = self.hashes[in_row]

    def lookup(self, probes: np.ndarray, probe_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probe hash, member hash) within k for every member of each probed bucket."""
        a: list[np.ndarray] = []
        b: list[np.ndarray] = []
        step = max(1, min(LOOKUP_CHUNK, LOOKUP_CELLS // max(self.width, 1)))
        for i in range(0, len(probes), step):
            self._collect(probes[i:i + step], probe_hashes[i:i + step], a, b)
        return (np.concatenate(a), np.concatenate(b)) if a else (probe_hashes[:0], probe_hashes[:0])

    def _collect(self, probes: np.ndarray, probe_hashes: np.ndarray, a: list, b: list) -> None:
        counts = self.counts[probes]
        hit = np.flatnonzero(counts)
        probes, counts, probe_hashes = probes[hit], counts[hit], probe_hashes[hit]
        if self.width:
            distances = np.take(self.rows, probes, axis=0)
            np.bitwise_xor(distances, probe_hashes[:, None], out=distances)
            close = np.flatnonzero(np.bitwise_count(distances) <= self.k)
            row, rank = np.divmod(close, self.width)
            real = rank < counts[row]  # not padding
            row, close = row[real], close[real]
            a.append(probe_hashes[row])
            b.append(distances.ravel()[close] ^ probe_hashes[row])
        more = counts > self.width
        starts, counts, probe_hashes = self.starts[probes[more]], counts[more], probe_hashes[more]
        rank = self.width
        while len(starts):  # the rank-th member of every bucket that has one
            members = self.hashes[starts + rank]
            close = popcount(members ^ probe_hashes) <= self.k
            a.append(probe_hashes[close])
            b.append(members[close])
            rank += 1
            more = counts > rank
            starts, counts, probe_hashes = starts[more], counts[more], probe_hashes[more]

    def pairs_within(self, masks: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each unordered pair of home hashes within k whose table values differ by one of
        `masks` (ordered by popcount), once."""
        gap = 1
        while len(masks) and masks[0] == 0 and gap < len(self.buckets):  # same bucket: sorted neighbours
            same = np.flatnonzero(self.buckets[gap:] == self.buckets[:-gap])
            if not len(same):
                break
            a, b = self.hashes[same], self.hashes[same + gap]
            close = popcount(a ^ b) <= self.k
            yield a[close], b[close]
            gap += 1
        masks = masks[masks != 0]
        # Probe only from the side whose highest flipped bit is 0, so each pair is seen once.
        top = np.frexp(masks.astype(np.float64))[1] - 1
        for bit in distinct(top).tolist():
            probers = ((self.buckets >> bit) & 1) == 0
            probes, hashes = self.buckets[probers], self.hashes[probers]
            for mask in masks[top == bit].tolist():
                yield self.lookup(probes ^ mask, hashes)


def row_width(counts: np.ndarray) -> int:
    """Members of each bucket to lay out in padded rows: the width with the least expected
    verification cost, probes falling on buckets as members do; at most twice the mean
    bucket, so the rows take at most twice the memory of the hashes."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if not total:
        return 0
    cap = int(2 * total / len(counts))
    # sum over buckets of c * max(0, c - w) for every w <= cap, from a histogram of the
    # sizes up to cap; larger buckets (a skewed table's) overflow every such w
    big = counts[counts > cap]
    sizes = np.bincount(counts[counts <= cap], minlength=cap + 1)
    widths = np.arange(cap + 1)
    squares = np.cumsum((sizes * widths * widths)[::-1])[::-1] + int((big * big).sum())
    members = np.cumsum((sizes * widths)[::-1])[::-1] + int(big.sum())
    return int(np.argmin(ROW_CELL_COST * widths * total + squares - widths * members))


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
    blocks: dict[tuple[int, int, int], list] = defaultdict(list)
    for key, part in route(hashes, plan):
        blocks[key].append(part)
    sorter = np.argsort(hashes)
    codes = [np.zeros(0, dtype=np.int64)]
    for (band, side, block), parts in blocks.items():
        a, b, _ = block_pairs(plan, band, side, block, parts)
        i = sorter[np.searchsorted(hashes, a, sorter=sorter)]
        j = sorter[np.searchsorted(hashes, b, sorter=sorter)]
        codes.append(np.minimum(i, j) * len(hashes) + np.maximum(i, j))
    codes = np.sort(np.concatenate(codes))
    i, j = codes // max(len(hashes), 1), codes % max(len(hashes), 1)
    return i, j, popcount(hashes[i] ^ hashes[j]).astype(np.int64)


def split_clusters(hashes: np.ndarray, k: int, fixed: int = 0) -> np.ndarray:
    """Representative index for each node; nodes are given most-preferred first, the
    first `fixed` representatives whatever their distances (see split_chain).

    Every node ends within k of its representative; a representative is its own.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    rep = np.arange(n)
    i, j, _ = near_pairs(hashes, k)
    if len(i) == 0:
        return rep
    # here, not at the top: memorize's pipeline never calls this one-machine reference,
    # and scipy.sparse is a sixth of a second of every worker's start-up
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")  # node order within a component = preference
    boundaries = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, boundaries):
        if len(members) > 1:
            rep[members] = members[split_chain(hashes[members], k, int(np.count_nonzero(members < fixed)))]
    return rep


def split_chain(hashes: np.ndarray, k: int, fixed: int = 0) -> np.ndarray:
    """Local representative of each of a component's nodes (distinct hashes, given most
    preferred first).

    The first `fixed` nodes are representatives whatever their distances to one another
    (images of --known memories: kept there already); in order, each takes every
    unassigned node within k of it. Then the most preferred unassigned node becomes a
    representative and takes every unassigned node within k of it, so nobody is further
    than k from its representative.
    A representative compares itself with every node, vectorized, in components of up to
    SPLIT_SCAN_MAX nodes (nearly all of them); larger ones, whose cost that way grows with
    nodes x representatives, take each one's neighbours from the component's near pairs
    instead (linear in the pairs). Both give the same representatives.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    rep = np.full(len(hashes), -1)
    rep[:fixed] = np.arange(fixed)
    if len(hashes) <= SPLIT_SCAN_MAX:
        for center in range(len(hashes)):
            if rep[center] < 0 or center < fixed:
                rep[(rep < 0) & (popcount(hashes ^ hashes[center]) <= k)] = center
                rep[center] = center
        return rep
    i, j, _ = near_pairs(hashes, k)
    ends, others = np.concatenate([i, j]), np.concatenate([j, i])
    order = np.argsort(ends, kind="stable")
    neighbours = others[order]
    starts = np.searchsorted(ends[order], np.arange(len(hashes) + 1))
    for center in range(len(hashes)):
        if rep[center] < 0 or center < fixed:
            close = neighbours[starts[center]:starts[center + 1]]
            rep[close[rep[close] < 0]] = center
            rep[center] = center
    return rep
