"""memgen.copying: nearest Hamming distances (agree with a plain loop),
histograms and rates, copy rate 100% for a sample of the memory, contamination on real photos."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from memgen import copying
from memgen.fingerprint import FingerprintConfig, fingerprint, hash_to_int64
from memgen.records import Record

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "realimages"


def _planted(n_memory=3000, n_queries=400, seed=0):
    """Random memory hashes and queries at known distances 0..24 from some memory hash."""
    rng = np.random.default_rng(seed)
    memory = rng.integers(-(2**63), 2**63 - 1, size=n_memory, dtype=np.int64)
    base = memory[rng.integers(0, n_memory, n_queries)].view(np.uint64)
    flips = np.zeros(n_queries, dtype=np.uint64)
    for q, d in enumerate(rng.integers(0, 25, n_queries)):
        for bit in rng.choice(64, d, replace=False):
            flips[q] |= np.uint64(1) << np.uint64(bit)
    return (base ^ flips).view(np.int64), memory


def _loop(queries, memory, radius):
    """The plainest reference: Python ints and bin().count."""
    out = []
    for q in queries.tolist():
        d = min(bin((q ^ m) & (2**64 - 1)).count("1") for m in memory.tolist())
        out.append(min(d, radius + 1))
    return np.array(out)


@pytest.mark.parametrize("radius", [0, 3, 10, 16])
def test_nearest_distances_agree_with_a_loop(radius):
    queries, memory = _planted()
    expected = _loop(queries[:150], memory, radius)
    np.testing.assert_array_equal(copying.nearest_distances(queries[:150], memory, radius), expected)
    assert (expected <= radius).any() and (radius == 16 or (expected > radius).any())


def test_nearest_distances_handle_repeated_and_flat_hashes():
    memory = np.array([0, 0, 0, -1, 0x0F0F], dtype=np.int64)  # a flat image's hash, many times
    queries = np.array([0, 1, -1, 0x0F0F ^ 0b111, 0x5555_5555_5555_5555], dtype=np.int64)
    assert copying.nearest_distances(queries, memory, 8).tolist() == [0, 1, 0, 3, 9]
    assert copying.nearest_distances(queries, np.zeros(0, np.int64), 8).tolist() == [9] * 5


def test_histogram_and_rate():
    distances = np.array([0, 0, 1, 5, 10, 11, 17, 17])
    hist = copying.distance_histogram(distances, radius=16)
    assert hist.tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 2]
    stats = copying.copy_stats(hist, threshold=10)
    assert (stats.n, stats.n_within, stats.rate) == (8, 5, 5 / 8)
    assert stats.to_json()["radius"] == 16
    assert copying.copy_stats(np.zeros(18, np.int64), 10).rate is None
    with pytest.raises(ValueError, match="radius"):
        copying.copy_stats(hist, threshold=17)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _skimage_photos() -> list[bytes]:
    data = pytest.importorskip("skimage.data", reason="scikit-image (the demo extra) ships the sample photos")
    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")
    return [_jpeg(Image.fromarray(getattr(data, n)()), 90) for n in names]


def test_query_phash_is_the_hash_memorize_stores():
    config = FingerprintConfig()
    for i, data in enumerate(_skimage_photos()):
        fp = fingerprint(Record(0, i, f"x#{i}", data), config)
        assert copying.query_phash(data, config) == fp.phash
        exact = copying.query_phash(data, FingerprintConfig(mode="exact"))
        assert exact == hash_to_int64(imagehash.phash(Image.open(io.BytesIO(data))))


def test_a_sample_of_the_memory_is_all_copies_and_other_photos_are_not():
    photos = _skimage_photos()
    config = FingerprintConfig()
    memory = np.array([copying.query_phash(d, config) for d in photos[:4]])
    sample = np.array([copying.query_phash(d, config) for d in (photos[0], photos[2], photos[2])])
    others = np.array([copying.query_phash(d, config) for d in photos[4:]])
    copy = copying.copy_stats(copying.distance_histogram(copying.nearest_distances(sample, memory)), 10)
    assert copy.rate == 1.0 and copy.histogram[0] == 3
    leak = copying.copy_stats(copying.distance_histogram(copying.nearest_distances(others, memory)), 10)
    assert leak.rate == 0.0


def test_contamination_finds_recompressed_copies_among_real_photos():
    if not REAL.is_dir():
        pytest.skip(f"real photos not found at {REAL} (see /work/shared/data/realimages/README.md)")
    files = sorted((REAL / "cats").glob("*.jpg"))[:60] + sorted((REAL / "notcats").glob("*.jpg"))[:60]
    config = FingerprintConfig()
    train, test = files[::2], files[1::2]
    memory = np.array([copying.query_phash(f.read_bytes(), config) for f in train])
    leaked = [_jpeg(Image.open(f), 50) for f in train[:10]]
    reference = [f.read_bytes() for f in test] + leaked
    queries = np.array([copying.query_phash(d, config) for d in reference])
    distances = copying.nearest_distances(queries, memory)
    assert (distances[len(test):] <= 10).all()  # every leaked copy is found
    assert (distances[:len(test)] <= 10).sum() <= 2  # and hardly any unrelated photo
    stats = copying.copy_stats(copying.distance_histogram(distances), 10)
    assert 10 / len(reference) <= stats.rate <= 12 / len(reference)


def test_copying_section_names_the_sets_given():
    hist = copying.distance_histogram(np.array([0, 0, 4, 20]), 16)
    section = copying.copying_section(hist, None, threshold=3)
    assert section["contamination"] is None and section["threshold"] == 3
    assert section["copy"] == {"threshold": 3, "n": 4, "n_within": 2, "rate": 0.5, "radius": 16,
                               "histogram": hist.tolist(), "population": None, "ci_low": None,
                               "ci_high": None, "method": None}


def test_the_copy_rate_of_a_uniform_sample_has_the_exact_interval_of_its_populations_share():
    """It was a point value: 3 copies in a sample of 20 read as 15%, with nothing to say how
    far the generator's share of copies may lie from it."""
    from scipy.stats import hypergeom

    hist = copying.distance_histogram(np.array([0, 2, 5] + [30] * 17), 16)
    stats = copying.copy_stats(hist, 10, population=100)
    # by enumeration: the population counts K of copies under which 3 of 20 is not in a 2.5% tail
    kept = [k for k in range(3, 100 - 17 + 1)
            if hypergeom.sf(2, 100, k, 20) >= 0.025 and hypergeom.cdf(3, 100, k, 20) >= 0.025]
    assert (stats.rate, stats.ci) == (0.15, (min(kept) / 100, max(kept) / 100))
    assert stats.method == "exact hypergeometric (finite population)" and stats.population == 100
    whole = copying.copy_stats(hist, 10, population=20)  # the sample is every image: no sampling error
    assert whole.ci == (0.15, 0.15) and whole.method == "census"
    assert copying.copy_stats(hist, 10).ci is None  # weighted, or a reference: a share of itself
