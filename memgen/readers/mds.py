"""The MDS reader: a MosaicML Streaming shard's samples (memgen.mdsfile) -> Records and
Rejects, a sample read as a table's row (a Parquet's: the same columns, lists of images)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

from memgen.inline import NotBase64, decoded
from memgen.mdsfile import Sample, mds_schema, mds_shard
from memgen.readers.columns import shard_columns
from memgen.readers.config import DAMAGE, ReaderConfig, ShardItem, failure
from memgen.readers.keys import Keys
from memgen.readers.parquet import Cell, row_items
from memgen.records import Reject, Shard
from memgen.transfer import read_message


def read_mds(shard: Shard, f: IO[bytes], config: ReaderConfig) -> Iterator[ShardItem]:
    """Sample by sample, front to back: a sample's image (the --image_column column, else
    the first default name holding bytes), caption, url, key and metadata as a Parquet row's;
    a sample that does not decode, or over --max_bytes, is a reject of its own (the offsets
    frame the next); a file cut short ends the shard with a reject after the samples before
    it. A record's ordinal is its sample's place (* PER_ROW for a list of images)."""
    keys = Keys()
    try:
        declared, samples = mds_shard(f, config.max_bytes, config.reject_data_cap)
    except DAMAGE as e:
        yield Reject(shard.index, 0, shard.source(), "read", failure(e),
                     read_message(e, shard, config.http_timeout))
        return
    columns = shard_columns(mds_schema(declared), config, shard)
    if isinstance(columns, Reject):
        yield columns
        return
    row = 0
    try:
        for sample in samples:
            row = sample.ordinal
            if sample.values is None:
                yield _unread(shard, sample, keys(f"{row:09d}"), columns.per_row)
            else:
                fields = {name: sample.values[name] for name in columns.fields}
                cell = _cell(sample.values[columns.image], columns.listed)
                yield from row_items(shard, row, cell, fields, keys, columns, config)
            row += 1
    except DAMAGE as e:
        yield Reject(shard.index, row * columns.per_row, shard.source(), "read", failure(e),
                     f"samples from {row} on: {read_message(e, shard, config.http_timeout)}"[:500])


def _cell(value: object, listed: bool) -> Cell:
    """A sample's images as a Parquet row's (bytes, path) pairs: text is base64 (memgen.inline),
    as is a json column's value named the image (its JSON text: a not_base64 reject that shows it)."""
    return [(_image_bytes(image), None) for image in (value if listed else [value])]


def _image_bytes(value: object) -> bytes | NotBase64:
    if isinstance(value, bytes):
        return value
    return decoded(value if isinstance(value, str) else json.dumps(value))


def _unread(shard: Shard, sample: Sample, key: str, per_row: int) -> Reject:
    error_type, why = sample.unread
    return Reject(shard.index, sample.ordinal * per_row, shard.source(f"#{key}"), "read", error_type, why,
                  sample.size, sample.head or None)
