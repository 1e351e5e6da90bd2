"""memgen.features: golden hash bits, pixel features against independent computations, real photos."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from memgen import features
from memgen.features import ImageView
from memgen.fingerprint import hash_to_int64
from memgen.near import popcount


def _view(rgb: Image.Image) -> ImageView:
    return ImageView(rgb, hash_to_int64(imagehash.phash(rgb.convert("L"))))


def _skimage(name: str) -> Image.Image:
    data = pytest.importorskip("skimage.data", reason="scikit-image (the demo extra) ships the sample photos")
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def test_hash_bits_are_imagehash_bits_in_order():
    img = _skimage("chelsea")
    h = imagehash.phash(img.convert("L"))
    bits = features.hash_bits(hash_to_int64(h))
    np.testing.assert_array_equal(bits, h.hash.reshape(-1).astype(np.float32))
    assert bits.dtype == np.float32 and bits.shape == (64,)


def test_squared_distance_of_hash_bits_is_hamming_distance():
    rng = np.random.default_rng(0)
    hashes = rng.integers(-(2**63), 2**63 - 1, size=50, dtype=np.int64)
    bits = features.hash_bits(hashes)
    assert bits.shape == (50, 64)
    hamming = popcount(hashes[:, None].view(np.uint64) ^ hashes[None, :].view(np.uint64))
    squared = ((bits[:, None, :] - bits[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(squared, hamming)
    assert features.hash_bits(np.int64(-1)).sum() == 64 and features.hash_bits(np.int64(1))[-1] == 1


def test_thumbnail_keeps_the_layout_of_colours():
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    img.paste((0, 0, 255), (32, 0, 64, 32))
    thumb = features.thumbnail(_view(img)).reshape(8, 8, 3)
    np.testing.assert_array_equal(thumb[:, :4], np.broadcast_to([1.0, 0.0, 0.0], (8, 4, 3)))
    np.testing.assert_array_equal(thumb[:, 4:], np.broadcast_to([0.0, 0.0, 1.0], (8, 4, 3)))


def test_colour_histogram_matches_numpy_histogramdd():
    img = _skimage("coffee")
    hist = features.colour_histogram(_view(img))
    small = np.asarray(img.resize((64, 64), Image.Resampling.BOX)).reshape(-1, 3)
    edges = [np.arange(0, 257, 64)] * 3
    expected, _ = np.histogramdd(small, bins=edges)
    np.testing.assert_allclose(hist, expected.reshape(-1) / len(small), rtol=1e-6)
    assert hist.sum() == pytest.approx(1.0)
    red = features.colour_histogram(_view(Image.new("RGB", (10, 10), (255, 0, 0))))
    assert red[(3 * 4 + 0) * 4 + 0] == 1.0


def test_extract_gives_every_space_and_a_recompressed_copy_stays_close():
    cat, coffee = _skimage("chelsea"), _skimage("coffee")
    buf = io.BytesIO()
    cat.save(buf, "JPEG", quality=40)
    copy = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    f_cat, f_copy, f_coffee = (features.extract(_view(i)) for i in (cat, copy, coffee))
    assert {k: v.shape for k, v in f_cat.items()} == {"phash": (64,), "thumbnail": (192,), "colour": (64,)}
    assert all(v.dtype == np.float32 for v in f_cat.values())
    for space in features.FEATURES:
        near = np.linalg.norm(f_cat[space] - f_copy[space])
        far = np.linalg.norm(f_cat[space] - f_coffee[space])
        assert near < far / 3, space
    assert features.SPACES == ("phash", "thumbnail", "colour", features.EMBEDDING)
