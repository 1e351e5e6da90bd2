"""Fingerprints: original bytes -> sha256, size, pHash and dHash, or a reason to reject.

Decoding is defensive: a pixel cap checked from the header before any pixel is
decoded (decompression bombs), EXIF orientation applied, every mode Pillow opens
reduced to 8-bit grey, the first frame of animations. Two modes:
- fast (default): JPEG `draft()` decodes at 1/2..1/8 scale straight to grey; 16-bit
  and float images are scaled to 8 bits (`eight_bit`);
- exact: full decode, bit-for-bit `imagehash.phash` / `imagehash.dhash` of the
  oriented image, including imagehash's clipping of 16-bit images (to white).
Opening an image safely, and its 8-bit scaling, are memgen.decode's, shared with every
other reader of image bytes (classifier input, thumbnails).
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import Image

from memgen.decode import DEFAULT_MAX_PIXELS, ImageError, draft, eight_bit, image_errors, open_image
from memgen.records import Fingerprint, Record, Reject

MODES = ("fast", "exact")
ORIENTATIONS = ("upright", "any")  # any: a mirrored or quarter-turned copy hashes as its original
DRAFT_SIZE = 128  # smallest side JPEG draft may decode to; pHash looks at 32x32
# Distinct images a Fingerprint DoFn remembers to skip exact copies: ~370 bytes each, 12 MB
# (a Dataflow worker runs a DoFn instance per harness thread, dozens on 4 vCPUs).
SEEN_BYTES = 1 << 15
# Fast mode box-averages (Pillow's reduce()) to 48-95 px a side (Pillow's reducing_gap=1.5
# for pHash's 32 px) before the LANCZOS resizes, which it computes as matrix products with
# cached weights: Pillow recomputes its weights (hundreds of sin() calls) on every resize,
# most of the time of a small one. pHash stays within 2 bits of imagehash on 99.5% of the
# shared real photos.
_REDUCE_TO = 48
# The 8 lowest rows of the 32-point DCT-II (scipy's, up to its factor 2) in units of 2**-16:
# pixels <= 255 keep every product below 2**53.
_DCT_LOW = np.round(np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32) + 1) / 64) * 2.0**16)
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class FingerprintConfig:
    mode: str = "fast"
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 0  # an image narrower or lower than this (icons, tracking pixels) is a too_small reject
    orientations: str = "upright"  # ORIENTATIONS: "any" hashes each image in its canonical orientation

    @classmethod
    def of_memory(cls, manifest: dict) -> FingerprintConfig:
        """The settings a memory was fingerprinted with (defaults where its manifest names none)."""
        return cls(**manifest.get("options", {}).get("fingerprint", {}))


@dataclass(frozen=True)
class Decoded:
    grey: Image.Image  # mode L, oriented; possibly reduced in fast mode
    width: int  # full size, after orientation
    height: int
    format: str


def decode(data: bytes, config: FingerprintConfig) -> Decoded:
    """Safely decode bytes to an oriented grey image; raises ImageError."""
    with image_errors():
        img = open_image(data, config.max_pixels)
        header_size, image_format = img.size, img.format or "unknown"  # eight_bit's copy has no format
        if min(header_size) < config.min_side:  # a side, whatever the orientation: read from the header
            raise ImageError("too_small", f"{img.width}x{img.height}: a side under --min_side "
                                          f"{config.min_side}")
        if config.mode == "fast" and image_format == "JPEG":
            draft(img, "L", DRAFT_SIZE)
        img.load()
        # after load(): Pillow's TIFF loader applies (and drops) its orientation tag itself
        orientation = _orientation(img)
        width, height = header_size if image_format == "JPEG" else img.size  # a draft is smaller
        if config.mode == "fast":  # exact is imagehash's, which clips wide modes to white
            img = eight_bit(img, stretch=True)
        grey = img if img.mode == "L" else img.convert("L")  # drafts decode to L: no copy
    if orientation in _TRANSPOSE:
        grey = grey.transpose(_TRANSPOSE[orientation])
        if orientation >= 5:
            width, height = height, width
    return Decoded(grey, width, height, image_format)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation as Pillow's exif_transpose (imagehash's, the classifier's, the
    contact sheet's) reads it: a value it does not look up (ASCII "6") is upright."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if value in _TRANSPOSE else 1
    except Exception:  # noqa: BLE001 - broken EXIF must not reject a decodable image
        return 1


def hash_to_int64(h: imagehash.ImageHash) -> int:
    """64 hash bits (row-major, first bit most significant, as str(h)) as a signed int64."""
    value = int(str(h), 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def _bits_to_int64(bits: np.ndarray) -> int:
    """64 booleans, row-major, first most significant (as hash_to_int64) -> signed int64."""
    return int.from_bytes(np.packbits(bits).tobytes(), "big", signed=True)


def hashes(grey: Image.Image, mode: str = "exact", orientations: str = "upright") -> tuple[int, int]:
    """(pHash, dHash) of a mode-L image as int64s: imagehash's, bit for bit, in exact mode;
    with `orientations` "any", the pHash of its canonical orientation (canonical_block)."""
    if mode == "fast":
        return _fast_hashes(grey, orientations == "any")
    return phash(grey, orientations == "any"), dhash(grey)


def phash(grey: Image.Image, canonical: bool = False) -> int:
    """imagehash.phash of a mode-L image as int64, bit for bit (exact mode); `canonical`: of
    its canonical orientation.

    Computed here because imagehash's ImageHash -> hex string -> int round trip cost a
    third of the hashing time (benchmarks/bench_fingerprint.py).
    """
    return _phash_bits(np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS)), canonical)


def dhash(grey: Image.Image) -> int:
    """imagehash.dhash of a mode-L image as int64, bit for bit (exact mode)."""
    return _dhash_bits(np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS)))


def _phash_bits(pixels: np.ndarray, canonical: bool = False) -> int:
    """imagehash.phash's bits from its 32x32 resized pixels."""
    import scipy.fftpack  # exact mode only: a quarter of a second to import

    low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    return _above_median(canonical_block(low) if canonical else low)


