"""The image sets evaluate compares, read as `SetImage`s, and their feature vectors.

- memory: every row of the memory's images/ parts (stored pHash);
- sample: the rows of a finished sample's index.parquet, their bytes read from the
  memory parts the sample was drawn from (the bytes are the memory's, never re-encoded);
- reference: raw shards (a held-out test set), read like memorize reads them, hashed
  with the memory's fingerprint settings so that distances to the memory mean the same.
`ExtractFeatures` turns SetImages into (set, image id, {space: vector}) and tags the
images that cannot be decoded as (set, error type) failures. With the vision extra, the
vector dict also holds the EfficientNet-Lite0 embedding under `EMBEDDING`, computed in
batches on the same 224x224 pixels the other features see. When the concept classifier
is that same model, `ScoreMemory` runs it once per memory image for both: each image
becomes one small `ScoredImage` (the concept's Scored row, pHash, features).
Image bytes and pixels live only inside the worker that read them (BatchElements does
not shuffle); features are small.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections import defaultdict
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import fsspec
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from memgen.classify import ClassifierSpec
from memgen.classify.concept import Scored, from_probability
from memgen.classify.images import decode_ahead, to_rgb_square
from memgen.classify.onnx_model import (
    EFFICIENTNET,
    VisionMissing,
    concept_probability,
    efficientnet_onnx_path,
    embeddings,
    missing_vision_module,
    scores_and_embeddings,
)
from memgen.copying import query_phash
from memgen.decode import DEFAULT_MAX_PIXELS, ImageError
from memgen.features import EMBEDDING, ImageView, extract
from memgen.fingerprint import FingerprintConfig
from memgen.memory import damaged_data, image_parts, join, part_rows
from memgen.readers import ReaderConfig, read_other_set
from memgen.records import Record, Shard
from memgen.sample_output import INDEX, sample_memory
from memgen.stages.classify import (
    FAILED,
    MAX_BATCH,
    MIN_BATCH,
    READ_BATCH_ROWS,
    SessionFn,
    count_model_images,
    undecodable,
)

MEMORY, SAMPLE, REFERENCE = "memory", "sample", "reference"
FEATURE_SIDE = 224  # the classifier's input square: thumbnails and histograms see what it sees


class SetImage(NamedTuple):
    set_name: str
    image_id: str
    phash: int  # signed int64
    data: bytes
    copies: int = 1  # memory rows: the input records the image stands for
    source: str = ""  # memory rows: where it was first seen


class ScoredImage(NamedTuple):
    """A memory image after its one pass through the model; no bytes, no pixels."""

    scored: Scored  # the concept's row: P(concept) and label, or why it could not be decoded
    phash: int  # stored, so known for undecodable images too (copying uses every memory hash)
    features: dict[str, np.ndarray] | None  # {space: vector} with the embedding; None when undecodable


def read_memory_part(url: str, selected: frozenset[str] | None = None) -> Iterator[SetImage]:
    """The part's images (only `selected` ids when given), a batch of rows at a time."""
    columns = ["image_id", "phash", "image", "copies", "source"]
    for row in part_rows(url, columns, selected, READ_BATCH_ROWS):
        yield SetImage(MEMORY, row["image_id"], row["phash"], row["image"], row["copies"], row["source"])


def sample_parts(sample: str, memory: str | None = None) -> list[tuple[str, frozenset[str]]]:
    """(memory part URL, ids of the sample in it) for a finished sample, sorted by part
    (the memory: `sample_output.sample_memory`)."""
    _, drawn_from = sample_memory(sample, memory)
    image_parts(drawn_from)  # its parts checked before they are read (memory.MemoryDirError)
    # cut short, or rewritten by another tool without memory_part: one line, not Arrow's traceback
    with fsspec.open(join(sample, INDEX), "rb") as f, damaged_data(sample, INDEX):
        index = pq.read_table(f, columns=["image_id", "memory_part"]).to_pylist()
    ids: dict[str, set[str]] = defaultdict(set)
    for row in index:
        ids[row["memory_part"]].add(row["image_id"])
    images = join(drawn_from, "images")
    return [(join(images, posixpath.basename(part)), frozenset(chosen))
            for part, chosen in sorted(ids.items())]


def reference_images(shard: Shard, reader: ReaderConfig, fingerprint: FingerprintConfig,
                     by_default_names: bool = True) -> Iterator:
    """SetImages of one reference shard (readers.read_other_set); what cannot be read or hashed
    is a (set, error type) failure."""
    for item in read_other_set(shard, reader, first_read=True, by_default_names=by_default_names):
        if not isinstance(item, Record):
            yield beam.pvalue.TaggedOutput(FAILED, (REFERENCE, item.error_type))
            continue
        try:
            phash = query_phash(item.data, fingerprint)
        except ImageError as e:
            yield beam.pvalue.TaggedOutput(FAILED, (REFERENCE, e.error_type))
            continue
        yield SetImage(REFERENCE, hashlib.sha256(item.data).hexdigest(), phash, item.data)


