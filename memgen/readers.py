"""Shard readers: one Shard -> a stream of Records and Rejects, in a stable order.

The order matters: a shard is read twice (once to fingerprint, once to write the
kept bytes), and records are matched across the two reads by their ordinal.
Damage never raises: it becomes a Reject, and records before it are kept.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from memgen.records import Record, Reject, Shard
from memgen.shards import IMAGE_SUFFIXES
from memgen.tarstream import TarDamage, tar_members

IMAGE_EXTS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext
_DAMAGE = (TarDamage, EOFError, OSError, zlib.error, ValueError)


@dataclass(frozen=True)
class ReaderConfig:
    max_bytes: int = 64 << 20  # larger records are rejected without being read whole
    reject_data_cap: int = 1 << 20  # bytes of a rejected record kept for inspection
    image_column: str | None = None  # Parquet: None = first of DEFAULT_IMAGE_COLUMNS
    caption_column: str = "caption"
    url_column: str = "url"
    key_column: str = "key"


DEFAULT_IMAGE_COLUMNS = ("jpg", "image", "img", "png", "webp", "image_bytes", "bytes")
ShardItem = Record | Reject


def read_shard(shard: Shard, config: ReaderConfig) -> Iterator[ShardItem]:
    """Every record of the shard, or a Reject for what cannot be read."""
    reader = {"tar": _read_tar, "parquet": _read_parquet, "file": _read_file}[shard.kind]
    try:
        opened = fsspec.open(shard.uri, "rb", compression="infer", **_stream_options(shard)).open()
    except Exception as e:  # noqa: BLE001 - any failure to open is a reject, with its reason
        yield Reject(shard.index, 0, shard.uri, "open", _open_error(e), _message(e))
        return
    with opened as f:
        yield from reader(shard, f, config)


def _stream_options(shard: Shard) -> dict:
    """Tars and files are read front to back: over HTTP, stream them (servers without Range
    support fail otherwise). Parquet needs random access to its footer."""
    if shard.uri.startswith(("http://", "https://")) and shard.kind != "parquet":
        return {"block_size": 0}
    return {}


def _open_error(e: Exception) -> str:
    return "missing" if isinstance(e, FileNotFoundError) else "unreadable"


def _message(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


class _Ordinals:
    """Numbers the items of one shard in the order they are produced."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def _read_tar(shard: Shard, f, config: ReaderConfig) -> Iterator[ShardItem]:
    ordinal = _Ordinals()
    group: list[tuple[str, str, bytes | None, int]] = []  # (key, ext, data, size)
    current = None
    try:
        for member in tar_members(f, config.max_bytes, config.reject_data_cap):
            match = _KEY_EXT.match(member.name)
            key, ext = (match.group(1), match.group(2).lower()) if match else (member.name, "")
            if key != current and group:
                yield from _group_items(shard, group, ordinal, config)
                group = []
            current = key
            too_large = member.size > config.max_bytes  # then data is only its head
            group.append((key, ext, member.data, -member.size if too_large else member.size))
    except _DAMAGE as e:
        yield from _group_items(shard, group, ordinal, config)
        group = []
        member_name = e.member if isinstance(e, TarDamage) else ""
        where = shard.source(f"#{member_name}" if member_name else "")
        yield Reject(shard.index, ordinal(), where, "read", "corrupt_shard", _message(e))
    yield from _group_items(shard, group, ordinal, config)


