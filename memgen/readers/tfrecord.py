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


def read_tfrecord(shard: Shard, f: IO[bytes], config: ReaderConfig) -> Iterator[ShardItem]:
    """Each Example's image (the feature --image_column names, else the first of
    IMAGE_FEATURES it has that holds bytes) as a record, several in one feature as KEY/0,
    KEY/1; its caption the --caption_column feature, else img2dataset's `txt`; key and url by
    their columns; its other features its metadata. A record's ordinal is its Example's place * PER_ROW + the
    image's. A record that is no Example is a reject of its own; damage ends the shard with a
    reject after the records before it, as in a tar."""
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
    image = config.image_column or _guessed_image(features)
    fields = {name: values for name, values in features.items() if name != image}
    values = features.get(image) if image else None
    unusable = _unusable(image, values, example)
    images = 0 if unusable or len(values) == 1 else min(len(values), PER_ROW)  # the KEY/N it takes
    key = keys(_text(fields.get(config.key_column)) or f"{ordinal // PER_ROW:09d}", images)
    caption = _text(fields.get(config.caption_column, fields.get(TXT)))
    metadata = {name: value for name, values in fields.items() if (value := _value(values)) is not _BINARY}
    metadata = json.dumps(finite(metadata | dict(shard.partitions)), ensure_ascii=False, sort_keys=True)
    if unusable:
        yield Reject(shard.index, ordinal, shard.source(f"#{key}"), "read", *unusable)
        return
    url = _text(fields.get(config.url_column))
    for n, data in enumerate(row_images(values)):
        locator = f"#{key}" if len(values) == 1 else f"#{key}/{n}"
        yield Record(shard.index, ordinal + n, shard.source(locator), data, caption, url, metadata, locator)
    yield from too_many_images(shard, ordinal, key, len(values), f"its {image} feature")


def _guessed_image(features: dict[str, list]) -> str | None:
    """The first of IMAGE_FEATURES that holds bytes (`image` may be a shape's integers beside
    `image/encoded`, as a Parquet's image column is the first default name holding bytes), else
    the first it has (its reject says what it holds)."""
    present = [name for name in IMAGE_FEATURES if name in features]
    return next((n for n in present if features[n] and isinstance(features[n][0], bytes)),
                present[0] if present else None)


def unnamed_image(example: Example) -> str | None:
    """Why an Example has no image by the default names though features of it hold binary
    bytes (its no_image reject's words, which name them and the flag), else None: said
    before a run, as a Parquet's image column under a name not guessed is."""
    image = _guessed_image(example.features)
    values = example.features.get(image) if image else None
    binary = any(_value(v) is _BINARY for v in example.features.values())
    return _no_image_said(None, example) if binary and not (values and isinstance(values[0], bytes)) else None


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
    A SequenceExample's feature lists (video frames) are named: only its context is read."""
    features = example.features
    listed = f"its features: {', '.join(sorted(features))}"
    if example.sequences:
        listed = (f"a tf.train.SequenceExample, whose feature lists ({', '.join(example.sequences)}) "
                  f"are not read; its context's features: {', '.join(sorted(features))}")
    if named:
        return f"no feature {named}; {listed}"
    binary = [name for name, values in sorted(features.items()) if _value(values) is _BINARY]
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