def embedding_model() -> str | None:
    """The EfficientNet-Lite0 export, as read_model names it (exported here, on the launcher,
    when not cached), or None without the vision extra: the report then has no efficientnet rows."""
    if missing_vision_module() is not None:
        return None
    try:
        efficientnet_onnx_path()
        return EFFICIENTNET
    except VisionMissing as e:  # onnxruntime is there but torch, needed to export once, is not
        logging.warning("no %s distances: %s", EMBEDDING, e)
        return None


def decode_features(image: SetImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator:
    """(set, image id, {space: vector}, 224x224 RGB pixels), or a (set, error type) failure."""
    try:
        pixels = to_rgb_square(image.data, FEATURE_SIDE, max_pixels)
    except ImageError as e:
        yield beam.pvalue.TaggedOutput(FAILED, (image.set_name, e.error_type))
        return
    yield image.set_name, image.image_id, extract(ImageView(Image.fromarray(pixels), image.phash)), pixels


class _EmbedFn(SessionFn):
    """A batch of decode_features tuples -> (set, id, {space: vector} with the embedding added)."""

    def process(self, batch):
        vectors = embeddings(self.session, np.stack([pixels for *_, pixels in batch]))
        count_model_images(len(batch))
        for (set_name, image_id, feats, _), vector in zip(batch, vectors, strict=True):
            yield set_name, image_id, {**feats, EMBEDDING: vector}


class ExtractFeatures(beam.PTransform):
    """PCollection[SetImage] -> {"features": (set, id, {space: vector}), FAILED: (set, error type)}.

    `model_path`: the EfficientNet-Lite0 export (embedding_model()), or None for no embedding;
    `max_pixels`: larger images are failures (the memory's --max_pixels)."""

    def __init__(self, model_path: str | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__()
        self.model_path, self.max_pixels = model_path, max_pixels

    def expand(self, images):
        decode = beam.FlatMap(decode_features, self.max_pixels).with_outputs(FAILED, main="decoded")
        decoded = images | "Decode" >> decode
        if self.model_path is None:
            features = decoded.decoded | "DropPixels" >> beam.MapTuple(lambda s, i, feats, _: (s, i, feats))
        else:
            features = (decoded.decoded
                        | "Batch" >> beam.BatchElements(MIN_BATCH, MAX_BATCH)
                        | "Embed" >> beam.ParDo(_EmbedFn(self.model_path)))
        return {"features": features, FAILED: decoded[FAILED]}


def _decode_memory(url: str, max_pixels: int) -> Iterator:
    """A memory part -> (SetImage without its bytes, features, 224x224 pixels), decoded in threads
    ahead of the model; an undecodable image is a failed ScoredImage, as the concept counts it."""
    for image, pixels in decode_ahead(read_memory_part(url), _data, FEATURE_SIDE, max_pixels=max_pixels):
        if isinstance(pixels, ImageError):
            failed = undecodable(image.image_id, image.copies, image.source, pixels)
            yield beam.pvalue.TaggedOutput(FAILED, ScoredImage(failed, image.phash, None))
        else:
            yield (image._replace(data=b""), extract(ImageView(Image.fromarray(pixels), image.phash)),
                   pixels)


def _data(image: SetImage) -> bytes:
    return image.data


class _ScoreFn(SessionFn):
    """A batch of _decode_memory tuples -> ScoredImages: P(concept) and the embedding of one run."""

    def __init__(self, spec: ClassifierSpec) -> None:
        super().__init__(spec.model_path)
        self.spec = spec

    def process(self, batch):
        probabilities, vectors = scores_and_embeddings(self.session, np.stack([p for *_, p in batch]))
        count_model_images(len(batch))
        p_concept = concept_probability(probabilities, self.spec.classes, self.spec.scores)
        for (image, feats, _), p, vector in zip(batch, p_concept, vectors, strict=True):
            scored = from_probability(image.image_id, image.copies, image.source, float(p),
                                      self.spec.threshold)
            yield ScoredImage(scored, image.phash, {**feats, EMBEDDING: vector})


class ScoreMemory(beam.PTransform):
    """PBegin -> PCollection[ScoredImage], one per memory image, failures included.

    For a classifier that is the EfficientNet-Lite0 export (uint8 pixels at 224, outputs
    probabilities and `embedding`): each image is decoded once and goes through the model
    once, for the concept section and the memory's distance features alike."""

    def __init__(self, parts: list[str], spec: ClassifierSpec) -> None:
        super().__init__()
        self.parts, self.spec = parts, spec

    def expand(self, pbegin):
        decoded = (pbegin
                   | "Parts" >> beam.Create(self.parts)
                   | "ReadAndDecode" >> beam.FlatMap(_decode_memory, self.spec.max_pixels)
                   .with_outputs(FAILED, main="decoded"))
        scored = (decoded.decoded
                  | "Batch" >> beam.BatchElements(MIN_BATCH, MAX_BATCH)
                  | "Score" >> beam.ParDo(_ScoreFn(self.spec)))
        return (scored, decoded[FAILED]) | "WithFailures" >> beam.Flatten()
