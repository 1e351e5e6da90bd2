"""Pure sampling core: keys, top-n merge, inclusion probabilities (with statistical
tests against theory and an independent simulation), safe names, contact sheet."""

from __future__ import annotations

import hashlib
import io
import math
import posixpath

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from memgen import sampling
from memgen.contact_sheet import PAD, TILE, contact_sheet, thumbnail
from memgen.safe_names import EXTENSIONS, extension, safe_join, safe_stem, sample_stem
from memgen.shards import IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES


def ids(count: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(count)]


def draw(seed: int, image_ids: list[str], weights: list[int], n: int) -> list[str]:
    """The sample of the pure core (what the Beam pipeline must reproduce)."""
    mode = "weighted" if any(w != 1 for w in weights) else "uniform"
    found = sampling.candidates(seed, mode, "part", image_ids, weights)
    chosen, _ = sampling.choose(sampling.top(found, n + 1), n, seed)
    return [c.image_id for c in chosen]


# --- keys ---------------------------------------------------------------------------------

def test_unit_is_a_keyed_blake2b_golden_value():
    assert sampling.unit(7, "abc") == 0.5654630419053339  # guards the key against any change
    assert sampling.unit(7, "abc") != sampling.unit(8, "abc")
    assert sampling.unit(7, "abc") != sampling.unit(7, "abd")


def test_unit_is_strictly_inside_0_1_and_uniform():
    us = np.array([sampling.unit(3, i) for i in ids(20000)])
    assert 0 < us.min() and us.max() < 1
    assert stats.kstest(us, "uniform").pvalue > 1e-3


def test_keys_are_log_ares_keys():
    u = sampling.unit(5, "x")
    assert sampling.sample_key(5, "x", 1) == math.log(u)
    assert sampling.sample_key(5, "x", 4) == pytest.approx(math.log(u ** (1 / 4)))
    assert sampling.weight_of(7, "uniform") == 1
    assert sampling.weight_of(7, "weighted") == 7
    assert sampling.weight_of(0, "weighted") == 1


# --- top-n merge --------------------------------------------------------------------------

def test_merge_of_partial_tops_equals_top_of_union_whatever_the_partition():
    population = list(sampling.candidates(11, "weighted", "p", ids(500), [1 + i % 7 for i in range(500)]))
    expected = sorted(population, reverse=True)[:31]
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 6, len(population))
        parts = [sampling.top([c for c, lab in zip(population, labels, strict=True) if lab == k], 31)
                 for k in range(6)]
        rng.shuffle(parts)
        tree = sampling.merge([sampling.merge(parts[:3], 31), sampling.merge(parts[3:], 31)], 31)
        assert tree == expected
        one_by_one: list = []
        for c in rng.permutation(len(population)):  # as a CombineFn adding single inputs
            one_by_one = sampling.merge([one_by_one, [tuple(population[c])]], 31)
        assert one_by_one == [tuple(c) for c in expected]


def test_choose_ranks_threshold_and_conditional_probabilities():
    population = list(sampling.candidates(2, "weighted", "p", ids(50), [1, 2, 5] * 16 + [1, 1]))
    chosen, tau = sampling.choose(sampling.top(population, 11), 10, 2)
    ordered = sorted(population, reverse=True)
    assert [sampling.Candidate(*c[1:6]) for c in chosen] == ordered[:10]
    assert [c.rank for c in chosen] == list(range(10))
    assert tau == ordered[10].key
    for c in chosen:
        assert c.key > tau
        assert c.inclusion_probability == pytest.approx(1 - math.exp(c.weight * tau))
        assert c.u == sampling.unit(2, c.image_id)
    everything, tau = sampling.choose(population, 80, 2)
    assert tau is None and len(everything) == 50
    assert all(c.inclusion_probability == 1.0 for c in everything)


def test_samples_are_nested_prefix_of_larger_sample_is_smaller_sample():
    image_ids, weights = ids(200), [1 + i % 4 for i in range(200)]
    assert draw(9, image_ids, weights, 100)[:25] == draw(9, image_ids, weights, 25)


def test_rank_conditioned_horvitz_thompson_is_unbiased():
    """sum(f / p) over the sample estimates sum(f) over the memory (here: copies)."""
    image_ids, weights = ids(60), [1 + (i * 7) % 11 for i in range(60)]
    estimates = []
    for seed in range(2000):
        found = sampling.candidates(seed, "weighted", "p", image_ids, weights)
        chosen, _ = sampling.choose(sampling.top(found, 9), 8, seed)
        estimates.append(sum(c.copies / c.inclusion_probability for c in chosen))
    mean, se = np.mean(estimates), np.std(estimates) / math.sqrt(len(estimates))
    assert abs(mean - sum(weights)) < 4 * se


