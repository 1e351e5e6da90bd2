"""Image bytes -> the classifier's input: an oriented RGB uint8 square, or ImageError.

Shorter side resized to `size`, then centre-cropped (it scored better than squashing
the whole frame on the shared cat photos). JPEGs decode through `draft()` at the
smallest scale that still covers `size`, which is most of the decoding time saved.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from memgen.fingerprint import ImageError

MAX_PIXELS = 100_000_000


def to_rgb_square(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(size, size, 3) uint8 array of the centre of the oriented image; raises ImageError."""
    if not data:
        raise ImageError("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise ImageError("too_many_pixels", f"{img.width}x{img.height} > {max_pixels}")
            img.draft("RGB", (size, size))
            img = ImageOps.exif_transpose(img).convert("RGB")
            scale = size / min(img.size)
            resized = (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
            img = img.resize(resized, Image.Resampling.BILINEAR, reducing_gap=3.0)
            left, top = (img.width - size) // 2, (img.height - size) // 2
            return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except ImageError:
        raise
    except Image.UnidentifiedImageError as e:
        raise ImageError("not_an_image", str(e)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_many_pixels", str(e)) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a property of the image
        raise ImageError("decode_error", f"{type(e).__name__}: {e}"[:500]) from None