def canonical_block(low: np.ndarray) -> np.ndarray:
    """The 8x8 lowest DCT coefficients (rows: vertical frequencies) of the image's canonical
    orientation among its 8 (mirrored or not, turned by quarter turns), computed from its own:
    a left-right mirror negates the odd columns, a top-bottom one the odd rows, a transpose
    swaps them. Canonical: the first horizontal frequency is the stronger of the two first
    ones, and both are non-negative. A mirrored or turned copy gets the same block (up to
    its resampling): the same pHash. Where the two first frequencies are nearly equal or
    one is near 0 (symmetric pictures), a copy's noise can choose another orientation."""
    if abs(low[1, 0]) > abs(low[0, 1]):
        low = low.T
    if low[0, 1] < 0:
        low = low * _ODD_NEGATED[None, :]
    if low[1, 0] < 0:
        low = low * _ODD_NEGATED[:, None]
    return low


_ODD_NEGATED = np.where(np.arange(8) % 2 == 1, -1.0, 1.0)


def _above_median(low: np.ndarray) -> int:
    ordered = np.sort(low, axis=None)  # np.median's own arithmetic, without its ~20 us of overhead
    return _bits_to_int64(low > (ordered[31] + ordered[32]) / 2)


def _dhash_bits(pixels: np.ndarray) -> int:
    """imagehash.dhash's bits from its 9x8 resized pixels."""
    return _bits_to_int64(pixels[:, 1:] > pixels[:, :-1])


