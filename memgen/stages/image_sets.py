"""The image sets evaluate compares, read as `SetImage`s, and their feature vectors.

- memory: every row of the memory's images/ parts (stored pHash);
- sample: the rows of a finished sample's index.parquet, their bytes read from the
  memory parts the sample was drawn from (the bytes are the memory's, never re-encoded);
- reference: raw shards (a held-out test set), read like memorize reads them, hashed
  with the memory's fingerprint settings so that distances to the memory mean the same.
`ExtractFeatures` turns SetImages into (set, image id, {space: vector}) and tags the
images that cannot be decoded as (set, error type) failures.
Image bytes live only inside the worker that read them; features are small.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import defaultdict
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq
from PIL import Image

from memgen.classify.images import to_rgb_square
from memgen.copying import query_phash
from memgen.features import ImageView, extract
from memgen.fingerprint import FingerprintConfig, ImageError
from memgen.memory import MemoryDirError, join, read_manifest
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Shard
from memgen.sample_output import INDEX

MEMORY, SAMPLE, REFERENCE = "memory", "sample", "reference"
FEATURE_SIDE = 224  # the classifier's input square: thumbnails and histograms see what it sees
READ_BATCH_ROWS = 64
FAILED = "failed"


class SetImage(NamedTuple):
    set_name: str
    image_id: str
    phash: int  # signed int64
    data: bytes


def read_memory_part(url: str, selected: frozenset[str] | None = None) -> Iterator[SetImage]:
    """The part's images (only `selected` ids when given), a batch of rows at a time."""
    with fsspec.open(url, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=READ_BATCH_ROWS,
                                                   columns=["image_id", "phash", "image"]):
            for row in batch.to_pylist():
                if selected is None or row["image_id"] in selected:
                    yield SetImage(MEMORY, row["image_id"], row["phash"], row["image"])


def sample_parts(sample: str) -> list[tuple[str, frozenset[str]]]:
    """(memory part URL, ids of the sample in it) for a finished sample, sorted by part."""
    manifest = read_manifest(sample)
    if manifest is None:
        raise MemoryDirError(f"{sample} is not a finished sample (no manifest.json)")
    with fsspec.open(join(sample, INDEX), "rb") as f:
        index = pq.read_table(f, columns=["image_id", "memory_part"]).to_pylist()
    ids: dict[str, set[str]] = defaultdict(set)
    for row in index:
        ids[row["memory_part"]].add(row["image_id"])
    images = join(manifest["memory"], "images")
    return [(join(images, posixpath.basename(part)), frozenset(chosen))
            for part, chosen in sorted(ids.items())]


def reference_images(shard: Shard, reader: ReaderConfig, fingerprint: FingerprintConfig) -> Iterator:
    """SetImages of one reference shard; what cannot be read or hashed is a (set, error type) failure."""
    for item in read_shard(shard, reader):
        if not isinstance(item, Record):
            yield beam.pvalue.TaggedOutput(FAILED, (REFERENCE, item.error_type))
            continue
        try:
            phash = query_phash(item.data, fingerprint)
        except ImageError as e:
            yield beam.pvalue.TaggedOutput(FAILED, (REFERENCE, e.error_type))
            continue
        yield SetImage(REFERENCE, hashlib.sha256(item.data).hexdigest(), phash, item.data)


def image_features(image: SetImage) -> Iterator:
    """(set, image id, {space: vector}), or a (set, error type) failure."""
    try:
        pixels = to_rgb_square(image.data, FEATURE_SIDE)
    except ImageError as e:
        yield beam.pvalue.TaggedOutput(FAILED, (image.set_name, e.error_type))
        return
    yield image.set_name, image.image_id, extract(ImageView(Image.fromarray(pixels), image.phash))


class ExtractFeatures(beam.PTransform):
    """PCollection[SetImage] -> (features: (set, id, {space: vector}), failed: (set, error type))."""

    def expand(self, images):
        return images | "Features" >> beam.FlatMap(image_features).with_outputs(FAILED, main="features")
