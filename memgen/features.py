"""Feature spaces for the distribution distances: one image -> one float vector per space.

In: an `ImageView` (the decoded, oriented RGB image and its 64-bit pHash as stored in
the memory, int64). Out: `extract(view)` -> {space name: float32 vector}. The spaces:
- phash: the 64 hash bits as 0/1 (Euclidean distance = sqrt of Hamming distance);
- thumbnail: an 8x8 RGB area-average thumbnail, pixels in [0, 1] (192-d);
- colour: a joint RGB histogram, 4 bins per channel, summing to 1 (64-d);
- efficientnet: the 1280-d pooled EfficientNet-Lite0 embedding. It is not computed
  here: it needs onnxruntime and batches, so memgen.stages.image_sets runs the model on
  the same 224x224 pixels and adds the embedding to the dict under `EMBEDDING`.
Pure functions of pixels (PIL + numpy); no Beam.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
from PIL import Image

# Small on purpose: FD takes the eigenvalues of d x d matrices, ~1 s a pair at d = 1280
# (the embedding) and milliseconds at d = 192.
THUMBNAIL_SIDE = 8
HISTOGRAM_BINS = 4  # per channel; 4^3 = 64 joint bins
HISTOGRAM_SIDE = 64  # colour proportions barely change below this size, and it is fast
EMBEDDING = "efficientnet"
_BIT_SHIFTS = np.arange(63, -1, -1, dtype=np.uint64)


class ImageView(NamedTuple):
    rgb: Image.Image  # mode RGB, EXIF orientation applied
    phash: int  # signed int64, first hash bit most significant (memgen.fingerprint)


def hash_bits(phash: int | np.ndarray) -> np.ndarray:
    """64 bits of each int64 hash, most significant first (str(ImageHash) order), as float32."""
    h = np.asarray(phash, dtype=np.int64).view(np.uint64)
    return ((h[..., None] >> _BIT_SHIFTS) & np.uint64(1)).astype(np.float32)


def phash_bits(view: ImageView) -> np.ndarray:
    return hash_bits(view.phash)


def thumbnail(view: ImageView) -> np.ndarray:
    """Area-averaged 8x8 RGB pixels in [0, 1]; the aspect ratio is not kept (the same for all)."""
    small = view.rgb.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX)
    return (np.asarray(small, dtype=np.float32) / 255.0).reshape(-1)


def colour_histogram(view: ImageView) -> np.ndarray:
    """Share of pixels in each of 4x4x4 RGB cubes (computed on a 64x64 reduction)."""
    small = np.asarray(view.rgb.resize((HISTOGRAM_SIDE, HISTOGRAM_SIDE), Image.Resampling.BOX))
    q = small.astype(np.int64) * HISTOGRAM_BINS // 256
    index = (q[..., 0] * HISTOGRAM_BINS + q[..., 1]) * HISTOGRAM_BINS + q[..., 2]
    counts = np.bincount(index.reshape(-1), minlength=HISTOGRAM_BINS**3)
    return (counts / counts.sum()).astype(np.float32)


FEATURES: Mapping[str, Callable[[ImageView], np.ndarray]] = {
    "phash": phash_bits,
    "thumbnail": thumbnail,
    "colour": colour_histogram,
}
SPACES = (*FEATURES, EMBEDDING)  # the order of the report's distance table


def extract(view: ImageView,
            features: Mapping[str, Callable[[ImageView], np.ndarray]] = FEATURES) -> dict[str, np.ndarray]:
    return {name: fn(view) for name, fn in features.items()}
