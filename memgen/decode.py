"""Opening image bytes safely: a pixel cap checked from the header before any pixel is
decoded (decompression bombs), whatever Pillow raises turned into an ImageError reason,
JPEGs decoded at reduced scale where that is enough, EXIF orientation, and images of more
than 8 bits a sample scaled to 8 (Pillow's convert() clips them). Fingerprints, the
classifier's input and thumbnails all open images here.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 100_000_000
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


class ImageError(Exception):
    """A record whose bytes are not a usable image; error_type says why."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@contextmanager
def image_errors() -> Iterator[None]:
    """Turns whatever Pillow raises while opening or decoding into an ImageError reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow's warnings about damaged metadata (EXIF) in an image it still decodes: one
            # line a record in a crawl's worker logs, and no reason to reject the image. (Filters
            # are process-wide: with decode_ahead's threads one can outlive its block; both may.)
            warnings.simplefilter("ignore", UserWarning)
            yield
    except ImageError:
        raise
    except Image.UnidentifiedImageError:  # Pillow's message holds an object address: not reproducible
        raise ImageError("not_an_image", "Pillow cannot identify an image format in these bytes") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_many_pixels", str(e)) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a property of the record
        raise ImageError("decode_error", f"{type(e).__name__}: {e}"[:500]) from None


def identified(data: bytes) -> bool:
    """Whether these bytes open, header read, as an image of a format known by a signature in
    its first bytes (SIGNED_FORMATS). For a file a Hugging Face path names, which may be any
    file: a format Pillow only names (PostScript, HDF5 stubs), or one without a signature
    (TGA, FITS), or a header it cannot read, went on, failed at the decode, and the re-read kept
    the file's bytes as the reject's (or one random binary in 20,000 passed as a TGA image)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data), formats=SIGNED_FORMATS).close()
    except Exception:  # noqa: BLE001 - none of them, or a header none of them reads
        return False
    return True


# the web's image formats, each told by the magic number its files begin with (MPO: JPEG's)
SIGNED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "JPEG2000", "ICO", "AVIF", "HEIF", "QOI")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image with only its header read, after the size checks; use inside image_errors()."""
    if not data:
        raise ImageError("empty", "zero bytes")
    # Pillow's own cap (process-wide: a warning, an error here, above MAX_IMAGE_PIXELS) is
    # raised to the caller's when that is higher, so --max_pixels means what it says
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's message quotes its own limit (twice max_pixels, where it errs): say the user's
        counted = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{counted.group(1)} pixels" if counted else "the image"
        raise ImageError("too_many_pixels", f"{size} > max_pixels {max_pixels}") from None
    if img.format == "EPS":  # Pillow hands PostScript to Ghostscript: a program run, where installed
        raise ImageError("not_an_image", "PostScript (EPS) is not decoded: Ghostscript would run it, and "
                         "only where it is installed (runners would disagree)")
    if img.width * img.height > max_pixels:
        raise ImageError("too_many_pixels", f"{img.width}x{img.height} > max_pixels {max_pixels}")
    return img


def eight_bit(img: Image.Image, stretch: bool = False) -> Image.Image:
    """An image of more than 8 bits a sample (16-bit, 32-bit integer, float) in mode L, where
    Pillow's convert() would clip it to 255 (a 16-bit photo becomes a white frame). Scaled
    from its nominal range (16 bits, or 0-1 floats; else its own maximum), or with `stretch`
    from its own maximum always: a hash, blind to overall brightness, then keeps the grey
    levels of 10- or 12-bit data in a 16-bit file. Other modes are returned as they are."""
    if img.mode not in _WIDE_MODES:
        return img
    pixels = np.array(img, dtype=np.float32)  # a copy: scaled in place
    finite = np.isfinite(pixels)  # a float image may hold NaN or inf, which would poison the scale
    high = float(pixels.max(initial=0.0, where=finite))
    if stretch:
        top = high
    elif img.mode.startswith("I;16") or (img.mode == "I" and 255 < high <= 65535):
        top = 65535.0
    elif img.mode == "F" and high <= 1:
        top = 1.0
    else:
        top = max(high, 255.0)
    np.nan_to_num(pixels, copy=False, nan=0.0, posinf=top, neginf=0.0)
    pixels *= 255.0 / max(top, 1e-12)
    np.clip(np.rint(pixels, out=pixels), 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8), "L")


def rgb_image(data: bytes, side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The EXIF-oriented image in 8-bit RGB, a JPEG decoded at the smallest scale that still
    covers `side`; use inside image_errors()."""
    img = open_image(data, max_pixels)
    draft(img, "RGB", side)
    return eight_bit(ImageOps.exif_transpose(img)).convert("RGB")


def draft(img: Image.Image, mode: str, side: int) -> None:
    """Have a JPEG decode at the smallest scale that covers `side`, in `mode`; not a lossless
    JPEG (the only kind without quantization tables): libjpeg-turbo fails to decode one
    scaled, or corrupts its heap and aborts the process."""
    if getattr(img, "quantization", None):
        img.draft(mode, (side, side))