# --- inclusion frequencies vs theory ------------------------------------------------------

def inclusion_counts(image_ids, weights, n, seeds) -> np.ndarray:
    position = {i: k for k, i in enumerate(image_ids)}
    counts = np.zeros(len(image_ids))
    for seed in seeds:
        for i in draw(seed, image_ids, weights, n):
            counts[position[i]] += 1
    return counts


def uniform_srswor_p_value(counts: np.ndarray, n: int, draws: int) -> float:
    """Pearson test for a simple random sample without replacement.

    Indicator covariance is pi(1-pi) * N/(N-1) * (I - 11'/N), so
    (N-1)/N * sum (O-E)^2 / (S pi (1-pi)) ~ chi2(N-1)."""
    big_n = len(counts)
    pi = n / big_n
    x = ((counts - draws * pi) ** 2).sum() / (draws * pi * (1 - pi))
    return float(stats.chi2.sf(x * (big_n - 1) / big_n, big_n - 1))


def test_uniform_inclusion_frequencies_are_n_over_N():
    image_ids, n, draws = ids(40), 10, 2000
    counts = inclusion_counts(image_ids, [1] * 40, n, range(draws))
    assert counts.sum() == n * draws
    assert uniform_srswor_p_value(counts, n, draws) > 1e-3
    for c in counts:  # every image separately, Bonferroni over 40
        assert stats.binomtest(int(c), draws, n / 40).pvalue > 1e-3 / 40


def test_the_uniform_test_catches_a_biased_sampler():
    """Same test, sampler with half the images at weight 2: it must be rejected."""
    image_ids, n, draws = ids(40), 10, 2000
    counts = inclusion_counts(image_ids, [1] * 20 + [2] * 20, n, range(draws))
    assert uniform_srswor_p_value(counts, n, draws) < 1e-6


WEIGHTS = [1, 1, 1, 2, 2, 3, 5, 8, 13, 40, 1, 2]


def test_ares_theory_matches_an_independent_simulation():
    pi = sampling.ares_inclusion_probabilities(WEIGHTS, 4)
    assert pi.sum() == pytest.approx(4, abs=1e-6)
    rng = np.random.default_rng(1)
    draws = 100_000
    keys = rng.random((draws, len(WEIGHTS))) ** (1 / np.array(WEIGHTS, float))  # u^(1/w), not logs
    freq = np.bincount(np.argsort(-keys, axis=1)[:, :4].ravel(), minlength=len(WEIGHTS)) / draws
    assert np.all(np.abs(freq - pi) < 5 * np.sqrt(pi * (1 - pi) / draws))
    assert sampling.ares_inclusion_probabilities([3] * 10, 3) == pytest.approx([0.3] * 10)
    assert sampling.ares_inclusion_probabilities([1, 2], 5).tolist() == [1.0, 1.0]
    assert sampling.ares_inclusion_probabilities([1, 2], 0).tolist() == [0.0, 0.0]


def test_ares_probabilities_of_light_images_among_very_heavy_ones():
    """A crawl's logo with 100,000 copies beside single images: the light images keep their
    share (a quadrature over the key's time missed it and gave them 0, so f/pi was infinite)."""
    weights = [1] * 10 + [1000, 100_000]
    pi = sampling.ares_inclusion_probabilities(weights, 1)
    assert pi == pytest.approx(np.array(weights) / sum(weights), rel=1e-6)  # n = 1: w_i / W
    pi = sampling.ares_inclusion_probabilities([1, 1e6], 1)
    assert pi == pytest.approx([1 / (1e6 + 1), 1e6 / (1e6 + 1)])
    pi = sampling.ares_inclusion_probabilities([1] * 20 + [20_000] * 5, 5)
    assert pi.sum() == pytest.approx(5, abs=1e-8)
    assert pi[:20] == pytest.approx([pi[0]] * 20) and pi[0] > 0


def test_ares_is_not_proportional_to_weight():
    pi = sampling.ares_inclusion_probabilities(WEIGHTS, 4)
    proportional = np.minimum(1, 4 * np.array(WEIGHTS) / sum(WEIGHTS))
    assert pi[0] > 1.5 * proportional[0]  # light images get far more than their share
    assert pi[9] < proportional[9]  # and the heaviest is not certain


