"""Pure near-dedup core: multi-index hashing vs brute force, components vs scipy, chain splits."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from memgen import near
from memgen.components import (
    MAX_ROUNDS,
    Finishing,
    connected_components,
    large_star,
    small_star,
    spanning_stars,
)
from memgen.near import (
    BLOCK_TARGET,
    HOME_TARGET,
    MAX_THRESHOLD,
    ROUTE_CHUNK,
    SearchPlan,
    ball_size,
    band_values,
    distinct,
    key_radii,
    near_pairs,
    plan_search,
    planned_pairs,
    popcount,
    route,
    routed_copies,
    row_width,
    search_cost,
    split_chain,
    split_clusters,
)


def planted_hashes(n: int, k: int, seed: int) -> np.ndarray:
    """n/2 random hashes and n/2 copies of them with 1..k+2 random bits flipped (some beyond k)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, n // 2, dtype=np.uint64)
    copies = base[rng.integers(0, len(base), n - n // 2)].copy()
    for i in range(len(copies)):
        for bit in rng.choice(64, rng.integers(1, k + 3), replace=False):
            copies[i] ^= np.uint64(1) << np.uint64(bit)
    return np.unique(np.concatenate([base, copies]))


def brute_pairs(hashes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distance = popcount(hashes[:, None] ^ hashes[None, :])
    return np.nonzero(np.triu(distance <= k, 1))


@pytest.mark.parametrize(("k", "block_target"), [
    (1, BLOCK_TARGET), (3, BLOCK_TARGET), (10, BLOCK_TARGET), (MAX_THRESHOLD, BLOCK_TARGET),
    (3, 100), (10, 150), (16, 300),  # many blocks per band: hashes visit smaller prefixes
])
def test_near_pairs_equal_brute_force_each_pair_once(k, block_target):
    hashes = planted_hashes(1200, k, seed=k)
    plan = plan_search(len(hashes), k, block_target)
    assert (plan.prefix_bits > 0) == (block_target < BLOCK_TARGET)
    i, j, d = near_pairs(hashes, k, block_target)
    bi, bj = brute_pairs(hashes, k)
    assert len(bi) > len(hashes) // 8  # the planted copies make the comparison meaningful
    np.testing.assert_array_equal(i, bi)  # no pair missing, none reported twice
    np.testing.assert_array_equal(j, bj)
    np.testing.assert_array_equal(d, popcount(hashes[bi] ^ hashes[bj]))


def test_threshold_zero_finds_nothing_and_bad_thresholds_fail():
    hashes = np.array([0, 1, 3], dtype=np.uint64)
    assert len(near_pairs(hashes, 0)[0]) == 0
    assert len(near_pairs(hashes, 1)[0]) == 2
    for bad in (-1, MAX_THRESHOLD + 1):
        with pytest.raises(ValueError, match="threshold"):
            plan_search(10, bad)


@pytest.mark.parametrize("k", range(1, MAX_THRESHOLD + 1))
def test_plan_satisfies_the_pigeonhole_bound(k):
    plan = plan_search(10**6, k)
    assert sum(plan.widths) == 64 and max(plan.widths) <= 22
    # a pair further than r_i on every band is more than k apart
    assert sum(r + 1 for r in plan.radii) == k + 1


def test_plan_widens_bands_and_adds_blocks_as_the_input_grows():
    # Norouzi et al.: the best band width grows with log2(n)
    plans = [plan_search(n, 10) for n in (10**5, 10**6, 10**7)]
    assert len(plans[0].widths) > len(plans[1].widths) > len(plans[2].widths)
    assert max(plans[0].widths) < max(plans[1].widths) < max(plans[2].widths)
    assert plan_search(10**7, 10).widths == (22, 22, 20)
    assert plan_search(10**6, 10).prefix_bits == 0
    big = plan_search(10**9, 10)
    assert largest_block(10**9, big) <= BLOCK_TARGET
    coarser = big._replace(prefix_bits=big.prefix_bits - 1)  # one bit fewer breaks a cap
    assert largest_block(10**9, coarser) > BLOCK_TARGET or 10**9 / 2**coarser.prefix_bits > HOME_TARGET
    # below the memory cap, blocks still split the search for parallelism
    mid = plan_search(10**7, 10)
    assert 10**7 * routed_copies(mid) / 3 / 2**mid.prefix_bits <= BLOCK_TARGET
    assert 10**7 / 2**mid.prefix_bits <= HOME_TARGET < 10**7 / 2 ** (mid.prefix_bits - 1)


@pytest.mark.parametrize("n", [10**5, 10**7, 10**9])
@pytest.mark.parametrize("k", [6, 8, 10])
def test_plan_gives_the_bands_probed_further_at_least_as_many_bits(n, k):
    plan = plan_search(n, k)
    m = len(plan.widths)
    even = tuple(64 // m + (i < 64 % m) for i in range(m))  # the same bands, bits spread evenly
    assert search_cost(n, plan.widths, plan.radii) <= search_cost(n, even, plan.radii)
    for i in range(m - 1):
        if plan.radii[i] > plan.radii[i + 1]:
            assert plan.widths[i] >= plan.widths[i + 1]


def test_uneven_bands_cut_the_modelled_work_at_web_scale():
    n = 896_000_000
    plan = plan_search(n, 10)
    assert plan.widths == (22, 22, 20) and plan.radii == (3, 3, 2)
    assert search_cost(n, plan.widths, plan.radii) < 0.85 * search_cost(n, (22, 21, 21), plan.radii)


def largest_block(n: int, plan) -> float:
    """Expected hashes in the plan's largest blocks: home ones and visitors from smaller keys."""
    visits = max(r for band in range(len(plan.radii)) for r in key_radii(plan, band))
    return n * (1 + (ball_size(plan.prefix_bits, visits) - 1) / 2) / 2**plan.prefix_bits


@pytest.mark.parametrize("prefix_bits", [0, 3, 6, 10])
def test_blocks_keyed_on_both_ends_of_a_band_find_each_pair_once(prefix_bits):
    k = 10
    hashes = planted_hashes(1200, k, seed=5)
    plan = SearchPlan(k, (22, 22, 20), (3, 3, 2), prefix_bits)
    # two sides where they route fewer copies than one key ball of the band's radius
    assert len(key_radii(plan, 0)) == (2 if prefix_bits >= 6 else 1)
    for band, radius in enumerate(plan.radii):
        sides = key_radii(plan, band)
        assert sides == (radius,) or sum(r + 1 for r in sides) == radius + 1  # the pigeonhole again
    i, j, _ = planned_pairs(hashes, plan)
    bi, bj = brute_pairs(hashes, k)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(j, bj)


def test_dense_and_skewed_bucket_tables_find_each_pair_once():
    # 8-bit bands: ~6 hashes a bucket, laid out in padded rows; a third of the hashes share
    # their lowest band, one bucket of ~500 whose members beyond the row width are gathered
    # rank by rank (as when flat images give many distinct pHashes one band value); hashes of
    # few bits set sit within k of the rows' zero padding, which must never pair
    k = 10
    hashes = planted_hashes(1500, k, seed=3)
    hashes[::3] &= ~np.uint64(0xFF)
    hashes = np.unique(np.concatenate([hashes, np.uint64(1) << np.arange(64, dtype=np.uint64)]))
    plan = SearchPlan(k, (8,) * 8, (1, 1, 1, 0, 0, 0, 0, 0), 0)
    counts = np.bincount(band_values(hashes, plan, 0))
    assert 1 < row_width(counts) < counts.max()
    i, j, _ = planned_pairs(hashes, plan)
    bi, bj = brute_pairs(hashes, k)
    assert len(bi) > len(hashes) // 4
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(j, bj)


def test_two_sided_blocks_cut_the_search_shuffle_at_web_scale():
    plan = plan_search(896_000_000, 10)
    one_sided = sum(1 + (ball_size(plan.prefix_bits, r) - 1) / 2 for r in plan.radii)
    assert routed_copies(plan) < one_sided / 5  # at the same key bits; 524 copies with one side at 0.9 B


def test_plan_keeps_blocks_within_the_caps_up_to_a_billion_hashes():
    for k in range(1, 18):
        plan = plan_search(10**9, k)
        assert 10**9 / 2**plan.prefix_bits <= HOME_TARGET
        assert largest_block(10**9, plan) <= BLOCK_TARGET
    # no plan fits at the largest thresholds: the blocks are then cut as finely as the bands allow
    widest = plan_search(10**9, MAX_THRESHOLD)
    assert widest.prefix_bits == min(widest.widths) >= 16


@pytest.mark.parametrize(("k", "block_target"), [(10, BLOCK_TARGET), (10, 2000), (6, 500)])
def test_routed_copies_is_what_route_emits(k, block_target):
    hashes = np.unique(np.random.default_rng(k).integers(0, 2**64, 50_000, dtype=np.uint64))
    plan = plan_search(len(hashes), k, block_target)
    parts = list(route(hashes, plan))
    emitted = sum(len(members) for _, members in parts)
    assert emitted / len(hashes) == pytest.approx(routed_copies(plan), rel=0.02)
    # one array per block that a batch (of one chunk) reaches
    visits = max(r for band in range(len(plan.radii)) for r in key_radii(plan, band))
    chunk = hashes[:ROUTE_CHUNK // ball_size(plan.prefix_bits, visits)]
    keys = [key for key, _ in route(chunk, plan)]
    assert len(set(keys)) == len(keys)
    bands = len([r for r in plan.radii if r >= 0])
    # without blocks a hash goes once to each band; with them it also visits smaller prefixes
    assert (routed_copies(plan) == bands) == (plan.prefix_bits == 0)


def test_split_chain_keeps_every_member_within_k_of_its_representative():
    hashes = np.array([(1 << (3 * n)) - 1 for n in range(12)], dtype=np.uint64)  # 3 bits a step
    rep = split_chain(hashes, 4)
    assert rep[0] == 0 and all(rep[r] == r for r in rep)
    assert (popcount(hashes ^ hashes[rep]) <= 4).all()
    assert len(set(rep.tolist())) == 6  # 0-3-6-9...: each representative takes one neighbour


def random_walk(n: int, seed: int) -> np.ndarray:
    """n distinct hashes, each 2 bits from the one before: one long chain of near pairs."""
    rng = np.random.default_rng(seed)
    value, hashes = int(rng.integers(0, 1 << 63)), []
    seen: set[int] = set()
    while len(hashes) < n:
        value ^= (1 << int(rng.integers(64))) | (1 << int(rng.integers(64)))
        if value not in seen:
            seen.add(value)
            hashes.append(value)
    return np.array(hashes, dtype=np.uint64)


def test_split_chain_through_near_pairs_equals_the_scan(monkeypatch):
    hashes = random_walk(3000, seed=4)
    scanned = split_chain(hashes, 10)
    monkeypatch.setattr(near, "SPLIT_SCAN_MAX", 0)  # the way of components too large to scan
    paired = split_chain(hashes, 10)
    assert (paired == scanned).all()
    assert (popcount(hashes ^ hashes[paired]) <= 10).all() and 100 < len(set(paired.tolist())) < 3000


def test_split_clusters_agrees_with_components_then_splits():
    hashes = planted_hashes(800, 8, seed=5)
    rep = split_clusters(hashes, 8)
    assert (popcount(hashes ^ hashes[rep]) <= 8).all()
    assert (rep[rep] == rep).all()
    assert (rep <= np.arange(len(rep))).all()  # the most preferred (first) node represents


def scipy_labels(edges: list[tuple[int, int]], n: int) -> dict[int, int]:
    i, j = np.array(edges).T
    _, label = scipy_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    smallest: dict[int, int] = {}
    for node in range(n):
        smallest.setdefault(int(label[node]), node)
    return {node: smallest[int(label[node])] for node in {*i.tolist(), *j.tolist()}}


@pytest.mark.parametrize("seed", range(4))
def test_star_contraction_equals_scipy_components(seed):
    rng = random.Random(seed)
    n = 3000
    edges = sorted({(a, b) for a, b in ((rng.randrange(n), rng.randrange(n)) for _ in range(2500)) if a != b})
    path = list(range(n, n + 500))
    rng.shuffle(path)
    edges += list(zip(path, path[1:], strict=False))  # one long chain
    labels, record = connected_components(edges)
    assert labels == scipy_labels(edges, n + 500)
    assert record.converged and record.changes[record.rounds] == 0 and record.rounds < record.max_rounds


def test_spanning_stars_keep_the_components_in_one_edge_a_node():
    """A block's pairs go to the component rounds as stars on each component's smallest node:
    a clique of n hashes is n - 1 edges, not n(n-1)/2."""
    rng = np.random.default_rng(3)
    a = rng.integers(-(2**63), 2**63 - 1, 400, dtype=np.int64)[rng.integers(0, 400, 3000)]
    b = rng.integers(-(2**63), 2**63 - 1, 400, dtype=np.int64)[rng.integers(0, 400, 3000)]
    keep = a != b
    pairs = list(zip(a[keep].tolist(), b[keep].tolist(), strict=True))
    centres, leaves = spanning_stars(a[keep], b[keep])
    stars = list(zip(centres.tolist(), leaves.tolist(), strict=True))
    labels = connected_components(pairs)[0]
    assert connected_components(stars)[0] == labels
    assert len(stars) == len(labels) - len(set(labels.values()))  # n - c
    assert all(labels[leaf] == centre < leaf for centre, leaf in stars)  # centre: the smallest
    clique = np.array([3, 1, 2, 5], np.int64)
    i, j = np.triu_indices(4, 1)
    assert sorted(zip(*(x.tolist() for x in spanning_stars(clique[i], clique[j])), strict=True)) == [
        (1, 2), (1, 3), (1, 5)]
    none = spanning_stars(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert [len(x) for x in none] == [0, 0]


@pytest.mark.parametrize("seed", range(3))
def test_unconverged_components_are_reported_and_finished(seed):
    """Out of rounds, the labels left are joined: the components are the converged ones."""
    rng = random.Random(seed)
    path = list(range(200))  # sorted, it needs about log2(200) rounds
    if seed:
        rng.shuffle(path)
    edges = list(zip(path, path[1:], strict=False)) + [(300 + a, 301 + a) for a in range(0, 40, 2)]
    labels, record = connected_components(edges, max_rounds=2)
    assert not record.converged and record.rounds == 2
    assert record.finishing == finishing_by_hand(edges, 2) and record.finishing.links > 0
    assert record.record() == {"max_rounds": 2, "rounds": 2, "converged": False,
                               "changes_per_round": list(record.changes),
                               "finishing": {"links": record.finishing.links,
                                             "labels": record.finishing.labels}}
    assert labels == scipy_labels(edges, 400) == connected_components(edges, max_rounds=40)[0]


def _neighbours(edges) -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for u, v in edges:
        out[u].add(v)
        out[v].add(u)
    return out


def finishing_by_hand(edges, rounds: int) -> Finishing:
    """The links and labels of the finishing step, recounted without memgen.components: the
    rounds on plain sets, then the labels each node is sent (its own and its neighbours',
    each the smallest of a closed neighbourhood), linked to their smallest; distinct links."""
    edges = set(edges)
    for _ in range(rounds):
        nb = _neighbours(edges)  # large-star: larger neighbours to the smallest of the neighbourhood
        edges = {(v, min(nb[u] | {u})) for u in nb for v in nb[u] if v > u}
        smaller: dict[int, set[int]] = defaultdict(set)  # small-star: at each edge's larger end
        for u, v in edges:
            smaller[max(u, v)].add(min(u, v))
        edges = {(v, min(s)) for u, s in smaller.items() for v in s | {u} if v != min(s)}
    nb = _neighbours(edges)
    label = {u: min(nb[u] | {u}) for u in nb}
    sent = [{label[u], *(label[v] for v in nb[u])} for u in nb]
    links = {(min(s), x) for s in sent for x in s if x != min(s)}
    return Finishing(len(links), len({x for link in links for x in link}))


def test_the_finishing_step_is_counted_and_empty_when_converged():
    """The record says how much the one-worker finishing step joined: a sorted path of 8,192
    is out of rounds with links left; one of 4,000, out of rounds too, with none (its labels
    agree, only non-star edges are left); a converged one none."""
    for n, links_left in ((8192, True), (4000, False)):
        edges = [(a, a + 1) for a in range(n)]
        labels, record = connected_components(edges)
        assert not record.converged and set(labels.values()) == {0}
        assert record.finishing == finishing_by_hand(edges, MAX_ROUNDS)
        assert (record.finishing.links > 0) == links_left
    path = list(range(4000))
    random.Random(1).shuffle(path)
    labels, record = connected_components(list(zip(path, path[1:], strict=False)))
    assert record.converged and record.finishing == Finishing(0, 0)
    assert record.record()["finishing"] == {"links": 0, "labels": 0}


def test_star_steps():
    # large-star: node 5 with neighbours 2, 7, 9 hangs its larger neighbours on 2
    assert sorted(large_star(5, [9, 2, 7])[0]) == [(7, 2), (9, 2)] and large_star(5, [9, 2, 7])[1]
    assert large_star(2, [5, 7]) == ([(5, 2), (7, 2)], False)
    # small-star: node 9 with smaller neighbours 4, 6 links 6 and itself to 4
    assert sorted(small_star(9, [6, 4])[0]) == [(6, 4), (9, 4)] and small_star(9, [6, 4])[1]
    assert small_star(9, [4]) == ([(9, 4)], False)


@pytest.mark.parametrize("dtype", [np.uint64, np.int64, np.int32, np.int8])
def test_distinct_equals_numpys_unique(dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    wide = rng.integers(info.min, info.max, 5000, dtype=dtype, endpoint=True)
    repeated = rng.permutation(np.repeat(wide[:9], 4))
    for values in (wide[:0], wide[:1], wide, np.repeat(wide[:50], 3), repeated):
        got, want = distinct(values), np.unique(values)
        assert got.dtype == want.dtype and np.array_equal(got, want)
