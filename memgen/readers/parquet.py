"""The Parquet reader: rows (or a row's list of images) -> Records and Rejects."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memgen.inline import NotBase64, decoded
from memgen.readers.columns import ParquetColumns, is_binary, is_text, shard_columns
from memgen.readers.config import (
    DAMAGE,
    PER_ROW,
    ReaderConfig,
    ShardItem,
    failure,
    row_images,
    too_many_images,
)
from memgen.readers.fields import field_text, finite, row_said
from memgen.readers.keys import Keys
from memgen.readers.parquet_files import image_file
from memgen.readers.rows import batch_rows
from memgen.records import Record, Reject, Shard
from memgen.transfer import error_text

Cell = list[tuple[bytes | None, bytes | None]]  # a row's images: (bytes, path) each


def read_parquet(shard: Shard, f: IO[bytes], config: ReaderConfig) -> Iterator[ShardItem]:
    """Row group by row group: damage in one is a reject for its rows, and reading goes on
    with the next (row groups are independent; a tar, by contrast, ends at its damage). A
    record's ordinal is its row, so that the re-read that writes the kept images finds each
    by its own number even when a row group failed in one read and not in the other (counted,
    the records after a failed group took the numbers of others: changed_during_run)."""
    keys = Keys()
    try:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        row_groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    except DAMAGE + (pa.ArrowException,) as e:
        yield Reject(shard.index, 0, shard.source(), "read", failure(e), error_text(e))
        return
    columns = shard_columns(schema, config, shard)
    if isinstance(columns, Reject):
        yield columns
        return
    # a damaged group's reject is #row_group_N: a key so named gets ~2, in every read (damaged or not)
    groups = [keys(f"row_group_{group}") for group in range(len(row_groups))]
    start = 0
    for group, n_rows in enumerate(row_groups):
        row = start
        try:
            for batch in pf.iter_batches(batch_size=64, row_groups=[group], columns=columns.read):
                yield from batch_items(shard, batch, row, keys, columns, config)
                row += batch.num_rows
        except DAMAGE + (pa.ArrowException,) as e:
            lost = f"rows {row}-{start + n_rows - 1} of row group {group}"
            yield Reject(shard.index, row * columns.per_row,  # its first lost row's
                         shard.source(f"#{groups[group]}"), "read", failure(e),
                         f"{lost}: {error_text(e)}"[:500])
        start += n_rows


def batch_items(shard: Shard, batch: pa.RecordBatch, first_row: int, keys: Keys, columns: ParquetColumns,
                config: ReaderConfig) -> Iterator[ShardItem]:
    """The records and rejects of a batch of a table's rows (a Parquet's, an Arrow IPC
    file's), the first of them row `first_row`: a row's image, or each of its list's. The
    batch's columns are converted before the first is yielded, so a failure there loses
    the batch's rows only (the caller's reject names them from `first_row`)."""
    cells = _image_cells(batch.column(columns.image), columns.listed)
    rows = batch_rows(batch.select(columns.fields))
    for row, (cell, fields) in enumerate(zip(cells, rows, strict=True), start=first_row):
        yield from row_items(shard, row, cell, fields, keys, columns, config)


def row_items(shard: Shard, row: int, cell: Cell | None, fields: dict, keys: Keys, columns: ParquetColumns,
              config: ReaderConfig) -> Iterator[ShardItem]:
    """The records and rejects of a table's row `row`: its image, or each of its list's
    (`cell`: its images, None for a null list), with the text and metadata of `fields`
    (columns.fields' values)."""
    images = min(len(cell), PER_ROW) if columns.listed and cell else 0  # its KEY/N
    key = keys(field_text(fields.get(config.key_column)) or f"{row:09d}", images)
    if not columns.listed:
        yield _cell_item(shard, row, key, columns.image, *cell[0], fields, columns, config)
    elif not cell:  # a null or empty list: no bytes to fingerprint
        yield Reject(shard.index, row * PER_ROW, shard.source(f"#{key}"), "read", "empty",
                     _null_image(columns.image, fields, config, "null" if cell is None else "an empty list"))
    else:
        yield from _listed_items(shard, row, key, cell, fields, columns, config)


def _cell_item(shard: Shard, ordinal: int, key: str, column: str, data: bytes | None, path: bytes | None,
               fields: dict, columns: ParquetColumns, config: ReaderConfig) -> ShardItem:
    """One image cell (bytes, or a Hugging Face {bytes, path}) -> a Record, or a Reject."""
    if data is None and path:  # a Hugging Face image kept as a file beside the Parquet
        data = image_file(shard, ordinal, key, f"{column}.path", path, fields, config)
    if isinstance(data, Reject):
        return data
    if isinstance(data, NotBase64):
        return Reject(shard.index, ordinal, shard.source(f"#{key}"), "read", "not_base64",
                      f"{column} holds text that is not base64: {data.head!r}"
                      f"{row_said(fields, config)}"[:500])
    if data is None:  # a null cell: no bytes to fingerprint
        return Reject(shard.index, ordinal, shard.source(f"#{key}"), "read", "empty",
                      _null_image(column, fields, config))
    return _parquet_item(shard, ordinal, key, data, fields, columns, config)


def _listed_items(shard: Shard, row: int, key: str, cell: Cell, fields: dict, columns: ParquetColumns,
                  config: ReaderConfig) -> Iterator[ShardItem]:
    """The images of a row's list (`datasets`' Sequence(Image()): a conversation's pictures),
    each a record keyed KEY/N, with the row's text and metadata; past PER_ROW one reject."""
    for n, (data, path) in enumerate(row_images(cell)):
        yield _cell_item(shard, row * PER_ROW + n, f"{key}/{n}", f"{columns.image}[{n}]", data, path, fields,
                         columns, config)
    yield from too_many_images(shard, row * PER_ROW, key, len(cell), f"the row's {columns.image}")


def _image_cells(column: pa.Array, listed: bool) -> list[Cell | None]:
    """Each row's images as (bytes, path) pairs: one, or a list column's (None for a null list)."""
    if not listed:
        return [[pair] for pair in zip(*_image_values(column), strict=True)]
    lengths = pc.list_value_length(column).to_pylist()  # None: a null list
    pairs = list(zip(*_image_values(pc.list_flatten(column)), strict=True))
    ends = list(itertools.accumulate(n or 0 for n in lengths))
    return [None if n is None else pairs[end - n: end] for n, end in zip(lengths, ends, strict=True)]


def _image_values(images: pa.Array) -> tuple[list, list]:
    """(bytes, path) of each row of an image column; path None but for a Hugging Face image
    struct {bytes, path}; text is base64 (memgen.inline: bytes, or NotBase64). A null struct is
    a null image: its children are taken through flatten(), which nulls them where the struct
    is null (field() keeps what lies under it, and a struct of non-nullable children read back
    from Parquet holds b"" and "" there: a record of zero bytes, rejected at fingerprint without
    the row's url)."""
    if is_text(images.type):
        return [None if text is None else decoded(text) for text in images.to_pylist()], [None] * len(images)
    if not pa.types.is_struct(images.type):
        return images.to_pylist(), [None] * len(images)
    children = dict(zip([field.name for field in images.type], images.flatten(), strict=True))
    paths = _path_bytes(children["path"]) if "path" in children else [None] * len(images)
    return children["bytes"].to_pylist(), paths


def _path_bytes(paths: pa.Array) -> list[bytes | None]:
    """Each path's bytes as stored, text or binary: a file's name on Linux is bytes, and one that
    is not UTF-8 (latin-1, from a lax writer) is found only by them (decoded by a guess, it named
    no file: a missing reject). A path of another type (a number) names no file: None."""
    t = paths.type.value_type if pa.types.is_dictionary(paths.type) else paths.type
    if not (is_text(t) or is_binary(t)):
        return [None] * len(paths)
    return paths.cast(pa.large_binary()).to_pylist()


def _null_image(column: str, fields: dict, config: ReaderConfig, what: str = "null") -> str:
    """Why a row has no image: its cell is null (or an empty list). With the row's url and, from
    img2dataset's Parquet output, why the crawl failed (`status`, `error_message`): the reject
    is all that is left of the record, and a retry of the download needs them."""
    return (f"{column} is {what}" + row_said(fields, config))[:500]


def _parquet_item(shard: Shard, ordinal: int, key: str, data: bytes, fields: dict,
                  columns: ParquetColumns, config: ReaderConfig) -> ShardItem:
    locator = f"#{key}"
    source = shard.source(locator)
    if len(data) > config.max_bytes:
        return Reject(shard.index, ordinal, source, "read", "too_large",
                      f"{len(data)} bytes > max_bytes {config.max_bytes}", len(data),
                      data[: config.reject_data_cap])
    # a partition's value wins over a column of its name, as pyarrow.dataset and DuckDB read them
    metadata = json.dumps(finite({n: fields[n] for n in columns.metadata} | columns.partitions), default=str,
                          ensure_ascii=False, sort_keys=True)
    return Record(shard.index, ordinal, source, data, field_text(fields.get(columns.caption)),
                  field_text(fields.get(config.url_column)), metadata, locator)
