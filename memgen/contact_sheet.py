"""Contact sheet: a grid of thumbnails of sampled images (a sample's contact_sheet.jpg,
report.html's Figure 3).

Pure PIL. `thumbnail` turns original bytes into a small JPEG (what travels to the
one worker that draws the sheet, never the full image); `contact_sheet` lays
thumbnails out in rank order. An image that cannot be decoded gets a grey tile
with a cross, so one bad file never loses the sheet.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from memgen.decode import DEFAULT_MAX_PIXELS, ImageError, image_errors, rgb_image

TILE = 128  # pixels per thumbnail side
PAD = 4
BACKGROUND = (24, 24, 24)


def jpeg_thumbnail(data: bytes, side: int, max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = 85) -> bytes:
    """A JPEG at most `side` px on its longer side, EXIF-oriented; raises ImageError on
    undecodable bytes or an image over `max_pixels`."""
    with image_errors():
        img = rgb_image(data, side, max_pixels)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def thumbnail(data: bytes, size: int = TILE, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """A contact sheet's JPEG thumbnail fitting size x size, or None when the bytes do not
    decode (or hold more than `max_pixels`): the sheet draws a crossed tile instead."""
    try:
        return jpeg_thumbnail(data, size, max_pixels)
    except ImageError:
        return None


def contact_sheet(thumbs: Sequence[bytes | None], tile: int = TILE) -> Image.Image:
    """Thumbnails in a near-square grid, row by row in the given order."""
    count = max(1, len(thumbs))
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    sheet = Image.new("RGB", (cols * (tile + PAD) + PAD, rows * (tile + PAD) + PAD), BACKGROUND)
    for i, data in enumerate(thumbs):
        x = PAD + (i % cols) * (tile + PAD)
        y = PAD + (i // cols) * (tile + PAD)
        sheet.paste(_tile(data, tile), (x, y))
    return sheet


def _tile(data: bytes | None, tile: int) -> Image.Image:
    canvas = Image.new("RGB", (tile, tile), BACKGROUND)
    if data is None:
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, 0, tile - 1, tile - 1), fill=(96, 96, 96))
        draw.line((0, 0, tile - 1, tile - 1), fill=(160, 160, 160), width=2)
        draw.line((0, tile - 1, tile - 1, 0), fill=(160, 160, 160), width=2)
        return canvas
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail((tile, tile))
        canvas.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
    return canvas
