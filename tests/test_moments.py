"""MomentsFn (CombineFn): the same moments as numpy whatever the batching, splitting and merge order."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from memgen.stages import moments
from memgen.stages.moments import MomentsFn


def _vectors(n=700, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * [1, 2, 3, 4, 5] + 10.0


def _combine_in_parts(fn, vectors, cuts):
    accs = []
    for part in np.split(vectors, cuts):
        acc = fn.create_accumulator()
        for v in part:
            acc = fn.add_input(acc, v)
        accs.append(acc)
    return fn.extract_output(fn.merge_accumulators(accs))


@pytest.mark.parametrize("cuts", [[], [1], [3, 300, 301], list(range(10, 700, 10))])
def test_split_accumulators_give_numpy_moments(cuts):
    x = _vectors()
    out = _combine_in_parts(MomentsFn(), x, cuts)
    assert out.n == 700
    np.testing.assert_allclose(out.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)


def test_block_size_does_not_change_the_result(monkeypatch):
    x = _vectors()
    reference = _combine_in_parts(MomentsFn(), x, [200])
    for block in (1, 7, 1000):
        monkeypatch.setattr(moments, "BLOCK", block)
        out = _combine_in_parts(MomentsFn(), x, [200])
        np.testing.assert_allclose(out.cov, reference.cov, rtol=1e-10)
        np.testing.assert_allclose(out.mean, reference.mean, rtol=1e-12)


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
            np.testing.assert_allclose(got[key].cov, np.cov(data, rowvar=False), rtol=1e-10, atol=1e-12)

    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(elements, reshuffle=False) | beam.CombinePerKey(MomentsFn())
        assert_that(out, check)
