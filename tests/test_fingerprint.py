"""Fingerprints: safe decode of every mode, EXIF orientation, caps, and imagehash parity."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zlib
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from memgen import fingerprint as fingerprint_module
from memgen.decode import ImageError, image_errors, open_image
from memgen.fingerprint import FingerprintConfig, SeenBytes, decode, fingerprint, hash_to_int64, hashes
from memgen.records import Fingerprint, Record, Reject
from shardkit import encode, jpeg, lossless_jpeg, make_image

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realimages"
EXACT = FingerprintConfig(mode="exact")
FAST = FingerprintConfig(mode="fast")


def fp(data: bytes, config: FingerprintConfig = EXACT):
    return fingerprint(Record(0, 0, "src", data), config)


def reference_phash(data: bytes) -> int:
    return hash_to_int64(imagehash.phash(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))))


def bits(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def test_hash_to_int64_keeps_the_hex_bits():
    h = imagehash.phash(make_image(1))
    value = hash_to_int64(h)
    assert -(2**63) <= value < 2**63
    assert f"{value & (2**64 - 1):016x}" == str(h)


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F"])
def test_every_mode_decodes_and_matches_imagehash(mode):
    image = make_image(3)
    if mode in ("I;16", "I", "F"):  # 16-bit grey, as scanners and TIFFs write it
        grey16 = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        converted = Image.fromarray(grey16).convert(mode)
    else:
        converted = image.convert(mode)
    fmt = {"CMYK": "JPEG", "I": "TIFF", "F": "TIFF", "I;16": "PNG"}.get(mode, "PNG")
    data = encode(converted, fmt) if fmt != "JPEG" else _cmyk_jpeg(converted)
    result = fp(data)
    assert isinstance(result, Fingerprint), result
    assert result.phash == reference_phash(data)
    assert (result.width, result.height) == image.size
    assert result.image_id == hashlib.sha256(data).digest() and result.n_bytes == len(data)
    # fast mode scales 16-bit and float images to 8 bits, where Pillow (and so imagehash)
    # clips them to a white frame: the hash of the picture, not of a blank
    eight_bit = encode(image.convert("L"), "PNG")
    fast = fp(data, FAST)
    assert bits(fast.phash, fp(eight_bit, FAST).phash) <= 2
    assert result.format == fast.format == fmt  # the 8-bit copy fast mode hashes has no format
    if mode in ("I;16", "I"):
        assert result.phash == fp(encode(Image.new("L", image.size, 255), "PNG")).phash  # imagehash's white


def test_a_tiff_orientation_is_applied_once():
    upright = make_image(5, (160, 120))
    path = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(path, "TIFF", tiffinfo={0x0112: 6})
    rotated = fp(path.getvalue(), FAST)  # Pillow's TIFF loader turns it itself, memgen must not again
    assert (rotated.width, rotated.height) == (160, 120)
    assert bits(rotated.phash, fp(encode(upright, "PNG"), FAST).phash) <= 2


def test_max_pixels_above_pillows_own_limit():
    big = encode(Image.new("1", (9600, 9600)), "PNG")  # 92 M pixels: Pillow refuses over 89 M itself
    with image_errors():
        assert open_image(big, 200_000_000).size == (9600, 9600)
    refused = fp(big, FingerprintConfig(max_pixels=50_000_000))
    assert refused.error_type == "too_many_pixels" and "max_pixels 50000000" in refused.message


def test_float_and_32_bit_images_are_scaled_by_their_range():
    grey = np.asarray(make_image(4).convert("L"), dtype=np.float64)
    unit = fp(encode(Image.fromarray((grey / 255).astype(np.float32), "F"), "TIFF"), FAST)
    wide = fp(encode(Image.fromarray((grey * 1000).astype(np.int32), "I"), "TIFF"), FAST)
    twelve = fp(encode(Image.fromarray((grey * 16).astype(np.uint16)), "PNG"), FAST)  # 12 bits in 16
    plain = fp(encode(Image.fromarray(grey.astype(np.uint8)), "PNG"), FAST)
    assert all(bits(f.phash, plain.phash) <= 2 for f in (unit, wide, twelve))


def test_a_float_image_with_nan_or_inf_pixels_keeps_its_own_hash():
    """One NaN or inf made the scale NaN: the image hashed to 0, and unrelated pictures with
    one such pixel became near duplicates of each other."""
    scenes = [np.asarray(make_image(seed).convert("L"), dtype=np.float32) / 255 for seed in (4, 5)]
    clean = [fp(encode(Image.fromarray(scene, "F"), "TIFF"), FAST).phash for scene in scenes]
    assert bits(*clean) > 10
    for bad in (np.nan, np.inf, -np.inf):
        for scene, reference in zip(scenes, clean, strict=True):
            poisoned = scene.copy()
            poisoned[3, 5] = bad
            assert bits(fp(encode(Image.fromarray(poisoned, "F"), "TIFF"), FAST).phash, reference) <= 2


def test_a_lossless_jpeg_is_decoded_whole_not_drafted(tmp_path):
    """libjpeg-turbo cannot decode a lossless JPEG (SOF3) at reduced scale: fast mode made it
    a decode_error, or corrupted the heap and aborted the whole run (exit 134), as did
    sample's and evaluate's thumbnails. In a subprocess, so that an abort fails only this test."""
    grey = np.asarray(make_image(3, (640, 480)).convert("L"))
    path = tmp_path / "lossless.jpg"
    path.write_bytes(lossless_jpeg(grey))
    assert np.array_equal(np.asarray(Image.open(path)), grey)  # the encoder is right
    script = f"""
