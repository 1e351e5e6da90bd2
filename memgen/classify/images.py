"""Image bytes -> the classifier's input: an oriented RGB uint8 square, or ImageError.

The centre square, resized to `size` (it scored better than squashing the whole frame
on the shared cat photos); only that square is resampled, so a 1 x 100,000 strip costs
no more than a photo. JPEGs decode through `draft()` at the
smallest scale that still covers `size`, which is most of the decoding time saved.
`decode_ahead` decodes a stream of images in threads ahead of the model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from PIL import Image

from memgen.decode import DEFAULT_MAX_PIXELS, ImageError, image_errors, rgb_image

DECODE_THREADS = 2
LOOKAHEAD = 128  # two inference batches: the next batch decodes while the model runs
T = TypeVar("T")


def to_rgb_square(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(size, size, 3) uint8 array of the centre of the oriented image; raises ImageError."""
    with image_errors():
        img = rgb_image(data, size, max_pixels)
        # the square that a resize of the shorter side to `size` and a centre crop would keep,
        # in the image's own coordinates
        scale = size / min(img.size)
        width, height = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        left, top = (width - size) // 2, (height - size) // 2
        x, y = img.width / width, img.height / height
        box = (left * x, top * y, (left + size) * x, (top + size) * y)
        square = img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
        return np.asarray(square, dtype=np.uint8)


def decode_ahead(items: Iterable[T], data_of: Callable[[T], bytes], size: int, threads: int = DECODE_THREADS,
                 lookahead: int = LOOKAHEAD, max_pixels: int = DEFAULT_MAX_PIXELS
                 ) -> Iterator[tuple[T, np.ndarray | ImageError]]:
    """(item, pixels or the ImageError) for each item, in order, decoded by a thread pool.

    Up to `lookahead` images are decoded ahead of the consumer, so decoding (Pillow
    releases the GIL) overlaps with whatever the consumer does meanwhile, e.g. the
    model running on the previous batch.
    """
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(_decode_or_error, data_of(item), size, max_pixels)))
            if len(pending) >= lookahead:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()


def _decode_or_error(data: bytes, size: int, max_pixels: int) -> np.ndarray | ImageError:
    try:
        return to_rgb_square(data, size, max_pixels)
    except ImageError as e:
        return e