def test_weighted_inclusion_frequencies_match_ares_theory():
    image_ids, n, draws = ids(len(WEIGHTS)), 4, 3000
    counts = inclusion_counts(image_ids, WEIGHTS, n, range(draws))
    pi = sampling.ares_inclusion_probabilities(WEIGHTS, n)
    z = (counts - draws * pi) / np.sqrt(draws * pi * (1 - pi))
    # sum z^2 is at most chi2(N) under the theory (the fixed sample size only lowers it)
    assert stats.chi2.sf((z**2).sum(), len(WEIGHTS)) > 1e-3
    assert np.all(np.abs(z) < stats.norm.isf(1e-3 / len(WEIGHTS) / 2))
    proportional = n * np.array(WEIGHTS) / sum(WEIGHTS)
    light = proportional < 1  # a proportional sampler would take the others with certainty
    p = proportional[light]
    z_prop = (counts[light] - draws * p) / np.sqrt(draws * p * (1 - p))
    assert stats.chi2.sf((z_prop**2).sum(), light.sum()) < 1e-6


# --- safe names ---------------------------------------------------------------------------

HOSTILE = ["../../x", "/etc/passwd", "a\x00b", "x" * 5000, "..", ".", "", "C:\\win\\x.jpg",
           "shard.tar#../../../evil", "s#/abs/path", "ünï cödé ☃.jpg", ".hidden", "-rf"]


@pytest.mark.parametrize("key", HOSTILE)
def test_hostile_keys_give_a_single_plain_name(key):
    name = f"{sample_stem(3, key)}.{extension('JPEG')}"
    assert safe_join("/out/images", name) == "/out/images/" + name
    assert posixpath.normpath(posixpath.join("/out/images", name)).startswith("/out/images/")
    assert len(name.encode()) <= 100 and name.startswith("000000003_")
    assert name.count(".") == 1  # webdataset splits the key at the first dot
    assert all(ch.isalnum() and ch.isascii() or ch in "_-." for ch in name)


def test_every_picture_format_pillow_reads_is_named_by_one_of_its_own_extensions():
    Image.init()
    not_pictures = {"EPS", "MPEG", "BUFR", "GRIB", "HDF5", "WMF", "IPTC"}  # documents, video, stubs
    assert set(Image.OPEN) - not_pictures <= set(EXTENSIONS)
    registered = Image.registered_extensions()
    for fmt, ext in EXTENSIONS.items():  # its own; SPIDER, IMT, ... have none; MPO is JPEG's
        own = registered.get(f".{ext}")
        assert own == fmt or (own is None and ext == fmt.lower()) or (fmt, own) == ("MPO", "JPEG"), fmt


def test_safe_stem_and_extension():
    assert safe_stem("cats/0001.jpg") == "cats_0001_jpg"
    assert safe_stem("../..") == "image"
    assert extension("JPEG") == "jpg" and extension("MPO") == "jpg" and extension("WEBP") == "webp"
    assert extension("../x") == "x"
    assert all(f".{ext}" in IMAGE_SUFFIXES + OTHER_IMAGE_SUFFIXES for ext in EXTENSIONS.values())  # read back
    assert extension("JPEG2000") == "jp2"
    # the key follows the '#' after a shard's name; a file name may hold '#' itself
    assert sample_stem(1, "/d/c#d.jpg") == "000000001_c_d_jpg"
    assert sample_stem(1, "s3://b/t#1.tar#k#2") == "000000001_k_2"


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "a\x00", "/abs", "a\\b", "x" * 300])
def test_safe_join_refuses_unsafe_names(name):
    with pytest.raises(ValueError):
        safe_join("/out", name)


# --- contact sheet ------------------------------------------------------------------------

def png(size, color, mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG")
    return out.getvalue()


def test_thumbnail_fits_the_tile_and_bad_bytes_give_none():
    thumb = Image.open(io.BytesIO(thumbnail(png((400, 100), (255, 0, 0)))))
    assert thumb.format == "JPEG" and max(thumb.size) == TILE and thumb.size[1] == TILE // 4
    assert thumbnail(b"not an image") is None
    sixteen = Image.open(io.BytesIO(thumbnail(png((64, 64), 40000, "I;16"))))
    assert 150 < sixteen.convert("L").getpixel((5, 5)) < 160  # 40000/256, scaled not clipped


def test_contact_sheet_grid_in_rank_order():
    thumbs = [thumbnail(png((50, 50), (10 * i, 0, 0))) for i in range(5)] + [None]
    sheet = contact_sheet(thumbs)
    assert sheet.size == (3 * (TILE + PAD) + PAD, 2 * (TILE + PAD) + PAD)
    centre = TILE // 2
    red = [sheet.getpixel((PAD + k * (TILE + PAD) + centre, PAD + centre))[0] for k in range(3)]
    assert red[0] < red[1] < red[2]
    grey = sheet.getpixel((PAD + 2 * (TILE + PAD) + 10, PAD + (TILE + PAD) + 40))
    assert grey == (96, 96, 96)  # the undecodable one: placeholder tile
