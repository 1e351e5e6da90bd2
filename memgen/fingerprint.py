"""Fingerprints: original bytes -> sha256, size, pHash and dHash, or a reason to reject.

Decoding is defensive: a pixel cap checked from the header before any pixel is
decoded (decompression bombs), EXIF orientation applied, every mode Pillow opens
reduced to 8-bit grey, the first frame of animations. Two modes:
- fast (default): JPEG `draft()` decodes at 1/2..1/8 scale straight to grey;
- exact: full decode, bit-for-bit `imagehash.phash` / `imagehash.dhash` of the
  oriented image.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import imagehash
import numpy as np
import scipy.fftpack
from PIL import Image

from memgen.records import Fingerprint, Record, Reject

MODES = ("fast", "exact")
DRAFT_SIZE = 128  # smallest side JPEG draft may decode to; pHash looks at 32x32
# Fast mode lets Pillow reduce() (box average) to within 1.5x of the hash size before
# LANCZOS: hashing 4x cheaper, pHash still within 2 bits of imagehash on 99.5% of the
# shared real photos (exact: bit for bit).
_REDUCING_GAP = {"fast": 1.5, "exact": None}
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
    max_pixels: int = 100_000_000


class ImageError(Exception):
    """A record whose bytes are not a usable image; error_type says why."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class Decoded:
    grey: Image.Image  # mode L, oriented; possibly reduced in fast mode
    width: int  # full size, after orientation
    height: int
    format: str


@contextmanager
def image_errors() -> Iterator[None]:
    """Turns whatever Pillow raises while opening or decoding into an ImageError reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except Image.UnidentifiedImageError:  # Pillow's message holds an object address: not reproducible
        raise ImageError("not_an_image", "Pillow cannot identify an image format in these bytes") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_many_pixels", str(e)) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a property of the record
        raise ImageError("decode_error", f"{type(e).__name__}: {e}"[:500]) from None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image with only its header read, after the size checks; use inside image_errors()."""
    if not data:
        raise ImageError("empty", "zero bytes")
    img = Image.open(io.BytesIO(data))
    if img.width * img.height > max_pixels:
        raise ImageError("too_many_pixels", f"{img.width}x{img.height} > max_pixels {max_pixels}")
    return img


def decode(data: bytes, config: FingerprintConfig) -> Decoded:
    """Safely decode bytes to an oriented grey image; raises ImageError."""
    with image_errors():
        img = open_image(data, config.max_pixels)
        width, height = img.size
        orientation = _orientation(img)
        if config.mode == "fast" and img.format == "JPEG":
            img.draft("L", (DRAFT_SIZE, DRAFT_SIZE))
        img.load()
        grey = img.convert("L")
    if orientation in _TRANSPOSE:
        grey = grey.transpose(_TRANSPOSE[orientation])
        if orientation >= 5:
            width, height = height, width
    return Decoded(grey, width, height, img.format or "unknown")


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - broken EXIF must not reject a decodable image
        return 1


def hash_to_int64(h: imagehash.ImageHash) -> int:
    """64 hash bits (row-major, first bit most significant, as str(h)) as a signed int64."""
    value = int(str(h), 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def _bits_to_int64(bits: np.ndarray) -> int:
    """64 booleans, row-major, first most significant (as hash_to_int64) -> signed int64."""
    return int.from_bytes(np.packbits(bits).tobytes(), "big", signed=True)


def phash(grey: Image.Image, mode: str = "exact") -> int:
    """imagehash.phash of a mode-L image as int64: in exact mode the same resize and DCT, bit
    for bit; in fast mode the resize first reduces by box averaging (_REDUCING_GAP).

    Computed here because imagehash's ImageHash -> hex string -> int round trip cost a
    third of the hashing time (benchmarks/bench_fingerprint.py).
    """
    pixels = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP[mode]))
    low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    ordered = np.sort(low, axis=None)  # np.median's own arithmetic, without its ~20 us of overhead
    return _bits_to_int64(low > (ordered[31] + ordered[32]) / 2)


def dhash(grey: Image.Image, mode: str = "exact") -> int:
    """imagehash.dhash of a mode-L image as int64 (bit for bit in exact mode)."""
    pixels = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP[mode]))
    return _bits_to_int64(pixels[:, 1:] > pixels[:, :-1])


def int64_to_uint64(values: np.ndarray | int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).view(np.uint64)


def fingerprint(record: Record, config: FingerprintConfig) -> Fingerprint | Reject:
    """The record's Fingerprint, or a Reject saying why it has none."""
    try:
        decoded = decode(record.data, config)
    except ImageError as e:
        return Reject(record.shard, record.ordinal, record.source, "fingerprint",
                      e.error_type, str(e), len(record.data))
    return Fingerprint(
        shard=record.shard,
        ordinal=record.ordinal,
        locator=record.locator,
        image_id=hashlib.sha256(record.data).digest(),
        phash=phash(decoded.grey, config.mode),
        dhash=dhash(decoded.grey, config.mode),
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        n_bytes=len(record.data),
    )
