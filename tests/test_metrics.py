"""memgen.metrics against torch-fidelity, clean-fid and prdc on the same feature arrays, plus invariances.

torch-fidelity and clean-fid need torchvision stubbed to import here
(benchmarks.common.stub_torchvision says why).
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

from benchmarks.common import stub_torchvision
from memgen import metrics
from memgen.metrics import Moments

RTOL = 1e-6  # the bound for agreement with the reference implementations


def _import_references():
    pytest.importorskip("torch", reason="torch==2.13.0 (the vision extra) is needed for the references")
    stub_torchvision()
    fid = pytest.importorskip("torch_fidelity.metric_fid", reason="pip install torch-fidelity --no-deps")
    kid = pytest.importorskip("torch_fidelity.metric_kid", reason="pip install torch-fidelity --no-deps")
    prc = pytest.importorskip("torch_fidelity.metric_prc", reason="pip install torch-fidelity --no-deps")
    cleanfid = pytest.importorskip("cleanfid.fid", reason="pip install clean-fid --no-deps")
    prdc = pytest.importorskip("prdc", reason="pip install prdc")
    return types.SimpleNamespace(fid=fid, kid=kid, prc=prc, cleanfid=cleanfid, prdc=prdc)


@pytest.fixture(scope="module")
def ref():
    return _import_references()


def _sets(n_a=300, n_b=260, d=24, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n_a, d)) @ mix + 2.0
    b = rng.normal(size=(n_b, d)) @ (mix * 1.3) + 2.2
    return a, b


def _rel(x, y):
    return abs(x - y) / max(abs(y), 1e-300)


@pytest.mark.parametrize("shape", [(300, 260, 24), (40, 30, 64)], ids=["full-rank", "singular"])
def test_fd_matches_torch_fidelity_and_clean_fid(ref, shape):
    import torch

    a, b = _sets(*shape)
    ours = metrics.fd_from_moments(Moments.of(a), Moments.of(b))
    stats_a = ref.fid.fid_features_to_statistics(torch.from_numpy(a))
    stats_b = ref.fid.fid_features_to_statistics(torch.from_numpy(b))
    tf = ref.fid.fid_statistics_to_metric(stats_a, stats_b, verbose=False)[ref.fid.KEY_METRIC_FID]
    cf = float(ref.cleanfid.frechet_distance(stats_a["mu"], stats_a["sigma"],
                                             stats_b["mu"], stats_b["sigma"]))
    assert ours > 0
    assert _rel(ours, tf) <= RTOL
    assert _rel(ours, cf) <= RTOL


def test_kid_matches_torch_fidelity_subset_for_subset(ref):
    import torch

    a, b = _sets(200, 150, 16, seed=1)
    ours = metrics.kid(a, b, subsets=20, subset_size=100, seed=7)
    theirs = ref.kid.kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=20, kid_subset_size=100, rng_seed=7,
        verbose=False)
    assert _rel(ours[0], theirs[ref.kid.KEY_METRIC_KID_MEAN]) <= RTOL
    assert _rel(ours[1], theirs[ref.kid.KEY_METRIC_KID_STD]) <= RTOL
    assert ours[1] > 0


def test_kid_takes_every_seed_the_command_line_takes():
    # RandomState refuses seeds from 2**32 up; --seed goes to 2**64 - 1 (a ValueError on a worker)
    a, b = _sets(120, 100, 8, seed=2)
    draws = {seed: metrics.kid(a, b, subsets=5, subset_size=50, seed=seed)
             for seed in (7, 2**32, 2**32 + 7, 2**64 - 1)}
    assert draws[2**32] == metrics.kid(a, b, subsets=5, subset_size=50, seed=2**32)
    assert len(set(draws.values())) == len(draws)  # other seeds, other subsets


def test_kid_per_subset_kernels_match_the_whole_sets_kernels(monkeypatch):
    # Large sets compute each subset's own kernel matrices; small ones take every subset's
    # sums from the whole sets' matrices. Same subsets, same numbers.
    a, b = _sets(200, 150, 16, seed=1)
    dense = metrics.kid(a, b, subsets=20, subset_size=100, seed=7)
    monkeypatch.setattr(metrics, "KID_DENSE_ROWS", 0)
    per_subset = metrics.kid(a, b, subsets=20, subset_size=100, seed=7)
    assert per_subset == pytest.approx(dense, rel=1e-9)
    assert dense[1] > 0


def test_kid_on_whole_sets_matches_clean_fid(ref):
    # With one subset as large as both sets every draw is a permutation, which the
    # unbiased MMD^2 does not see, so clean-fid's unseeded draw gives the same number.
    a, b = _sets(120, 120, 16, seed=2)
    mean, std = metrics.kid(a, b, subsets=1, subset_size=120)
    theirs = ref.cleanfid.kernel_distance(a, b, num_subsets=1, max_subset_size=120)
    assert _rel(mean, theirs) <= RTOL
    assert std == 0.0


def test_mmd2_matches_torch_fidelity_kernel_mmd(ref):
    a, b = _sets(90, 90, 12, seed=3)
    theirs = ref.kid.kernel_mmd(a, b, kid_kernel="poly", kid_kernel_poly_degree=3,
                                kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    assert _rel(metrics.mmd2_unbiased(a, b), theirs) <= RTOL


def _binary(n, seed):
    """pHash-like 0/1 vectors: distances are square roots of integers, full of ties."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, 64)) < 0.5).astype(np.float64)