from memgen.fingerprint import FingerprintConfig, fingerprint
from memgen.decode import rgb_image
from memgen.records import Record
data = open({str(path)!r}, "rb").read()
for mode in ("fast", "exact"):
    print(fingerprint(Record(0, 0, "src", data), FingerprintConfig(mode=mode)).phash)
print(*rgb_image(data, 64).size)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]
    fast, exact, size = done.stdout.split("\n")[:3]
    assert int(exact) == reference_phash(path.read_bytes()) and bits(int(fast), int(exact)) <= 2
    assert size == "640 480"


def _cmyk_jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_palette_with_transparency_and_animation_first_frame():
    frames = [make_image(s).convert("P") for s in (4, 5, 6)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], transparency=0, duration=50)
    result = fp(out.getvalue())
    assert isinstance(result, Fingerprint) and result.format == "GIF"
    assert result.phash == hash_to_int64(imagehash.phash(Image.open(io.BytesIO(out.getvalue()))))
    assert bits(result.phash, fp(encode(frames[1], "PNG")).phash) > 0  # not the second frame


def test_exif_orientation_is_applied():
    image = make_image(7, (200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif)
    result = fp(out.getvalue())
    assert (result.width, result.height) == (100, 200)
    upright = image.transpose(Image.Transpose.ROTATE_270)
    assert bits(result.phash, fp(encode(upright, "JPEG", quality=95)).phash) <= 4


def test_an_orientation_pillow_does_not_look_up_leaves_the_image_upright():
    """An Orientation tag stored as text ("6"): fingerprinting turned the image, Pillow's
    exif_transpose (imagehash's, the classifier's, the contact sheet's) does not, so exact
    mode was 34 bits from imagehash and the memory's size sideways."""
    image = make_image(7, (200, 100))
    # one IFD entry: tag 0x0112, type 2 (ASCII), count 2, the value "6\0" inline
    ifd = (1).to_bytes(2, "big") + bytes.fromhex("0112 0002 00000002") + b"6\0\0\0" + bytes(4)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=b"Exif\0\0MM\0*\0\0\0\x08" + ifd)
    data = out.getvalue()
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == "6"  # stored as text indeed
    result = fp(data, EXACT)
    assert (result.width, result.height) == (200, 100)
    expected = imagehash.phash(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert result.phash == hash_to_int64(expected)


def test_damaged_exif_keeps_the_image_and_warns_nothing(recwarn):
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    exif[0x0110] = "Model-X"
    out = io.BytesIO()
    make_image(8, (120, 90)).save(out, "JPEG", quality=90, exif=exif)
    data = bytearray(out.getvalue())
    ifd = data.find(b"Exif\0\0MM\0*\0\0\0\x08") + 14
    data[ifd:ifd + 2] = (40).to_bytes(2, "big")  # the IFD claims 40 entries; it holds 2
    with pytest.warns(UserWarning, match="Corrupt EXIF"):  # what Pillow says outside memgen
        Image.open(io.BytesIO(bytes(data))).getexif()
    recwarn.clear()
    for config in (FAST, EXACT):
        assert isinstance(fp(bytes(data), config), Fingerprint)
    assert not recwarn.list  # a crawl has many such images: no log line for each


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"<html>404</html>", "not_an_image"),
    (jpeg(1)[:300], "decode_error"),
])
def test_bad_bytes_are_rejects_not_exceptions(data, reason):
    result = fp(data)
    assert isinstance(result, Reject) and result.error_type == reason and result.stage == "fingerprint"


