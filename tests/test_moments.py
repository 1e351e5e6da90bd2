"""MomentsFn (CombineFn): exact moments, the same bits whatever the batching, splitting and merge order."""

from __future__ import annotations

import pickle
import tracemalloc
from fractions import Fraction

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from memgen.stages import moments
from memgen.stages.moments import FRACTION_BITS, MomentsFn


def _vectors(n=700, d=5, seed=0):
    """Within the feature spaces' bound, with an offset against the spread like the embedding's."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(size=(n, d)) * [0.1, 0.2, 0.3, 0.4, 0.5][:d] + 3.0, -7.9, 7.9)


def _combine_in_parts(vectors, cuts, reverse=False):
    fn = MomentsFn()
    accs = []
    for part in np.split(vectors, cuts):
        acc = fn.create_accumulator()
        for v in part:
            acc = fn.add_input(acc, v)
        accs.append(acc)
    merged = fn.merge_accumulators(accs[::-1] if reverse else accs)
    return fn.extract_output(fn.merge_accumulators([fn.create_accumulator(), merged]))


def _exact(vectors):
    """The moments of the vectors on the fixed point grid, in rational arithmetic, rounded once."""
    q = np.rint(np.asarray(vectors) * 2.0**FRACTION_BITS).astype(np.int64).astype(object)
    n, total = len(q), q.sum(axis=0)
    centred = (q.T @ q) * n - np.outer(total, total)
    mean = [float(Fraction(int(s), n << FRACTION_BITS)) for s in total]
    m2 = [[float(Fraction(int(v), n << 2 * FRACTION_BITS)) for v in row] for row in centred]
    return np.array(mean), np.array(m2)


@pytest.mark.parametrize("cuts", [[], [1], [3, 300, 301], list(range(10, 700, 10))])
def test_any_split_and_merge_order_gives_the_same_bits(cuts):
    x = _vectors()
    reference = _combine_in_parts(x, [])
    for out in (_combine_in_parts(x, cuts), _combine_in_parts(x, cuts, reverse=True),
                _combine_in_parts(x[::-1], cuts)):
        assert out.n == 700
        np.testing.assert_array_equal(out.mean, reference.mean)
        np.testing.assert_array_equal(out.m2, reference.m2)


@pytest.mark.parametrize("block", [1, 7, 256, 1000])
def test_block_size_does_not_change_the_bits(monkeypatch, block):
    x = _vectors(1300)
    reference = _combine_in_parts(x, [200])
    monkeypatch.setattr(moments, "BLOCK", block)
    out = _combine_in_parts(x, [200])
    np.testing.assert_array_equal(out.m2, reference.m2)
    np.testing.assert_array_equal(out.mean, reference.mean)


def test_the_moments_are_the_exact_ones_rounded_and_numpy_within_the_grid():
    x = _vectors(600)
    out = _combine_in_parts(x, [250])
    mean, m2 = _exact(x)
    np.testing.assert_allclose(out.mean, mean, rtol=1e-15)
    np.testing.assert_allclose(out.m2, m2, rtol=1e-14)
    # the grid moves a value by at most 2^-20: far below what any distance can see
    np.testing.assert_allclose(out.mean, x.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(out.cov, np.cov(x, rowvar=False), rtol=1e-4, atol=1e-8)


def test_digits_are_kept_when_the_mean_dwarfs_the_spread():
    rng = np.random.default_rng(9)
    x = -7.5 + rng.normal(size=(1000, 3)) * 1e-3
    mean, m2 = _exact(x)
    out = _combine_in_parts(x, list(range(100, 1000, 100)))
    np.testing.assert_allclose(out.m2, m2, rtol=1e-12)  # raw sums in float64 would lose ~7 digits here
    flat = _combine_in_parts(np.full((900, 4), 5.123), [450])
    assert not flat.m2.any()


def test_exact_at_billions_of_vectors():
    # Doubling by merging an accumulator with itself: the mean stays, M2 doubles exactly,
    # while the sums of outer products pass 2^63 (they live in two limbs).
    fn = MomentsFn()
    x = np.concatenate([_vectors(300, 4), np.full((1, 4), 7.99), np.full((1, 4), -7.99)])
    acc = fn.create_accumulator()
    for v in x:
        acc = fn.add_input(acc, v)
    base = fn.extract_output(fn.merge_accumulators([acc]))
    for _ in range(30):
        acc = fn.merge_accumulators([acc, acc])
    out = fn.extract_output(acc)
    assert out.n == len(x) << 30
    np.testing.assert_array_equal(out.mean, base.mean)
    np.testing.assert_array_equal(out.m2, base.m2 * 2.0**30)
    with pytest.raises(ValueError, match="more than 549755813888 vectors"):  # int64 would wrap
        fn.merge_accumulators([acc, acc])


def _accumulator_of(vector, n):
    """An accumulator of n copies of `vector`, by merging doublings (n up to billions)."""
    fn = MomentsFn()
    power, total = fn.compact(fn.add_input(fn.create_accumulator(), vector)), fn.create_accumulator()
    power.fold()
    while n:
        if n & 1:
            total = fn.merge_accumulators([total, power])
        power, n = fn.merge_accumulators([power, power]), n >> 1
    return total


@pytest.mark.parametrize("n", [58_229_589, 29_013_643, 3])
def test_a_flat_set_has_no_spread_at_any_size(n):
    # a/n is exact for a flat set: a a^T / n rounded twice left +-1e-14 beside the exact 0
    out = MomentsFn().extract_output(_accumulator_of(np.full(4, 0.7802639007568359), n))
    assert out.n == n and not out.m2.any()


def test_vectors_of_other_lengths_are_refused():
    fn = MomentsFn()
    with pytest.raises(ValueError, match="1-d vector"):
        fn.add_input(fn.create_accumulator(), 3.0)
    acc = fn.create_accumulator()
    for v in [np.zeros(4)] * 3 + [np.zeros(1)]:
        acc = fn.add_input(acc, v)
    with pytest.raises(ValueError, match="different lengths"):
        fn.extract_output(acc)
    one, four = fn.create_accumulator(), fn.create_accumulator()
    fn.add_input(one, np.zeros(1)).fold()
    fn.add_input(four, np.zeros(4)).fold()
    with pytest.raises(ValueError, match="different lengths: 1 and 4"):  # numpy broadcast them
        fn.merge_accumulators([one, four])


def test_what_a_runner_shuffles_is_no_larger_than_needed():
    """compact() before the shuffle folded a bundle's one vector into 1280 x 1280 sums (19.7 MB)."""
    fn, d = MomentsFn(), 1280
    few = fn.create_accumulator()
    for v in np.random.default_rng(0).uniform(0, 6, (10, d)):
        few = fn.add_input(few, v)
    assert len(pickle.dumps(fn.compact(few))) < 11 * 8 * d
    many = fn.compact(fn.merge_accumulators([few] * 60))  # 600 vectors: sums are smaller now
    encoded = pickle.dumps(many)
    assert len(encoded) < 0.55 * 12 * d * d  # the sums' upper triangles, 12 bytes an entry
    back = fn.extract_output(pickle.loads(encoded))
    np.testing.assert_array_equal(back.m2, fn.extract_output(many).m2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 8.0, -9.5])
