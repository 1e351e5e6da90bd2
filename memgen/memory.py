"""The memory on disk: table folders of Parquet parts and manifest.json (written last).

Pure I/O through fsspec, no Beam. A part file is written under a hidden temporary
name and renamed, so readers (pyarrow.dataset, DuckDB globs) never see half a file;
a memory is finished only when its manifest exists.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from memgen.schema import table_schema

TABLES = ("images", "duplicates", "rejects")
MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
ROW_GROUP_BYTES = 64 << 20  # image rows are buffered up to this before a row group is written


class MemoryDirError(ValueError):
    """A memory directory that cannot be used as asked (missing, unfinished, finished)."""


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


def part_name(shard_index: int) -> str:
    return f"part-{shard_index:06d}.parquet"


def write_rows(url: str, table: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows to a Parquet file (zstd) atomically; returns the row count (0: no file)."""
    schema = table_schema(table)
    fs, path = fsspec.core.url_to_fs(url)
    tmp = posixpath.join(posixpath.dirname(path), "." + posixpath.basename(path) + ".tmp")
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    n = 0
    writer = None
    with fs.open(tmp, "wb") as f:
        for batch in _batches(rows):
            if writer is None:
                writer = pq.ParquetWriter(f, schema, compression="zstd")
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
        if writer is not None:
            writer.close()
    if n:
        fs.mv(tmp, path)
    else:
        fs.rm(tmp)
    return n


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        batch.append(row)
        size += len(row.get("image") or b"") + len(row.get("data") or b"") + 200
        if size >= ROW_GROUP_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_manifest(memory: str) -> dict[str, Any] | None:
    """The manifest of a finished memory, or None."""
    fs, path = fsspec.core.url_to_fs(join(memory, MANIFEST))
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)


def write_manifest(memory: str, manifest: dict[str, Any]) -> None:
    fs, path = fsspec.core.url_to_fs(join(memory, MANIFEST))
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)


def prepare_output(memory: str) -> None:
    """Make `memory` ready for a new run: refuse a finished one, clear an unfinished one."""
    if read_manifest(memory) is not None:
        raise MemoryDirError(f"{memory} already holds a finished memory (manifest.json); "
                           "choose another --memory or delete it")
    fs, path = fsspec.core.url_to_fs(memory)
    for table in TABLES:
        folder = posixpath.join(path, table)
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
    fs.makedirs(path, exist_ok=True)


def open_table(memory: str, table: str) -> ds.Dataset:
    """A finished memory's table as a pyarrow dataset (empty when the table has no parts)."""
    if read_manifest(memory) is None:
        raise MemoryDirError(f"{memory} is not a finished memory (no manifest.json)")
    fs, path = fsspec.core.url_to_fs(join(memory, table))
    files = sorted(fs.glob(posixpath.join(path, "part-*.parquet")))
    return ds.dataset(files, schema=table_schema(table), format="parquet", filesystem=fs)
