"""The TFRecord reader: a file's tf.train.Examples (memgen.tfrecordfile) -> Records and Rejects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

from memgen.readers.config import (
    DAMAGE,
    DEFAULT_IMAGE_COLUMNS,
    PER_ROW,
    ReaderConfig,
    ShardItem,
    failure,
    row_images,
    too_many_images,
)
from memgen.readers.fields import field_text, finite, with_partitions
from memgen.readers.keys import Keys
from memgen.records import Record, Reject, Shard
from memgen.tfrecordfile import Example, examples
from memgen.transfer import read_message

# img2dataset writes the image under its encode format (jpg, png, webp); TensorFlow's image
# datasets (ImageNet, the object detection API's) under image/encoded
IMAGE_FEATURES = (*DEFAULT_IMAGE_COLUMNS, "image/encoded")
TXT = "txt"  # img2dataset's caption feature
# an Example's key when it has no --key_column feature: its image file's name (TensorFlow's
# ImageNet and object-detection records), or a clip's MediaPipe MediaSequence id (a video's)
IMAGE_NAME, MEDIA_ID = "image/filename", "clip/media_id"


def read_tfrecord(shard: Shard, f: IO[bytes], config: ReaderConfig) -> Iterator[ShardItem]:
    """Each Example's image (the feature --image_column names, else the first of
    IMAGE_FEATURES it has that holds bytes) as a record, several in one feature as KEY/0,
    KEY/1; a SequenceExample's frames (that feature in its feature lists, when its context
    has none) alike, a record a frame; its caption the --caption_column feature, else
    img2dataset's `txt`; key and url by their columns (without a key feature, its
    image/filename, or a clip's MediaSequence clip/media_id); its other features its metadata. A
    record's ordinal is its Example's place * PER_ROW + the image's. A record that is no
    Example is a reject of its own; damage ends the shard with a reject after the records
    before it, as in a tar."""
    keys = Keys()
    ordinal = 0
    try:
        for example in examples(f, config.max_bytes, config.reject_data_cap):
            ordinal = example.ordinal * PER_ROW
            if example.features is None:  # no key inside it to read: named by its place
                key = keys(f"{example.ordinal:09d}")
                if example.unread is None:  # an image's bytes
                    yield Record(shard.index, ordinal, shard.source(f"#{key}"), example.raw, None, None,
                                 with_partitions(None, shard.partitions), f"#{key}")
                else:
                    data = example.raw[: config.reject_data_cap] if example.raw else None
                    yield Reject(shard.index, ordinal, shard.source(f"#{key}"), "read", *example.unread,
                                 example.size, data)
            else:
                yield from _example_items(shard, ordinal, example, keys, config)
            ordinal = (example.ordinal + 1) * PER_ROW
    except DAMAGE as e:
        yield Reject(shard.index, ordinal, shard.source(), "read", failure(e),
                     read_message(e, shard, config.http_timeout))


def _example_items(shard: Shard, ordinal: int, example: Example, keys: Keys,
                   config: ReaderConfig) -> Iterator[ShardItem]:
    features = example.features
    image = config.image_column or _guessed_image(example)
    fields = {name: values for name, values in features.items() if name != image}
    values = image_values(example, image)
    unusable = _unusable(image, values, example)
    images = 0 if unusable or len(values) == 1 else min(len(values), PER_ROW)  # the KEY/N it takes
    name = IMAGE_NAME if image in features else MEDIA_ID  # a clip's frames: its id
    key = keys(_text(fields.get(config.key_column)) or _text(fields.get(name)) or f"{ordinal // PER_ROW:09d}",
               images)
    caption = _text(fields.get(config.caption_column, fields.get(TXT)))
    if unusable:
        yield Reject(shard.index, ordinal, shard.source(f"#{key}"), "read", *unusable)
        return
    url = _text(fields.get(config.url_column))
    context = _metadata(fields)
    frames = _frame_metadata(example, image) if image not in features else None  # a video's frames
    shared = None if frames else _metadata_json(context, shard)
    for n, data in enumerate(row_images(values)):
        locator = f"#{key}" if len(values) == 1 else f"#{key}/{n}"
        metadata = shared or _metadata_json(context | frames[n], shard)
        yield Record(shard.index, ordinal + n, shard.source(locator), data, caption, url, metadata, locator)
    yield from too_many_images(shard, ordinal, key, len(values),
                               f"its {image} feature" + (" list" if frames else ""))


def _metadata_json(metadata: dict, shard: Shard) -> str:
    """A record's metadata JSON: its shard's Hive partitions win over features of their name."""
    return json.dumps(finite(metadata | dict(shard.partitions)), ensure_ascii=False, sort_keys=True)


def image_values(example: Example, image: str | None) -> list | None:
    """The values of the feature `image` names: in the Example's context, else in its feature
    lists, each step's values in turn (a video's frames, a value a step; a step without one an
    empty image, so frames keep their places); None when it has no such feature."""
    if image is None:
        return None
    if image in example.features:
        return example.features[image]
    steps = example.sequences.get(image)
    return None if steps is None else [value for step in steps for value in (step or [b""])]


def _frame_metadata(example: Example, image: str) -> list[dict]:
    """Each frame's own metadata (in image_values' order): the step's values of the other
    feature lists as long as the frames' (MediaSequence's image/timestamp); lists of another
    length are another stream's steps (audio), not the frames', and are left out."""
    steps = example.sequences[image]
    alongside = {name: other for name, other in example.sequences.items()
                 if name != image and len(other) == len(steps)}
    return [_metadata({name: other[s] for name, other in alongside.items()})
            for s, step in enumerate(steps) for _ in (step or [b""])]


def _metadata(fields: dict[str, list]) -> dict:
    """Features as metadata: bytes that are not text (a mask, a thumbnail) left out."""
    return {name: value for name, values in fields.items() if (value := _value(values)) is not _BINARY}


def _guessed_image(example: Example) -> str | None:
    """The first of IMAGE_FEATURES that holds bytes (`image` may be a shape's integers beside
    `image/encoded`, as a Parquet's image column is the first default name holding bytes),
    in the context, else in the feature lists (MediaPipe's MediaSequence keeps a video's
    frames under image/encoded); else the first it has (its reject says what it holds)."""
    present = [name for names in (example.features, example.sequences) for name in IMAGE_FEATURES
               if name in names]
    holding = (name for name in present if _holds_bytes(image_values(example, name)))
    return next(holding, present[0] if present else None)


def _holds_bytes(values: list | None) -> bool:
    return bool(values) and isinstance(values[0], bytes)


def unnamed_image(example: Example) -> str | None:
    """Why an Example has no image by the default names though features of it hold binary
    bytes (its no_image reject's words, which name them and the flag), else None: said
    before a run, as a Parquet's image column under a name not guessed is."""
    if not _binary_features(example) or _holds_bytes(image_values(example, _guessed_image(example))):
        return None
    return _no_image_said(None, example)


def _binary_features(example: Example) -> list[str]:
    """The features, context's then feature lists', whose bytes are not text: those that
    could be the image."""
    lists = {name: next((step for step in steps if step), []) for name, steps in example.sequences.items()}
    return [name for named in (example.features, lists) for name, values in sorted(named.items())
            if _value(values) is _BINARY]


def _unusable(image: str | None, values: list | None, example: Example) -> tuple[str, str] | None:
    """(error type, why) of an Example whose image feature holds no image bytes, else None:
    no_image_column when it lacks the feature --image_column names, as a Parquet lacking the
    column (evaluate reads a reference set so by the default names)."""
    if values is None:
        return "no_image_column" if image else "no_image", _no_image_said(image, example)[:500]
    if not values:
        return "empty", f"its {image} feature is empty"
    if not isinstance(values[0], bytes):
        kind = "integers" if isinstance(values[0], int) else "numbers"
        return "no_image", f"its {image} feature holds {len(values)} {kind}, not image bytes"
    return None


def _no_image_said(named: str | None, example: Example) -> str:
    """Why an Example has no image: the feature --image_column names is missing, or none is
    under a name guessed; then the flag, with the features that could be it (TensorFlow's
    tutorial says image_raw): binary ones, as a key or caption is UTF-8 text and an image not.
    A SequenceExample's feature lists are named too."""
    context = ", ".join(sorted(example.features))
    listed = f"its features: {context}"
    if example.sequences:
        listed = (f"a tf.train.SequenceExample; its context's features: {context}; "
                  f"its feature lists: {', '.join(example.sequences)}")
    if named:
        return f"no feature {named}; {listed}"
    binary = _binary_features(example)
    hint = f"; binary features {', '.join(binary)}: name the image one with --image_column" if binary else ""
    return f"no image feature ({', '.join(IMAGE_FEATURES)}){hint}; {listed}"


def _text(values: list | None) -> str | None:
    """A caption, url or key feature as text (its first value)."""
    return field_text(values[0]) if values else None


_BINARY = object()  # a feature of bytes that are not UTF-8 text (a mask, a thumbnail): not metadata


def _value(values: list) -> object:
    """A feature's values as metadata: one as itself, several as a list, bytes as text."""
    try:
        values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
    except UnicodeDecodeError:
        return _BINARY
    return values[0] if len(values) == 1 else values