def _fast_hashes(grey: Image.Image, canonical: bool = False) -> tuple[int, int]:
    """Both hashes from one reduce() and one matrix product a resize pass, rounded to 8 bits
    after each pass as Pillow does; pHash's 32x32 pixels are Pillow's own up to its 22-bit
    fixed-point weights (the same pHash on every shared real photo)."""
    width, height = grey.size
    fx, fy = max(width // _REDUCE_TO, 1), max(height // _REDUCE_TO, 1)
    small = grey.reduce((fx, fy)) if fx > 1 or fy > 1 else grey
    across = _to_8_bits(np.asarray(small, dtype=np.float64) @ _weights(width, fx, (32, 9)).T)
    pixels = _to_8_bits(_weights(height, fy, (32, 8)) @ across)
    # Integers below 2**53 throughout: exact, so the same bits on every machine and BLAS
    # (flat images, whose coefficients tie, included).
    low = _DCT_LOW @ pixels[:32, :32] @ _DCT_LOW.T
    return _above_median(canonical_block(low) if canonical else low), _dhash_bits(pixels[32:, 32:])


def _to_8_bits(values: np.ndarray) -> np.ndarray:
    """Pillow's clip8 in place: round half up, overshoots clipped to 0..255."""
    np.clip(values, -0.5, 254.5, out=values)
    values += 0.5
    return np.floor(values, out=values)


@functools.lru_cache(maxsize=1024)  # <= 31 KB each (41 x 96 floats); 738 keys for 10,000 crawled images
def _weights(full: int, factor: int, outs: tuple[int, ...]) -> np.ndarray:
    """LANCZOS weights from an axis of `full` pixels box-reduced by `factor` to each of `outs`
    pixels, stacked rows: Pillow's precompute_coeffs (Resample.c) on the box reduce() leaves."""
    size, extent = -(-full // factor), full / factor
    return np.vstack([_lanczos(size, extent, out) for out in outs])


def _lanczos(size: int, extent: float, out: int) -> np.ndarray:
    scale = extent / out
    stretch = max(scale, 1.0)
    support = 3.0 * stretch
    centers = (np.arange(out) + 0.5) * scale
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # C's (int): toward zero
    end = np.minimum((centers + support + 0.5).astype(np.int64), size)
    taps = first[:, None] + np.arange(2 * int(np.ceil(support)) + 1)
    t = (taps - centers[:, None] + 0.5) / stretch
    w = np.where((taps < end[:, None]) & (t >= -3) & (t < 3), np.sinc(t) * np.sinc(t / 3), 0.0)
    dense = np.zeros((out, size + taps.shape[1]))
    np.put_along_axis(dense, taps, w / w.sum(axis=1, keepdims=True), axis=1)
    return dense[:, :size]


def int64_to_uint64(values: np.ndarray | int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).view(np.uint64)


class Described(NamedTuple):
    """What a record's bytes give, whoever holds them."""

    phash: int
    dhash: int
    width: int
    height: int
    format: str


def describe(data: bytes, config: FingerprintConfig) -> Described:
    """The bytes' hashes, oriented size and format; raises ImageError."""
    decoded = decode(data, config)
    return Described(*hashes(decoded.grey, config.mode, config.orientations), decoded.width, decoded.height,
                     decoded.format)


class SeenBytes:
    """describe() of the last `size` distinct byte strings, by sha256: a crawl's exact copies
    (the same banner or logo thousands of times) cost a lookup instead of a decode. The
    result is the same either way; failures are remembered too."""

    def __init__(self, size: int = SEEN_BYTES) -> None:
        self.size = size
        self._known: OrderedDict[bytes, Described | tuple[str, str]] = OrderedDict()

    def describe(self, image_id: bytes, data: bytes, config: FingerprintConfig) -> Described:
        known = self._known.get(image_id)
        if known is None:
            try:
                known = describe(data, config)
            except ImageError as e:
                known = (e.error_type, str(e))  # not the exception: each raise would lengthen its traceback
            self._known[image_id] = known
            if len(self._known) > self.size:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(image_id)
        if not isinstance(known, Described):
            raise ImageError(*known)
        return known


def fingerprint(record: Record, config: FingerprintConfig,
                seen: SeenBytes | None = None) -> Fingerprint | Reject:
    """The record's Fingerprint, or a Reject saying why it has none (`seen`: earlier bytes)."""
    image_id = hashlib.sha256(record.data).digest()
    try:
        described = (seen.describe(image_id, record.data, config) if seen is not None
                     else describe(record.data, config))
    except ImageError as e:
        return Reject(record.shard, record.ordinal, record.source, "fingerprint",
                      e.error_type, str(e), len(record.data))
    return Fingerprint(record.shard, record.ordinal, record.locator, image_id, *described, len(record.data))
