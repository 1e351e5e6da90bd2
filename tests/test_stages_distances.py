"""SetDistances, SeededSubset and CopyHistograms in a pipeline, against the pure functions."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from memgen import copying, metrics
from memgen.stages.distances import MEMORY_BATCH, CopyHistograms, SeededSubset, SetDistances, subset_rank
from memgen.stages.moments import FRACTION_BITS


def _items(seed=0):
    rng = np.random.default_rng(seed)
    sets = {"reference": rng.normal(size=(30, 4)), "sample": rng.normal(size=(25, 4)) + 0.3}
    items = []
    for name, rows in sets.items():
        for i, row in enumerate(rows):
            bits = (row > 0).astype(np.float32)
            items.append((name, f"{name}-{i:03d}", {"thumbnail": row.astype(np.float32), "phash": bits}))
    return items


def _expected_rows(items, cap, seed):
    rows = []
    for space in ("phash", "thumbnail"):
        stats = {}
        for name in ("reference", "sample"):
            mine = [(subset_rank(seed, name, image_id), feats[space])
                    for n, image_id, feats in items if n == name]
            all_vectors = np.stack([v for _, v in mine]).astype(np.float64)
            all_vectors = np.rint(all_vectors * 2.0**FRACTION_BITS) / 2.0**FRACTION_BITS  # MomentsFn's grid
            subset = np.stack([v for _, v in sorted(mine, key=lambda e: e[0])[:cap]])
            stats[name] = (metrics.Moments.of(all_vectors), subset)
        rows += [{"space": space, **row}
                 for row in metrics.compare_sets(stats, [("reference", "sample")], seed=seed, kid_subsets=5)]
    return rows


@pytest.mark.parametrize("shuffle_seed", [None, 3])
def test_set_distances_match_the_pure_metrics_whatever_the_input_order(shuffle_seed):
    items = _items()
    if shuffle_seed is not None:
        items = [items[i] for i in np.random.default_rng(shuffle_seed).permutation(len(items))]
    expected = _expected_rows(_items(), cap=20, seed=4)

    def check(rows):
        rows = sorted(rows, key=lambda r: r["space"])
        assert [(r["space"], r["a"], r["b"]) for r in rows] == [
            ("phash", "reference", "sample"), ("thumbnail", "reference", "sample")]
        for got, want in zip(rows, expected, strict=True):
            assert got["n_a"] == 30 and got["n_subset_a"] == 20 and got["n_subset_b"] == 20
            assert set(got) == set(want)
            numbers = [k for k, v in want.items() if isinstance(v, int | float)]  # labels and nulls: equal
            labels = [k for k in want if k not in numbers]
            assert [got[k] for k in labels] == [want[k] for k in labels]
            assert [got[k] for k in numbers] == pytest.approx([want[k] for k in numbers], rel=1e-9, abs=1e-12)

    with TestPipeline(runner="FnApiRunner") as p:
        rows = (p | beam.Create(items, reshuffle=False)
                | SetDistances([("reference", "sample"), ("reference", "memory")],
                               cap=20, seed=4, kid_subsets=5))
        assert_that(rows, check)


def test_seeded_subset_keeps_the_smallest_ranks_in_rank_order():
    vectors = [(("s", "x"), (f"id{i}", np.full(2, i, np.float32))) for i in range(50)]
    ranks = sorted((subset_rank(9, "s", f"id{i}"), i) for i in range(50))
    expected = np.array([[i, i] for _, i in ranks[:7]], np.float32)

    def check(out):
        ((key, rows),) = out
        assert key == ("s", "x")
        np.testing.assert_array_equal(rows, expected)

    with TestPipeline(runner="FnApiRunner") as p:
        assert_that(p | beam.Create(vectors, reshuffle=False) | SeededSubset(cap=7, seed=9), check)


def test_subset_rank_is_keyed_by_seed_and_set():
    assert subset_rank(1, "a", "x") == subset_rank(1, "a", "x")
    assert len({subset_rank(1, "a", "x"), subset_rank(2, "a", "x"), subset_rank(1, "b", "x")}) == 3


@pytest.mark.parametrize("memory_size", [200, 3 * MEMORY_BATCH // 2])  # one batch, several
def test_copy_histograms_match_the_pure_functions(memory_size):
    rng = np.random.default_rng(5)
    memory = rng.integers(-(2**63), 2**63 - 1, size=memory_size, dtype=np.int64)
    sample = memory[:30]
    reference = np.concatenate([memory[:3] ^ np.int64(0b101), rng.integers(0, 2**62, 20, dtype=np.int64)])
    queries = [("sample", int(h)) for h in sample] + [("reference", int(h)) for h in reference]
    expected = [(name, copying.distance_histogram(copying.nearest_distances(hashes, memory), 16).tolist())
                for name, hashes in (("sample", sample), ("reference", reference))]

    with TestPipeline(runner="FnApiRunner") as p:
        with_repeat = [int(h) for h in memory] + [int(memory[0])]
        memory_hashes = p | "Memory" >> beam.Create(with_repeat, reshuffle=False)
        out = (p | "Queries" >> beam.Create(queries, reshuffle=False)
               | CopyHistograms(memory_hashes, radius=16)
               | beam.MapTuple(lambda name, hist: (name, hist.tolist())))
        assert_that(out, equal_to(expected))
    assert expected[0][1][0] == 30 and expected[1][1][2] == 3


def test_copy_histograms_of_an_empty_memory_put_every_query_beyond_the_radius():
    queries = [("sample", 5), ("sample", 5), ("reference", -3)]
    with TestPipeline(runner="FnApiRunner") as p:
        memory_hashes = p | "Memory" >> beam.Create([], reshuffle=False)
        out = (p | "Queries" >> beam.Create(queries, reshuffle=False)
               | CopyHistograms(memory_hashes, radius=16)
               | beam.MapTuple(lambda name, hist: (name, hist.tolist())))
        assert_that(out, equal_to([("sample", [0] * 17 + [2]), ("reference", [0] * 17 + [1])]))