def test_exact_copies_are_decoded_once_with_the_same_result(monkeypatch):
    decoded = []
    real_decode = fingerprint_module.decode

    def counted_decode(data, config):
        decoded.append(1)
        return real_decode(data, config)

    monkeypatch.setattr(fingerprint_module, "decode", counted_decode)
    seen = SeenBytes(size=2)
    images = [jpeg(1), jpeg(2), b"<html>404</html>"]
    first = [fingerprint(Record(0, i, f"a#{i}", data), FAST, seen) for i, data in enumerate(images)]
    assert len(decoded) == 3
    again = [fingerprint(Record(1, i, f"b#{i}", data), FAST, seen) for i, data in enumerate(images[1:], 1)]
    assert len(decoded) == 3  # jpeg(2) and the html page were the 2 remembered
    alone = [fingerprint(Record(1, i, f"b#{i}", data), FAST) for i, data in enumerate(images[1:], 1)]
    assert again == alone and again[0][3:] == first[1][3:]  # all but shard, ordinal and locator
    assert isinstance(again[1], Reject) and again[1].error_type == "not_an_image"
    before = len(decoded)
    fingerprint(Record(2, 0, "c#0", images[0]), FAST, seen)  # forgotten (size 2): decoded again
    assert len(decoded) == before + 1


def test_pixel_cap_rejects_before_decoding():
    data = encode(make_image(1, (400, 300)), "PNG")
    result = fp(data, FingerprintConfig(mode="fast", max_pixels=400 * 300 - 1))
    assert isinstance(result, Reject) and result.error_type == "too_many_pixels"
    assert isinstance(fp(data, FingerprintConfig(max_pixels=400 * 300)), Fingerprint)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_side_under_min_side_is_too_small_before_decoding(mode):
    """Whatever the orientation: a 200x100 photo stored sideways (EXIF 6) has a 100 px side."""
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    make_image(7, (200, 100)).save(out, "JPEG", exif=exif)
    for min_side, kept in ((100, True), (101, False)):
        result = fp(out.getvalue(), FingerprintConfig(mode=mode, min_side=min_side))
        assert isinstance(result, Fingerprint) is kept
        if not kept:
            said = "200x100: a side under --min_side 101"
            assert (result.error_type, result.message) == ("too_small", said)


@pytest.mark.parametrize("size", [(160, 120), (301, 217)])
def test_with_any_orientation_a_mirrored_or_turned_copy_hashes_as_its_original(size):
    """The canonical orientation's DCT block is computed from the image's own (signs and a
    transpose): a lossless copy in exact mode hashes the same, bit for bit; fast mode's box
    reduce and a JPEG's re-encoding leave at most 2 bits. Upright, every copy is far."""
    image = make_image(5, size)
    for mode, fmt, most in (("exact", "PNG", 0), ("fast", "JPEG", 2)):
        turned = _turned_distances(image, fmt, FingerprintConfig(mode=mode, orientations="any"))
        assert max(turned) <= most, (mode, turned)
        upright = _turned_distances(image, fmt, FingerprintConfig(mode=mode))
        assert min(upright) > 16, (mode, upright)


def _turned_distances(image: Image.Image, fmt: str, config: FingerprintConfig) -> list[int]:
    """pHash distances from the image to each of its 7 other orientations (Image.Transpose)."""
    original = fp(encode(image, fmt), config).phash
    return [bits(original, fp(encode(image.transpose(t), fmt), config).phash) for t in Image.Transpose]