def test_a_value_outside_the_grid_is_refused(bad):
    x = _vectors(10)
    x[4, 2] = bad
    with pytest.raises(ValueError, match="finite and below 8"):
        _combine_in_parts(x, [])


def test_no_input_gives_none():
    fn = MomentsFn()
    assert fn.extract_output(fn.merge_accumulators([fn.create_accumulator()])) is None


def test_combine_per_key_in_a_pipeline():
    x, y = _vectors(300, seed=1), _vectors(40, seed=2)
    elements = [("x", v) for v in x] + [("y", v) for v in y]

    def check(outputs):
        got = dict(outputs)
        assert sorted(got) == ["x", "y"]
        for key, data in (("x", x), ("y", y)):
            assert got[key].n == len(data)
            mean, m2 = _exact(data)
            np.testing.assert_allclose(got[key].mean, mean, rtol=1e-15)
            np.testing.assert_allclose(got[key].m2, m2, rtol=1e-14)

    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(elements, reshuffle=False) | beam.CombinePerKey(MomentsFn())
        assert_that(out, check)


def test_merging_many_accumulators_folds_as_it_goes():
    """compact() ships up to BLOCK - 1 vectors an accumulator; the merge stacked every
    accumulator's vectors at once (the memory's set: millions of vectors on one worker)."""
    fn, rng = MomentsFn(), np.random.default_rng(3)
    accs = []
    for _ in range(60):
        acc = fn.create_accumulator()
        for v in rng.uniform(0, 6, (300, 256)).astype(np.float32):
            acc = fn.add_input(acc, v)
        accs.append(fn.compact(acc))
    assert all(acc.pending for acc in accs)  # 300 float32 vectors are smaller than 256 x 256 sums
    tracemalloc.start()
    merged = fn.merge_accumulators(accs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert merged.n + len(merged.pending) == 18_000
    assert peak < 16 << 20, peak  # all stacked at once in float64: 37 MB