def _group_items(shard: Shard, group, ordinal: _Ordinals, config: ReaderConfig) -> Iterator[ShardItem]:
    """One webdataset sample (members sharing a key) -> a Record, or Rejects."""
    if not group:
        return
    key = group[0][0]
    locator = f"#{key}"
    source = shard.source(locator)
    by_ext = {ext: (data, size) for _, ext, data, size in group}
    images = [(ext, data, size) for _, ext, data, size in group if ext.rsplit(".", 1)[-1] in IMAGE_EXTS]
    if not images:
        data = group[0][2] or b""
        exts = ",".join(ext or "(none)" for _, ext, _, _ in group)
        yield Reject(shard.index, ordinal(), source, "read", "no_image",
                     f"no image member among extensions {exts}", len(data),
                     data[: config.reject_data_cap])
        return
    caption = _text(by_ext.get("txt", (None, 0))[0])
    meta_text, url = _metadata(_text(by_ext.get("json", (None, 0))[0]))
    for n, (ext, data, size) in enumerate(images):
        member_locator = locator if n == 0 else f"{locator}.{ext}"
        member_source = shard.source(member_locator)
        if size < 0:
            yield Reject(shard.index, ordinal(), member_source, "read", "too_large",
                         f"{-size} bytes > max_bytes {config.max_bytes}", -size, data)
        elif n > 0:
            yield Reject(shard.index, ordinal(), member_source, "read", "extra_image_member",
                         f"sample {key!r} has more than one image member", size,
                         data[: config.reject_data_cap])
        else:
            yield Record(shard.index, ordinal(), member_source, data, caption, url, meta_text, member_locator)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace").strip()


def _metadata(text: str | None) -> tuple[str | None, str | None]:
    """(metadata JSON text, url) of a sample's .json member. Text that is not JSON is kept
    as a JSON string, so the column always parses (DuckDB's `metadata::JSON`) and nothing
    of it is lost."""
    if text is None:
        return None, None
    try:
        parsed = json.loads(text)
    except ValueError:
        return json.dumps(text, ensure_ascii=False), None
    url = parsed.get("url") if isinstance(parsed, dict) else None
    return text, None if url is None else str(url)


def _read_parquet(shard: Shard, f, config: ReaderConfig) -> Iterator[ShardItem]:
    ordinal = _Ordinals()
    try:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        image_col = _image_column(pf.schema_arrow, config)
        meta_cols = [n for n in names if n != image_col and not _is_binary(pf.schema_arrow.field(n).type)]
        row = 0
        for batch in pf.iter_batches(batch_size=64, columns=[image_col, *meta_cols]):
            images = batch.column(image_col)
            if pa.types.is_struct(images.type):
                images = images.field("bytes")
            meta = batch.select(meta_cols).to_pylist()
            for data, fields in zip(images.to_pylist(), meta, strict=True):
                key = str(fields.get(config.key_column) or f"{row:09d}")
                row += 1
                yield _parquet_item(shard, ordinal(), key, data or b"", fields, config)
    except _DAMAGE + (pa.ArrowException, KeyError) as e:
        yield Reject(shard.index, ordinal(), shard.uri, "read", _parquet_error(e), _message(e))


def _image_column(schema: pa.Schema, config: ReaderConfig) -> str:
    candidates = [config.image_column] if config.image_column else DEFAULT_IMAGE_COLUMNS
    for name in candidates:
        if name in schema.names:
            return name
    raise KeyError(f"no image column among {list(candidates)}; columns are {schema.names}")


def _parquet_error(e: Exception) -> str:
    return "no_image_column" if isinstance(e, KeyError) else "corrupt_shard"


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_struct(t)


def _parquet_item(shard: Shard, ordinal: int, key: str, data: bytes, fields: dict,
                  config: ReaderConfig) -> ShardItem:
    locator = f"#{key}"
    source = shard.source(locator)
    if len(data) > config.max_bytes:
        return Reject(shard.index, ordinal, source, "read", "too_large",
                      f"{len(data)} bytes > max_bytes {config.max_bytes}", len(data),
                      data[: config.reject_data_cap])
    caption = fields.get(config.caption_column)
    url = fields.get(config.url_column)
    metadata = json.dumps(fields, default=str, ensure_ascii=False, sort_keys=True)
    return Record(shard.index, ordinal, source, data,
                  None if caption is None else str(caption), None if url is None else str(url),
                  metadata, locator)


def _read_file(shard: Shard, f, config: ReaderConfig) -> Iterator[ShardItem]:
    try:
        data = f.read(config.max_bytes + 1)
    except _DAMAGE as e:
        yield Reject(shard.index, 0, shard.uri, "read", "unreadable", _message(e))
        return
    if len(data) > config.max_bytes:
        yield Reject(shard.index, 0, shard.uri, "read", "too_large",
                     f"more than max_bytes {config.max_bytes}", len(data),
                     data[: config.reject_data_cap])
        return
    yield Record(shard.index, 0, shard.uri, data)