@pytest.mark.parametrize("kind", ["continuous", "binary"])
def test_precision_recall_match_torch_fidelity(ref, kind):
    import torch

    if kind == "continuous":
        real, fake = _sets(150, 120, 10, seed=4)
    else:
        real, fake = _binary(150, 5), _binary(120, 6)
        fake[:30] = real[:30]  # shared rows put distances exactly on the ball boundaries
    ours = metrics.precision_recall(real, fake, k=3)
    # torch-fidelity's convention: features_1 = generated (fake), features_2 = real.
    theirs = ref.prc.calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real),
                                                     neighborhood=3)
    assert ours == pytest.approx(theirs, rel=RTOL)
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1


def test_precision_recall_density_coverage_match_prdc(ref):
    real, fake = _sets(150, 120, 10, seed=8)
    for k in (3, 5):
        theirs = ref.prdc.compute_prdc(real, fake, nearest_k=k)
        # Continuous data: no distance sits on a ball boundary, so prdc's open balls
        # and Kynkäänniemi's closed ones agree.
        assert metrics.precision_recall(real, fake, k=k) == pytest.approx(
            (theirs["precision"], theirs["recall"]), rel=RTOL)
        assert metrics.density_coverage(real, fake, k=k) == pytest.approx(
            (theirs["density"], theirs["coverage"]), rel=RTOL)


