"""Shard readers: one Shard -> a stream of Records and Rejects, in a stable order.

The order matters: a shard is read twice (once to fingerprint, once to write the
kept bytes), and records are matched across the two reads by their ordinal.
Damage never raises: it becomes a Reject, and records before it are kept. Getting the
bytes from where they live (http(s) resumed, network errors as OSErrors) is
memgen.transfer's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace

from memgen.readers.archives import read_warc, read_zip
from memgen.readers.arrow import read_arrow
from memgen.readers.columns import ColumnError, NamedColumns, named_columns
from memgen.readers.config import DEFAULT_IMAGE_COLUMNS, PER_ROW, ReaderConfig, ShardItem
from memgen.readers.fields import MERGE_DEPTH
from memgen.readers.file import read_file
from memgen.readers.mds import read_mds
from memgen.readers.parquet import read_parquet
from memgen.readers.probe import special_file
from memgen.readers.tar import IMAGE_EXTS, OTHER_IMAGE_EXTS, read_tar
from memgen.readers.tfrecord import read_tfrecord
from memgen.records import Reject, Shard
from memgen.shards import compression, open_input
from memgen.transfer import FailsAsOSError, open_error, open_http, open_message

__all__ = ["DEFAULT_IMAGE_COLUMNS", "IMAGE_EXTS", "MERGE_DEPTH", "OTHER_IMAGE_EXTS", "PER_ROW", "ColumnError",
           "NamedColumns", "ReaderConfig", "ShardItem", "named_columns", "read_other_set", "read_shard"]


def read_other_set(shard: Shard, config: ReaderConfig, first_read: bool = False,
                   by_default_names: bool = True) -> Iterator[ShardItem]:
    """A shard of another image set than the memory (evaluate's --reference), read as the
    memory was, but for a Parquet shard that lacks the memory's --image_column, or a TFRecord
    whose first Example lacks that feature: by the default names then (a held-out split of the
    same data names its column alike; a Hugging Face test set beside a memory of `image_data`
    has `image`, img2dataset's TFRecords `jpg`); not `by_default_names` when the column is the
    set's own, named (evaluate's --reference_image_column): a shard without it is then rejects."""
    items = read_shard(shard, config, first_read)
    # a TFRecord's records that are no Example say nothing of its features: the first one that is decides
    # (looked for among the first few: a file of other records is rejects, not held in memory)
    before, first = [], next(items, None)
    while _not_an_example(first) and len(before) < 64:
        before.append(first)
        first = next(items, None)
    if (by_default_names and config.image_column and isinstance(first, Reject)
            and first.error_type == "no_image_column"):
        yield from read_shard(shard, replace(config, image_column=None))
        return
    yield from before
    if first is not None:
        yield first
    yield from items


def _not_an_example(item: ShardItem) -> bool:
    return isinstance(item, Reject) and item.error_type == "not_an_example"


def read_shard(shard: Shard, config: ReaderConfig, first_read: bool = False) -> Iterator[ShardItem]:
    """Every record of the shard, or a Reject for what cannot be read. `first_read`: what a
    shard holds that is worth a warning (a zip's or WARC's members that are not images, a tar's
    members apart from their key's) is said (on the first read only: the re-reads that write
    images and reports would say it again)."""
    reader = {"parquet": read_parquet, "arrow": read_arrow, "file": read_file,
              "tar": functools.partial(read_tar, first_read=first_read),
              "zip": functools.partial(read_zip, first_read=first_read),
              "warc": functools.partial(read_warc, first_read=first_read),
              "tfrecord": read_tfrecord, "mds": read_mds}[shard.kind]
    special = special_file(shard.location)
    if special:  # opening a named pipe waits for a writer: the run never ended
        yield Reject(shard.index, 0, shard.source(), "open", "not_a_file",
                     f"{special}, not a regular file: it is not read")
        return
    try:
        if shard.uri.startswith(("http://", "https://")):
            opened = open_http(shard, config.http_timeout)
        else:
            # network clients raise their own errors: made OSErrors, a store's failure a TransferError
            opened = open_input(shard.location, compression(shard.uri)).open()
            opened = FailsAsOSError(opened)
    except Exception as e:  # noqa: BLE001 - any failure to open is a reject, with its reason
        yield Reject(shard.index, 0, shard.source(), "open", open_error(e), open_message(e)[:500])
        return
    with opened as f:
        yield from reader(shard, f, config)