def test_decompression_bomb_header_is_rejected():
    # a PNG whose header claims 60000 x 60000 pixels with almost no data: a 1 x 1 PNG's IHDR
    # rewritten (encoding a real one takes 15 s)
    small = encode(Image.new("1", (1, 1)), "PNG")
    ihdr = b"IHDR" + (60000).to_bytes(4, "big") * 2 + small[24:29]
    data = small[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + small[33:]
    result = fp(data)
    assert isinstance(result, Reject) and result.error_type == "too_many_pixels"
    # the user's cap, not Pillow's (twice it, where Pillow errs instead of warning)
    assert result.message == f"3600000000 pixels > max_pixels {FingerprintConfig().max_pixels}"


def test_fast_mode_is_within_two_bits_of_exact_on_jpegs():
    for seed in range(20):
        data = encode(make_image(seed, (1600, 1200)), "JPEG", quality=90)
        assert bits(fp(data, FAST).phash, fp(data, EXACT).phash) <= 2


def real_photos() -> list[Path]:
    if not REAL.is_dir():
        pytest.skip(f"real photos not found at {REAL} (shared data absent)")
    return sorted(p for p in REAL.rglob("*") if p.is_file() and p.suffix.lower() not in (".csv", ".md"))


def test_exact_mode_reproduces_imagehash_on_every_real_photo():
    compared = 0
    for path in real_photos():
        data = path.read_bytes()
        result = fp(data)
        if isinstance(result, Reject):
            with pytest.raises(Exception):  # noqa: B017 - Pillow must fail on it too
                Image.open(io.BytesIO(data)).load()
            continue
        assert result.phash == reference_phash(data), path
        compared += 1
    assert compared > 600


def test_fast_mode_agrees_with_imagehash_on_real_photos():
    within, total = 0, 0
    for path in real_photos():
        data = path.read_bytes()
        fast, exact = fp(data, FAST), fp(data, EXACT)
        if isinstance(exact, Fingerprint):
            total += 1
            within += bits(fast.phash, exact.phash) <= 2
    assert within / total >= 0.99


def _pillow_fast_reference(grey: Image.Image) -> tuple[int, int]:
    """Fast mode's resizes done by Pillow itself: reduce() to within 1.5x of 32 px, then LANCZOS."""
    fx, fy = max(grey.width // 48, 1), max(grey.height // 48, 1)
    small = grey.reduce((fx, fy))
    box = (0, 0, grey.width / fx, grey.height / fy)
    lanczos = Image.Resampling.LANCZOS
    return (hash_to_int64(imagehash.phash(small.resize((32, 32), lanczos, box))),
            hash_to_int64(imagehash.dhash(small.resize((9, 8), lanczos, box))))


def test_fast_hashes_equal_pillows_own_resizes_on_real_photos():
    same_phash = same_dhash = total = 0
    for path in real_photos():
        try:
            grey = decode(path.read_bytes(), FAST).grey
        except ImageError:
            continue
        ours, reference = hashes(grey, "fast"), _pillow_fast_reference(grey)
        same_phash += ours[0] == reference[0]
        same_dhash += ours[1] == reference[1]
        total += 1
    # Only Pillow's 22-bit fixed-point weights differ (a pixel off by one, rarely); measured: all equal
    assert total > 600 and same_phash / total >= 0.99 and same_dhash / total >= 0.99


def test_flat_images_share_one_fast_hash_whatever_their_size_and_level():
    flat = {hashes(Image.new("L", size, level), "fast") for size in ((7, 5), (64, 48), (500, 333))
            for level in (1, 128, 255)}
    assert len(flat) == 1


def test_postscript_is_not_decoded_as_an_image():
    """Pillow decodes EPS by running Ghostscript, only where it is installed: the same record
    was an image on one runner and a decode_error on another, and crawled PostScript ran."""
    out = io.BytesIO()
    make_image(1).convert("RGB").save(out, "EPS")  # Pillow writes it without Ghostscript
    assert Image.open(io.BytesIO(out.getvalue())).format == "EPS"
    reject = fp(out.getvalue())
    assert isinstance(reject, Reject) and reject.error_type == "not_an_image"
    assert "Ghostscript would run it" in reject.message