@pytest.mark.parametrize("seed", range(6))
def test_k_nn_metrics_of_a_sample_of_the_real_set_match_distances_from_differences(seed):
    """A sample drawn from the memory shares its rows: each copy sits exactly on the boundary
    of the balls its original bounds. The dot-product expansion rounded x @ x.T and x @ y.T
    differently and counted some inside the open balls (density off by up to 0.008)."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    real = rng.random((300, 192)).astype(np.float32)  # thumbnails, as the subsets stack them
    fake = real[rng.choice(300, 100, replace=False)]
    d_real, d_cross = cdist(real, real), cdist(real, fake)
    radii = {k: np.sort(d_real, axis=1)[:, k][:, None] for k in (metrics.PR_K, metrics.DC_K)}
    inside = d_cross < radii[metrics.DC_K]
    assert metrics.density_coverage(real, fake) == (inside.sum(axis=0).mean() / metrics.DC_K,
                                                    inside.any(axis=1).mean())
    fake_radii = np.sort(cdist(fake, fake), axis=1)[:, metrics.PR_K][None, :]
    assert metrics.precision_recall(real, fake) == ((d_cross <= radii[metrics.PR_K]).any(axis=0).mean(),
                                                    (d_cross <= fake_radii).any(axis=1).mean())


def test_fd_of_a_set_with_itself_is_zero_and_fd_is_symmetric():
    a, b = _sets()
    ma, mb = Moments.of(a), Moments.of(b)
    assert abs(metrics.fd_from_moments(ma, ma)) < 1e-8
    assert metrics.fd_from_moments(ma, mb) == pytest.approx(metrics.fd_from_moments(mb, ma), rel=1e-9)
    # two 64-bit hashes: a rank-1 covariance, whose zero eigenvalues round to +-1e-13 and
    # their square roots to ~1e-6 each; the distance rounded to -6e-6 before it was clipped
    two = Moments.of(np.random.default_rng(0).integers(0, 2, (2, 64)).astype(float))
    assert metrics.fd_from_moments(two, two) == 0.0


def test_fd_grows_with_the_shift_of_the_mean():
    a, _ = _sets()
    ma = Moments.of(a)
    assert metrics.fd_from_moments(ma, Moments.of(a + 0.5)) == pytest.approx(0.25 * a.shape[1], rel=1e-9)


def test_kid_is_symmetric_and_near_zero_for_one_distribution():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 0.5
    assert metrics.mmd2_unbiased(a, b) == pytest.approx(metrics.mmd2_unbiased(b, a), rel=1e-12)
    same_mean, _ = metrics.kid(a[:100], a[100:], subsets=10, subset_size=50)
    apart_mean, _ = metrics.kid(a, b, subsets=10, subset_size=50)
    assert abs(same_mean) < apart_mean / 5


def _binomial_tail(k, n):
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def test_c2st_p_value_is_the_fair_coin_tail():
    a, b = _sets(80, 80, 6, seed=11)
    result = metrics.c2st(a, b, seed=3)
    assert result.n_test == 80
    correct = round(result.accuracy * result.n_test)
    assert result.p_value == pytest.approx(_binomial_tail(correct, result.n_test), rel=1e-9)


def test_c2st_separates_far_sets_and_flags_copies():
    a, _ = _sets(200, 2, 6, seed=12)
    far = metrics.c2st(a, a + 10.0)
    assert far.accuracy == 1.0 and far.p_value < 1e-20
    same = metrics.c2st(a[:100], a[100:], seed=1)
    assert same.p_value > 1e-3
    # A "sample" made of copies of the other set: each test copy's twin may sit in the
    # other set's training half, so the classifier does worse than a coin.
    copies = metrics.c2st(a, a[::-1].copy())
    assert copies.accuracy < 0.4


def test_compare_fills_every_metric_and_leaves_small_sets_empty():
    a, b = _sets(60, 50, 6)
    row = metrics.compare(Moments.of(a), Moments.of(b), a, b, kid_subsets=5)
    assert all(row[key] is not None for key in metrics.METRIC_KEYS)
    assert (row["n_a"], row["n_b"]) == (60, 50)
    tiny = metrics.compare(Moments.of(a[:3]), Moments.of(b[:3]), a[:3], b[:3], kid_subsets=5)
    assert tiny["fd"] is not None and tiny["kid_mean"] is not None
    assert tiny["precision"] is None and tiny["density"] is None and tiny["c2st_accuracy"] is None


def test_kid_std_is_null_when_every_subset_is_both_sets_whole():
    """Two sets of 50: each of KID's subsets is both sets whole, so the spread is 0 by
    construction; it was reported as 0.0, an uncertainty it does not measure."""
    a, b = _sets(60, 50, 6)
    equal = metrics.compare(Moments.of(a[:50]), Moments.of(b), a[:50], b, kid_subsets=5)
    assert equal["kid_std"] is None and equal["kid_mean"] is not None and equal["n_kid_subset"] == 50
    assert metrics.kid(a[:50], b, subsets=5)[1] == 0.0  # what it was: torch-fidelity's number too
    unequal = metrics.compare(Moments.of(a), Moments.of(b), a, b, kid_subsets=5)
    assert unequal["kid_std"] > 0 and unequal["n_kid_subset"] == 50  # subsets of a vary


def test_distances_section_orders_rows_by_pair_then_space():
    rows = [{"a": a, "b": b, "space": s} for a, b in (("memory", "sample"), ("reference", "sample"))
            for s in ("efficientnet", "colour", "phash")]
    section = metrics.distances_section(rows, [("reference", "sample"), ("memory", "sample")],
                                        ("phash", "colour", "efficientnet"), subset_cap=100, seed=3)
    assert [(r["a"], r["space"]) for r in section["rows"]] == [
        ("reference", "phash"), ("reference", "colour"), ("reference", "efficientnet"),
        ("memory", "phash"), ("memory", "colour"), ("memory", "efficientnet")]
    assert (section["subset_cap"], section["seed"], section["precision_recall_k"]) == (100, 3, 3)
