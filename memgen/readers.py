"""Shard readers: one Shard -> a stream of Records and Rejects, in a stable order.

The order matters: a shard is read twice (once to fingerprint, once to write the
kept bytes), and records are matched across the two reads by their ordinal.
Damage never raises: it becomes a Reject, and records before it are kept. Getting the
bytes from where they live (http(s) resumed, network errors as OSErrors) is
memgen.transfer's.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import lzma
import math
import os
import posixpath
import re
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, NamedTuple
from urllib.parse import quote, urljoin

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from warcio.recordloader import ArchiveLoadFailed

from memgen.decode import identified
from memgen.imagefolder import folder_row, named_rows, row_in
from memgen.inline import NotBase64, decoded
from memgen.records import Record, Reject, Shard, printable
from memgen.shards import (
    HTTP_TIMEOUT,
    IMAGE_SUFFIXES,
    OTHER_IMAGE_SUFFIXES,
    compression,
    counted,
    folder_entries,
    hidden,
    open_input,
    shard_kind,
    storage_options,
    url_fs,
)
from memgen.tarstream import TarDamage, read_up_to, tar_members
from memgen.text import decode_text
from memgen.transfer import (
    FailsAsOSError,
    error_text,
    open_error,
    open_http,
    open_message,
    read_message,
    silent_server,
    transfer_failed,
)
from memgen.warcfile import warc_images
from memgen.ziparchive import NoBytes, files, member_bytes

IMAGE_EXTS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)
OTHER_IMAGE_EXTS = frozenset(s.lstrip(".") for s in OTHER_IMAGE_SUFFIXES)
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext
_log = logging.getLogger(__name__)
_DAMAGE = (TarDamage, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class ReaderConfig:
    max_bytes: int = 64 << 20  # larger records are rejected without being read whole
    reject_data_cap: int = 1 << 20  # bytes of a rejected record kept for inspection
    image_column: str | None = None  # Parquet: None = first of DEFAULT_IMAGE_COLUMNS
    caption_column: str = "caption"
    url_column: str = "url"
    key_column: str = "key"
    http_timeout: float = HTTP_TIMEOUT  # seconds an http(s) server may send nothing


_Cell = list[tuple[bytes | None, bytes | None]]  # a row's images: (bytes, path) each
PER_ROW = 1 << 16  # images read from one row's list column (its records' ordinals: row * PER_ROW + n)
DEFAULT_IMAGE_COLUMNS = ("jpg", "image", "img", "png", "webp", "image_bytes", "bytes")
ShardItem = Record | Reject


def read_other_set(shard: Shard, config: ReaderConfig, first_read: bool = False) -> Iterator[ShardItem]:
    """A shard of another image set than the memory (evaluate's --reference), read as the
    memory was, but for a Parquet shard that lacks the memory's --image_column: by the default
    names then (a held-out split of the same data names its column alike; a Hugging Face test
    set beside a memory of `image_data` has `image`, and evaluate has no flag to name it)."""
    items = read_shard(shard, config, first_read)
    first = next(items, None)
    if config.image_column and isinstance(first, Reject) and first.error_type == "no_image_column":
        yield from read_shard(shard, replace(config, image_column=None))
        return
    if first is not None:
        yield first
    yield from items


def read_shard(shard: Shard, config: ReaderConfig, first_read: bool = False) -> Iterator[ShardItem]:
    """Every record of the shard, or a Reject for what cannot be read. `first_read`: what a
    shard holds that is worth a warning (a zip's or WARC's members that are not images, a tar's
    members apart from their key's) is said (on the first read only: the re-reads that write
    images and reports would say it again)."""
    reader = {"parquet": _read_parquet, "file": _read_file,
              "tar": functools.partial(_read_tar, first_read=first_read),
              "zip": functools.partial(_read_zip, first_read=first_read),
              "warc": functools.partial(_read_warc, first_read=first_read)}[shard.kind]
    special = _special_file(shard.location)
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


_SPECIAL = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
            (stat.S_ISBLK, "a device"))


def _special_file(location: str) -> str | None:
    """What a local path names when it is a pipe, socket or device, else None (a regular
    file, a folder, a remote URL, nothing: opening it says so)."""
    if "://" in location and not location.startswith("file://"):
        return None
    path = url_fs(location)[1]
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the name (a Parquet's image path); opening says so
        return None
    return next((what for test, what in _SPECIAL if test(mode)), None)


_Member = tuple[str, str, bytes | None, int]  # a tar member in a sample: (key, ext, data, size)


class _Ordinals:
    """Numbers the items of one shard in the order they are produced."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


class _Keys:
    """Keeps the keys of one shard's records unique, so each has its own source: a key seen
    before (a tar that repeats a key further on, a Parquet key column with repeats) gets
    "~2", "~3", ... appended."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        # the suffix each key last got: its search starts there (every one below it is taken),
        # or a key that repeats n times tried n^2/2 names (a Parquet of 16,000 rows, 25 s)
        self.last: dict[str, int] = {}

    def __call__(self, key: str) -> str:
        n = self.last.get(key, 1)
        unique = key if n == 1 else f"{key}~{n}"
        while unique in self.seen:
            n += 1
            unique = f"{key}~{n}"
        self.seen.add(unique)
        self.last[key] = n
        return unique


def _read_tar(shard: Shard, f, config: ReaderConfig, first_read: bool) -> Iterator[ShardItem]:
    ordinal, keys = _Ordinals(), _Keys()
    group: list[_Member] = []
    unusable: list[tuple[str, str, str]] = []  # its link, device and pipe members: (ext, error type, said)
    keys_seen: set[str] = set()
    apart = 0  # samples whose key an earlier sample, not the one before, had
    try:
        for member in tar_members(f, config.max_bytes, config.reject_data_cap):
            name = printable(member.name)
            match = _KEY_EXT.match(name)
            key, ext = (match.group(1), match.group(2).lower()) if match else (name, "")
            # a sample ends where the key changes or where one of its extensions comes again
            # (k.jpg k.txt k.jpg k.txt: two samples, the second "k~2"; webdataset stops there)
            if group and (key != group[0][0] or any(ext == seen for _, seen, _, _ in group)):
                yield from _group_items(shard, group, ordinal, keys, config, unusable)
                keys_seen.add(group[0][0])
                apart += key in keys_seen and key != group[0][0]
                group, unusable = [], []
            if member.link is not None:
                unusable.append((ext, "link_member", f"{name} is a link to {printable(member.link)} (a tar "
                                                "stores a link's bytes under the name linked to)"))
            elif member.special is not None:
                unusable.append((ext, "not_a_file", f"{name} is {member.special}, not a regular file"))
            too_large = member.size > config.max_bytes  # then data is only its head
            group.append((key, ext, member.data, -member.size if too_large else member.size))
    except _DAMAGE as e:
        yield from _group_items(shard, group, ordinal, keys, config, unusable)
        group, unusable = [], []
        member_name = printable(e.member) if isinstance(e, TarDamage) else ""
        where = shard.source(f"#{member_name}" if member_name else "")
        said = read_message(e, shard, config.http_timeout)
        yield Reject(shard.index, ordinal(), where, "read", _failure(e), said)
    yield from _group_items(shard, group, ordinal, keys, config, unusable)
    if first_read and apart:  # a folder tarred as it lies on disk: its captions became no_image rejects
        _log.warning("%s: %d samples' members lie apart from the others of their key (KEY.txt not next to "
                     "KEY.jpg), each read as a sample of its own, as webdataset reads them: pack the tar "
                     "with `tar --sort=name`", shard.uri, apart)


def _failure(e: BaseException) -> str:
    """A shard's read that failed: unreadable when storage failed to deliver (worth a retry),
    else corrupt_shard."""
    return "unreadable" if transfer_failed(e) else "corrupt_shard"


def _group_items(shard: Shard, group: list[_Member], ordinal: _Ordinals, keys: _Keys, config: ReaderConfig,
                 unusable: list[tuple[str, str, str]]) -> Iterator[ShardItem]:
    """One webdataset sample (members sharing a key) -> a Record, or Rejects; `unusable`: its
    members that hold no bytes of their own (links, devices, pipes), as (ext, error type, said).
    When its image is one, the sample is a reject of the first one's type; else each is a
    reject of its own beside the sample's record (a linked caption costs the image nothing)."""
    if not group:
        return
    key = keys(group[0][0])
    unusable_exts = {ext for ext, _, _ in unusable}
    if any(ext in unusable_exts for ext, _, _ in _image_members(group)):
        said = "; ".join(message for _, _, message in unusable)
        yield Reject(shard.index, ordinal(), shard.source(f"#{key}"), "read", unusable[0][1], said)
        return
    regular = [member for member in group if member[1] not in unusable_exts]
    if regular:
        yield from _sample_items(shard, regular, ordinal, key, config)
    for ext, error_type, said in unusable:  # a member without a suffix (COPYING) is its key alone
        locator = f"#{key}.{ext}" if ext else f"#{key}"
        yield Reject(shard.index, ordinal(), shard.source(locator), "read", error_type, said)


def _sample_items(shard: Shard, group: list[_Member], ordinal: _Ordinals, key: str, config: ReaderConfig
                  ) -> Iterator[ShardItem]:
    """A sample of regular members -> a Record, or Rejects."""
    locator = f"#{key}"
    source = shard.source(locator)
    images = _image_members(group)
    if not images:
        data, size = group[0][2] or b"", abs(group[0][3])  # negative: too large, its head read
        exts = ",".join(ext or "(none)" for _, ext, _, _ in group)
        yield Reject(shard.index, ordinal(), source, "read", "no_image",
                     f"no image member among extensions {exts}", size, data[: config.reject_data_cap])
        return
    caption_member, meta_member = (_sidecar(group, name, images[0][0]) for name in ("txt", "json"))
    cut = [f".{ext} member is {-size} bytes" for ext, _, size in (caption_member, meta_member) if size < 0]
    caption = decode_text(caption_member.data)
    meta_text, url = _metadata(decode_text(meta_member.data))
    sidecars = {ext for ext, _, _ in images} | {caption_member.ext, meta_member.ext, ""}
    texts = _text_members([(ext, data) for _, ext, data, size in group if ext not in sidecars and size >= 0])
    meta_text = _with_partitions(_with_fields(meta_text, texts), shard.partitions)
    url = url or texts.get("url")  # a `.url` member, when the .json names none
    for n, (ext, data, size) in enumerate(images):
        member_locator = locator if n == 0 else f"{locator}.{ext}"
        member_source = shard.source(member_locator)
        if size < 0:
            yield Reject(shard.index, ordinal(), member_source, "read", "too_large",
                         f"{-size} bytes > max_bytes {config.max_bytes}", -size, data)
        elif n == 0 and cut:  # its caption or metadata would be kept cut short
            yield Reject(shard.index, ordinal(), member_source, "read", "too_large",
                         f"its {' and '.join(cut)} > max_bytes {config.max_bytes}", size,
                         data[: config.reject_data_cap])
        elif n > 0:
            yield Reject(shard.index, ordinal(), member_source, "read", "extra_image_member",
                         f"sample {key!r} has more than one image member", size,
                         data[: config.reject_data_cap])
        else:
            yield Record(shard.index, ordinal(), member_source, data, caption, url, meta_text, member_locator)


def _image_members(group: list[_Member]) -> list[tuple[str, bytes | None, int]]:
    """A sample's image members (ext, data, size): those with a picture suffix, else those
    with a suffix that is one only sometimes (shards.OTHER_IMAGE_SUFFIXES)."""
    for exts in (IMAGE_EXTS, OTHER_IMAGE_EXTS):
        found = [(ext, data, size) for _, ext, data, size in group if ext.rsplit(".", 1)[-1] in exts]
        if found:
            return found
    return []


class _Sidecar(NamedTuple):
    ext: str
    data: bytes | None
    size: int  # negative: larger than max_bytes, its head read


_NO_SIDECAR = _Sidecar("", None, 0)


def _sidecar(group: list[_Member], name: str, image_ext: str) -> _Sidecar:
    """The sample's `name` member ("txt", "json"): a dotted key such as img.v2.jpg has the
    sidecars img.v2.txt and img.v2.json (webdataset: key "img", extensions "v2.jpg", "v2.txt",
    "v2.json"). Preferred: the one named like the image (v2.txt for v2.jpg), then plain
    "txt", then any "*.txt"."""
    middle = image_ext.rpartition(".")[0]
    wanted = ([f"{middle}.{name}"] if middle else []) + [name]
    by_ext = {ext: _Sidecar(ext, data, size) for _, ext, data, size in group}
    for ext in wanted:
        if ext in by_ext:
            return by_ext[ext]
    return next((member for ext, member in by_ext.items() if ext.endswith("." + name)), _NO_SIDECAR)


def _metadata(text: str | None) -> tuple[str | None, str | None]:
    """(metadata JSON text, url) of a sample's .json member. Text that is not JSON is kept
    as a JSON string, so the column always parses (DuckDB's `metadata::JSON`) and nothing
    of it is lost; NaN and Infinity, which Python's parser takes but JSON has not, become
    null."""
    if text is None:
        return None, None
    if _json_deeper_than(text, MERGE_DEPTH):  # parsed or not as deep as the stack allows: not the same
        return json.dumps(text, ensure_ascii=False), None  # on every worker
    nonfinite: list[str] = []
    try:
        parsed = json.loads(text, parse_constant=lambda name: nonfinite.append(name))  # -> None
    except ValueError:
        return json.dumps(text, ensure_ascii=False), None
    url = _field_text(parsed.get("url")) if isinstance(parsed, dict) else None
    if nonfinite or "\\u" in text:  # NaN, or escapes that may leave half a character
        dumped = json.dumps(parsed, ensure_ascii=False)
        if nonfinite or _SURROGATE.search(dumped):  # kept, DuckDB's metadata::JSON failed on it
            text, url = _whole_characters(dumped), url and _whole_characters(url)
    return text, url


def _text_members(members: list[tuple[str, bytes | None]]) -> dict[str, str]:
    """{ext: text} of a sample's other members that are UTF-8 text (webdataset's `.cls`
    labels, `.id`, `.url`); binary ones (features, masks) are left out."""
    texts = {}
    for ext, data in members:
        try:
            text = (data or b"").decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
        if text and "\x00" not in text:
            texts[ext] = text.strip()
    return texts


def _with_fields(meta_text: str | None, fields: dict[str, object]) -> str | None:
    """The metadata JSON with more fields: a sample's other text members under their
    extension, as a Parquet shard's other columns are (only image, caption and metadata were
    kept), an image's row of its folder's metadata file. A key the .json has keeps its value;
    a .json that is not an object is kept under "json"."""
    if not fields:
        return meta_text
    parsed = _metadata_object(meta_text)
    merged = parsed | {name: value for name, value in fields.items() if name not in parsed}
    # _finite: a number too large for a float (1e400) was read as inf, which JSON has not;
    # str: a metadata file's dates and decimals, as a Parquet shard's columns (_parquet_item)
    return json.dumps(_finite(merged), ensure_ascii=False, default=str)


def _with_partitions(meta_text: str | None, partitions: tuple[tuple[str, str | None], ...]) -> str | None:
    """The metadata JSON of a tar sample or an image file with its shard's Hive partitions
    (Shard.partitions), as a Parquet shard's rows have them: a partition wins over a key of
    its name in the .json (as over a Parquet column: pyarrow.dataset, DuckDB); a .json that is
    not an object is kept under "json". Without partitions, the metadata as it was read."""
    if not partitions:
        return meta_text
    return json.dumps(_finite(_metadata_object(meta_text) | dict(partitions)), ensure_ascii=False)


def _metadata_object(meta_text: str | None) -> dict:
    """The metadata JSON (_metadata's, strict, at most MERGE_DEPTH deep) as an object to add
    keys to: {} for none, a value that is not an object (a list, text that was not JSON)
    under "json"."""
    parsed = {} if meta_text is None else json.loads(meta_text)
    return parsed if isinstance(parsed, dict) else {"json": parsed}


# json.loads, _finite and json.dumps recurse a level a frame (or two): a .json of 500-1000
# levels raised RecursionError out of the reader (the run failed), or parsed or not as deep
# as the caller's stack allowed; a fixed limit, so every worker writes the same
MERGE_DEPTH = 200


def _json_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text nests lists and objects more than `limit` levels (brackets inside
    strings aside), without parsing it; counted only where it has that many brackets. The
    strings and other text are dropped by a regex (a Python loop a character cost 30 times
    json.loads on a Segment Anything .json), and an unclosed string runs to the end, so the
    scan is linear."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", text)
    return max(itertools.accumulate(map(_NESTING.__getitem__, brackets)), default=0) > limit


_NOT_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[^\[\]{}"]+', re.DOTALL)
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(text: str) -> str:
    """`text` with U+FFFD for each half of a UTF-16 pair JSON's \\uD83D escapes can leave alone
    (a crawler cut an emoji in two): no UTF-8 writer takes it, and the run ended at the first.
    Only JSON makes them: Arrow's strings and decoded bytes are whole."""
    return _SURROGATE.sub("\ufffd", text)


def _field_text(value: object) -> str | None:
    """A caption, url or key value as text: strings as they are, bytes decoded, anything
    else (a number, a list, a dict) as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):  # a binary column: decoded as a tar's .txt is
        return decode_text(value)
    return json.dumps(_finite(value), default=str, ensure_ascii=False, sort_keys=True)


def _finite(value: object) -> object:
    """`value` with NaN and infinite floats, which JSON has not, as None (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _read_parquet(shard: Shard, f, config: ReaderConfig) -> Iterator[ShardItem]:
    """Row group by row group: damage in one is a reject for its rows, and reading goes on
    with the next (row groups are independent; a tar, by contrast, ends at its damage). A
    record's ordinal is its row, so that the re-read that writes the kept images finds each
    by its own number even when a row group failed in one read and not in the other (counted,
    the records after a failed group took the numbers of others: changed_during_run)."""
    keys = _Keys()
    try:
        pf = pq.ParquetFile(f)
        columns = _ParquetColumns(pf.schema_arrow, config, dict(shard.partitions))
        row_groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    except _DAMAGE + (pa.ArrowException,) as e:
        yield Reject(shard.index, 0, shard.source(), "read", _failure(e), error_text(e))
        return
    except ColumnError as e:
        yield Reject(shard.index, 0, shard.source(), "read", e.error_type, str(e))
        return
    per_row = PER_ROW if columns.listed else 1  # a row's records' ordinals: row * per_row + i
    start = 0
    for group, n_rows in enumerate(row_groups):
        row = start
        try:
            for batch in pf.iter_batches(batch_size=64, row_groups=[group], columns=columns.read):
                cells = _image_cells(batch.column(columns.image), columns.listed)
                rows = _rows(batch.select(columns.fields))
                for cell, fields in zip(cells, rows, strict=True):
                    key = keys(_field_text(fields.get(config.key_column)) or f"{row:09d}")
                    if not columns.listed:
                        yield _cell_item(shard, row, key, columns.image, *cell[0], fields, columns, config)
                    elif not cell:  # a null or empty list: no bytes to fingerprint
                        yield Reject(shard.index, row * per_row, shard.source(f"#{key}"), "read", "empty",
                                     _null_image(columns.image, fields, config, "null" if cell is None
                                                 else "an empty list"))
                    else:
                        yield from _listed_items(shard, row, key, cell, fields, columns, config)
                    row += 1
        except _DAMAGE + (pa.ArrowException,) as e:
            lost = f"rows {row}-{start + n_rows - 1} of row group {group}"
            yield Reject(shard.index, row * per_row, shard.source(f"#row_group_{group}"), "read",  # its first
                         _failure(e), f"{lost}: {error_text(e)}"[:500])  # lost row's
        start += n_rows


def _cell_item(shard: Shard, ordinal: int, key: str, column: str, data: bytes | None, path: bytes | None,
               fields: dict, columns: _ParquetColumns, config: ReaderConfig) -> ShardItem:
    """One image cell (bytes, or a Hugging Face {bytes, path}) -> a Record, or a Reject."""
    if data is None and path:  # a Hugging Face image kept as a file beside the Parquet
        data = _image_file(shard, ordinal, key, f"{column}.path", path, fields, config)
    if isinstance(data, Reject):
        return data
    if isinstance(data, NotBase64):
        return Reject(shard.index, ordinal, shard.source(f"#{key}"), "read", "not_base64",
                      f"{column} holds text that is not base64: {data.head!r}"
                      f"{_row_said(fields, config)}"[:500])
    if data is None:  # a null cell: no bytes to fingerprint
        return Reject(shard.index, ordinal, shard.source(f"#{key}"), "read", "empty",
                      _null_image(column, fields, config))
    return _parquet_item(shard, ordinal, key, data, fields, columns, config)


def _listed_items(shard: Shard, row: int, key: str, cell: _Cell, fields: dict, columns: _ParquetColumns,
                  config: ReaderConfig) -> Iterator[ShardItem]:
    """The images of a row's list (`datasets`' Sequence(Image()): a conversation's pictures),
    each a record keyed KEY/N, with the row's text and metadata; past PER_ROW one reject."""
    for n, (data, path) in enumerate(cell[:PER_ROW]):
        yield _cell_item(shard, row * PER_ROW + n, f"{key}/{n}", f"{columns.image}[{n}]", data, path, fields,
                         columns, config)
    if len(cell) > PER_ROW:
        yield Reject(shard.index, row * PER_ROW + PER_ROW - 1, shard.source(f"#{key}/{PER_ROW}"), "read",
                     "too_many_images", f"{len(cell)} images in the row's {columns.image}: those past "
                     f"{PER_ROW} are not read", 0)


def _image_cells(column: pa.Array, listed: bool) -> list[_Cell | None]:
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
    if _is_text(images.type):
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
    if not (_is_text(t) or _is_binary(t)):
        return [None] * len(paths)
    return paths.cast(pa.large_binary()).to_pylist()


def _null_image(column: str, fields: dict, config: ReaderConfig, what: str = "null") -> str:
    """Why a row has no image: its cell is null (or an empty list). With the row's url and, from
    img2dataset's Parquet output, why the crawl failed (`status`, `error_message`): the reject
    is all that is left of the record, and a retry of the download needs them."""
    return (f"{column} is {what}" + _row_said(fields, config))[:500]


def _row_said(fields: dict, config: ReaderConfig) -> str:
    """" (status ..., error_message ..., url ...)" of a row that is a reject, or ""."""
    said = [f"{name} {text!r}" for name, field in (("status", "status"), ("error_message", "error_message"),
                                                  ("url", config.url_column))
            if (text := _field_text(fields.get(field)))]
    return f" ({', '.join(said)})" if said else ""


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _image_file(shard: Shard, row: int, key: str, column: str, name: bytes, fields: dict,
                config: ReaderConfig) -> bytes | Reject:
    """The bytes of a Hugging Face image that names only its file (`datasets` saved without
    embedding them: bytes null, path set), read as the Parquet's own bytes are: through fsspec,
    --max_bytes and --http_timeout as for a shard. A missing or unreadable file, or one that
    is not followed (_beside), is the row's reject, with its url. `name`: the path's bytes; its
    messages say it as text."""
    source, path = shard.source(f"#{key}"), _utf8_or_guessed(name)
    where = _beside(shard, name, config.http_timeout)
    if isinstance(where, str):
        return Reject(shard.index, row, source, "read", "empty",
                      f"{column} {path!r} is not read: {where}{_row_said(fields, config)}"[:500])
    fs, location = where
    special = _special_file(location) if _is_local(fs) else None
    if special:  # opening a named pipe waits for a writer: the run never ended
        return Reject(shard.index, row, source, "read", "not_a_file",
                      f"{column} {path!r} is {special}, not a regular file{_row_said(fields, config)}"[:500])
    try:
        data, size = _fetched(fs, location, config.max_bytes)
    except IsADirectoryError:  # not worth a retry, as unreadable is (a rerun would be refused)
        return Reject(shard.index, row, source, "read", "not_a_file",
                      f"{column} {path!r} is a folder, not a regular file{_row_said(fields, config)}"[:500])
    except Exception as e:  # noqa: BLE001 - any failure (a cut, a silent server: worth a retry) is the row's
        return Reject(shard.index, row, source, "read", open_error(e),
                      f"{column} {path!r}: {_file_said(e, shard, config)}{_row_said(fields, config)}"[:500])
    # A path may name any file this machine reads (a Parquet from elsewhere naming ~/.ssh/id_rsa):
    # only an image's bytes go on, and a reject keeps none, so no other file lands in a memory
    if len(data) > config.max_bytes:
        what = f"{size} bytes" if size else "more bytes"
        return Reject(shard.index, row, source, "read", "too_large",
                      f"{column} {path!r} is {what} > max_bytes {config.max_bytes} (its bytes are not kept: "
                      "a path may name any file)", size or len(data))
    if not identified(data):
        return Reject(shard.index, row, source, "read", "not_an_image",
                      f"{column} {path!r} is not an image of a format its first bytes tell (its bytes are "
                      f"not kept: a path may name any file){_row_said(fields, config)}"[:500], len(data))
    return data


def _fetched(fs: fsspec.AbstractFileSystem, location: str, max_bytes: int) -> tuple[bytes, int | None]:
    """(its first max_bytes + 1 bytes, its size when known) of an image's file. In a bucket one
    ranged GET (_ranged); over http(s) streamed (a server that ignores ranges sends no more than
    is read) with a size (any), which skips fsspec's info(): a HEAD before each GET."""
    if not _is_local(fs) and not location.startswith(("http://", "https://")):
        return _ranged(fs, location, max_bytes)
    streamed = {} if _is_local(fs) else {"block_size": 0, "size": 1}
    with FailsAsOSError(fs.open(location, "rb", **streamed)) as f:
        data = read_up_to(f, max_bytes + 1)
        return data, _size(f) if len(data) > max_bytes else len(data)


def _ranged(fs: fsspec.AbstractFileSystem, location: str, max_bytes: int) -> tuple[bytes, int | None]:
    """(its first max_bytes + 1 bytes, its size or None when more came) of an image's file in a
    bucket, in one ranged GET: open() asked for the object's size first (a HEAD each image, the
    round trip that costs most on S3 or GCS). A range past the end gives what there is; a
    zero-byte object refuses any range (416)."""
    try:
        data = fs.cat_file(location, start=0, end=max_bytes + 1)
    except Exception as e:
        if _unsatisfiable(e):
            return b"", 0
        raise
    return data, (None if len(data) > max_bytes else len(data))


def _unsatisfiable(e: BaseException) -> bool:
    """Whether a ranged GET from byte 0 was answered 416: s3fs raises OSError from botocore's
    ClientError (InvalidRange), gcsfs HttpError (code 416), aiohttp a status 416."""
    for error in (e, e.__cause__, e.__context__):
        response = getattr(error, "response", None)
        said = response if isinstance(response, dict) else {}
        if 416 in (getattr(error, "status", None), getattr(error, "code", None),
                   said.get("ResponseMetadata", {}).get("HTTPStatusCode")) or (
                said.get("Error", {}).get("Code") == "InvalidRange"):
            return True
    return False


def _beside(shard: Shard, name: bytes, http_timeout: float) -> tuple[fsspec.AbstractFileSystem, str] | str:
    """(file system, path) of a Hugging Face image's file: a relative path from the Parquet
    shard's folder, on its file system (an s3:// or https:// shard's images are in the same
    bucket or on the same server, and never above the bucket); an absolute one only beside a
    local shard. Else why it is not read: an absolute path of a remote shard would read the
    worker's own disk, and a URL would make memgen a crawler (img2dataset downloads them). `name`:
    the path's bytes, a local file's name as they are, a server's percent-encoded."""
    path = _utf8_or_guessed(name)
    if _URL.match(path):
        return "a URL is not downloaded (img2dataset downloads them)"
    if b"\x00" in name:  # a damaged or hostile Parquet: no file is named so, now or on a rerun
        return "a file name cannot hold a NUL byte"
    location = shard.location
    if location.startswith(("http://", "https://")):
        if path.startswith("/"):
            return "an absolute path is read only beside a local Parquet, not one on a server"
        url = urljoin(location, quote(name))
        return fsspec.core.url_to_fs(url, **storage_options(url, http_timeout))[0], url
    fs, shard_path = url_fs(location)
    if _is_local(fs):
        return fs, os.path.join(os.path.dirname(shard_path), os.fsdecode(name))  # not UTF-8: surrogates
    if path.startswith("/"):
        return "an absolute path is read only beside a local Parquet, not one in a bucket"
    root = shard_path.lstrip("/").split("/", 1)[0]
    found = posixpath.normpath(posixpath.join(posixpath.dirname(shard_path), path))
    if found.lstrip("/").split("/", 1)[0] != root or found.lstrip("/") == root:
        return f"it leads out of the shard's bucket {root!r}"
    return fs, found


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _file_said(e: Exception, shard: Shard, config: ReaderConfig) -> str:
    """Why an image's file could not be read; a silent server's timeout says after how long."""
    # a local name that is not UTF-8 holds surrogates: not Parquet text
    return silent_server(e, shard, config.http_timeout) or printable(open_message(e))


def _rows(batch: pa.RecordBatch) -> list[dict]:
    """The batch's rows; where Arrow cannot give a value to Python, read as text: strings that
    are not UTF-8, which lax writers store, as text files are (memgen.text), and nanosecond
    times, which Python's hold to the microsecond ("2023-11-14 22:13:20.123456789": pyarrow
    gives them only as pandas' Timestamps). Either made their whole row group a corrupt_shard
    reject, its images with it."""
    # a nanosecond time is text in every batch: pyarrow gives one without nanoseconds as a
    # datetime ("... 22:13:20+00:00"), and its column's text followed its batch's other rows
    if not any(map(_holds_nanoseconds, batch.schema.types)):
        try:
            return batch.to_pylist()
        except (ValueError, OverflowError):  # UnicodeDecodeError, a year > 9999
            pass
    columns = {name: _column_values(batch.column(i)) for i, name in enumerate(batch.schema.names)}
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _column_values(column: pa.Array) -> list:
    """A column's values as _rows gives them: only a column that needs it read laxly (decoding
    strings in Python costs a call a value)."""
    if not _holds_nanoseconds(column.type):
        try:
            return column.to_pylist()
        except (ValueError, OverflowError):
            pass
    return _lax_values(column)


def _holds_nanoseconds(t: pa.DataType) -> bool:
    """Whether `t` is or holds (in lists, maps, structs, dictionaries) a nanosecond time."""
    if pa.types.is_timestamp(t) or pa.types.is_time64(t) or pa.types.is_duration(t):
        return t.unit == "ns"
    if pa.types.is_dictionary(t):
        return _holds_nanoseconds(t.value_type)
    if pa.types.is_map(t):
        return _holds_nanoseconds(t.key_type) or _holds_nanoseconds(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _holds_nanoseconds(t.value_type)
    return pa.types.is_struct(t) and any(_holds_nanoseconds(f.type) for f in t)


def _lax_values(column: pa.Array) -> list:
    """A column's values as to_pylist gives them, strings read from their bytes and nanosecond
    times as text, however they are nested (lists, structs, maps; dictionary-encoded too): a
    map of EXIF tags or a Hugging Face image's path in latin-1 made the whole row group a
    corrupt_shard reject. A cell with a date or time beyond Python's (year 10000 on: epoch
    milliseconds written with a unit of seconds) has every date and time as text: pyarrow
    raised OverflowError, which failed the run. Only that cell: its batch's other rows are as
    in any other batch (the same time was '... 20.123000+00:00' in one, '... 20.123Z' here)."""
    lax = _lax_type(column.type)
    try:
        return _values_as(column, lax)
    except OverflowError:
        timed = _texts_decoded(column.cast(_lax_type(column.type, times=True)).to_pylist())
        return [_cell_value(column.slice(i, 1), lax, text) for i, text in enumerate(timed)]


def _values_as(column: pa.Array, lax: pa.DataType) -> list:
    if lax == column.type:  # no strings: bytes are binary (a caption column's, decoded as a .txt)
        return column.to_pylist()
    return _texts_decoded(column.cast(lax).to_pylist())


def _cell_value(cell: pa.Array, lax: pa.DataType, timed: object) -> object:
    """One cell's value as _lax_values gives it, or `timed` (its dates and times as text)
    where one is beyond Python's."""
    try:
        return _values_as(cell, lax)[0]
    except OverflowError:
        return timed


def _lax_type(t: pa.DataType, times: bool = False) -> pa.DataType:
    """`t` with its strings (dictionary-encoded ones too) as binary, which Arrow does not
    validate as UTF-8, and its nanosecond times (`times`: all its dates and times) as text."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.large_binary()
    if (pa.types.is_timestamp(t) or pa.types.is_time64(t) or pa.types.is_duration(t)) and t.unit == "ns":
        return pa.string()
    if times and pa.types.is_temporal(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return _lax_type(t.value_type, times)
    if pa.types.is_map(t):
        return pa.map_(_lax_type(t.key_type, times), _lax_type(t.item_type, times))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item = t.value_field.with_type(_lax_type(t.value_type, times))
        if pa.types.is_fixed_size_list(t):
            return pa.list_(item, t.list_size)
        return pa.large_list(item) if pa.types.is_large_list(t) else pa.list_(item)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_lax_type(f.type, times)) for f in t])
    return t


def _texts_decoded(value: object) -> object:
    """`value` with its bytes (strings, read as binary) as text."""
    if isinstance(value, bytes):
        return _utf8_or_guessed(value)
    if isinstance(value, list):
        return [_texts_decoded(v) for v in value]
    if isinstance(value, tuple):  # a map's (key, item) pairs
        return tuple(_texts_decoded(v) for v in value)
    if isinstance(value, dict):
        return {k: _texts_decoded(v) for k, v in value.items()}
    return value


def _utf8_or_guessed(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return decode_text(data)


class ColumnError(Exception):
    """A Parquet shard whose columns memgen cannot read records from."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class NamedColumns(NamedTuple):
    """What the first Parquet shard says of the columns the flags name."""

    missing: list[str]  # "--flag NAME" of each named column it lacks
    image_holds: str | None  # what --image_column holds there when it holds no images
    shard: str  # that shard and its columns, for messages
    unnamed_images: str | None = None  # without --image_column: why it has none, when columns hold bytes


def named_columns(shards: list[Shard], config: ReaderConfig) -> NamedColumns:
    """The flags (--image_column, and the text ones where not their defaults) whose column the
    first Parquet shard lacks, and what an --image_column it has holds when that is not bytes
    (text, a URL column: every record would be a reject), or without --image_column why it has
    no image column by the default names although columns hold bytes, or when all shards are
    Parquet and none of its columns does (every shard a reject, an empty memory), from one read
    of its schema; nothing when all are usable, or the shard
    cannot be read here (its reader says why, as a reject)."""
    named = {flag: name for flag, name, default in (
        ("--image_column", config.image_column, None),
        ("--caption_column", config.caption_column, ReaderConfig.caption_column),
        ("--url_column", config.url_column, ReaderConfig.url_column),
        ("--key_column", config.key_column, ReaderConfig.key_column)) if name != default}
    first = _first_parquet_schema(shards)
    if first is None:
        return NamedColumns([], None, "")
    first_shard, schema = first
    uri = first_shard.uri
    if config.image_column is None:
        try:
            _image_column(schema, config)
        except ColumnError as e:  # images under a name memgen does not guess (`image_data`, `JPG`)
            if any(_holds_bytes(t) for t in schema.types):
                return NamedColumns([], None, "", f"{uri}: {e}")
            # no bytes at all: metadata beside tars or image files, else a list of URLs (LAION's)
            if all(shard.kind == "parquet" for shard in shards):
                # text under an image's name may be base64, which the error says how to read
                base64_said = any(_is_text(schema.field(n).type) for n in DEFAULT_IMAGE_COLUMNS
                                  if n in schema.names)
                fetch = "" if base64_said else ("; memgen reads image bytes and downloads none: fetch the "
                                                "images first (img2dataset)")
                return NamedColumns([], None, "", f"{uri}: {e}{fetch}")
    if not named:
        return NamedColumns([], None, "")
    missing = [f"{flag} {name}" for flag, name in named.items() if name not in schema.names]
    holds = None
    if config.image_column in schema.names:
        found = schema.field(config.image_column).type
        if _is_text(found):
            holds = _not_base64_images(first_shard, config.image_column)
        elif not (_holds_bytes(found) or pa.types.is_null(found)):  # all null (pandas' None): undecided
            holds = f"{found} in {uri}, not image bytes"
    return NamedColumns(missing, holds, f"{uri} (its columns: {', '.join(schema.names)})"[:400])


def _not_base64_images(shard: Shard, column: str) -> str | None:
    """What a text --image_column holds when its first value is not a base64 image (URLs,
    paths, captions: every record would be a reject), else None."""
    try:
        with open_input(shard.location) as f:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=64, columns=[column]):
                first = next((text for text in batch.column(0).to_pylist() if text), None)
                if first is not None:
                    data = decoded(first)
                    if isinstance(data, bytes) and identified(data):
                        return None
                    return f"text in {shard.uri}, not base64 images (its first: {first[:60]!r})"
    except Exception:  # noqa: BLE001 - unreadable here: its reader says why, as a reject
        return None
    return None


def _first_parquet_schema(shards: list[Shard]) -> tuple[Shard, pa.Schema] | None:
    """(shard, schema) of the first Parquet shard; None when there is none, or it cannot be read
    here (its reader says why, as a reject). Over http(s), reading the schema costs the whole
    file: not asked."""
    first = next((s for s in shards if s.kind == "parquet"), None)
    if first is None or first.uri.startswith(("http://", "https://")):
        return None
    try:
        with open_input(first.location) as f:
            return first, pq.read_schema(f)
    except Exception:  # noqa: BLE001 - unreadable here: its reader says why, as a reject
        return None


class _ParquetColumns:
    """Which columns of a Parquet shard are read, and what each is for: the image bytes,
    text fields (caption, url, key) and metadata (every other column but binary ones,
    which are not text), with the shard's Hive partitions (Shard.partitions)."""

    def __init__(self, schema: pa.Schema, config: ReaderConfig, partitions: dict[str, str | None]) -> None:
        self.partitions = partitions
        names = schema.names
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ColumnError("duplicate_columns", f"column names appear more than once: {repeated}")
        self.image = _image_column(schema, config)
        self.listed = _is_list(schema.field(self.image).type)  # several images a row
        self.metadata = [n for n in names if n != self.image and not _has_binary(schema.field(n).type)]
        text = [n for n in (config.caption_column, config.url_column, config.key_column)
                if n in names and n != self.image and n not in self.metadata]
        self.fields = self.metadata + text
        self.read = [self.image, *self.fields]


def _image_column(schema: pa.Schema, config: ReaderConfig) -> str:
    """--image_column, or the first default name whose column holds bytes, else the first
    column the file's Hugging Face metadata declares an Image (`datasets` keeps that feature
    under any name: `photo`, `picture`)."""
    candidates = ([config.image_column] if config.image_column
                  else [*DEFAULT_IMAGE_COLUMNS, *_hf_images(schema)])
    wrong = [f"{n!r} holds {schema.field(n).type}" for n in candidates
             if n in schema.names and not _holds_bytes(schema.field(n).type)]
    for name in candidates:
        if name in schema.names and _holds_bytes(schema.field(name).type):
            return name
    if config.image_column in schema.names and _is_text(schema.field(config.image_column).type):
        return config.image_column  # base64, as named (URLs or paths are refused before the run)
    for name in candidates:  # pandas' all-None column: each row a reject of its own, not the shard one
        if name in schema.names and pa.types.is_null(schema.field(name).type):
            return name
    found = f" ({'; '.join(wrong)}, not image bytes)" if wrong else ""
    # the flag that reads them, with the columns that could be it: `image_data`, `JPG`
    holding = [n for n in schema.names if _holds_bytes(schema.field(n).type)]
    hint = f"; {holding} hold bytes: name the image one with --image_column" if holding else ""
    texts = [n for n in candidates if n in schema.names and _is_text(schema.field(n).type)]
    if texts and not holding and not config.image_column:  # a default name of text: base64 when named
        hint += f"; text is read as base64 images when named: --image_column {texts[0]}"
    raise ColumnError("no_image_column", f"no image column among {list(candidates)}{found}{hint}; "
                                         f"columns are {schema.names}"[:500])


def _hf_images(schema: pa.Schema) -> list[str]:
    """The columns that the Hugging Face `datasets` metadata of a file declares Image features,
    or lists of them (Sequence(Image()), List(Image()), [Image()])."""
    try:
        features = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))["info"]["features"]
        return [name for name, feature in features.items() if _hf_image(feature)]
    except (ValueError, KeyError, TypeError, AttributeError):  # none, or not as `datasets` writes it
        return []


def _hf_image(feature: object) -> bool:
    if isinstance(feature, list):  # [Image()]: an older `datasets`' list
        return len(feature) == 1 and _hf_image(feature[0]) and not isinstance(feature[0], list)
    if not isinstance(feature, dict):
        return False
    if feature.get("_type") in ("Sequence", "List"):
        return isinstance(feature.get("feature"), dict) and feature["feature"].get("_type") == "Image"
    return feature.get("_type") == "Image"


def _is_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t))


def _holds_bytes(t: pa.DataType) -> bool:
    """Binary (dictionary-encoded too), a Hugging Face image struct {bytes, path}, or a list of
    either (a row's several images)."""
    if _is_list(t):
        return _holds_bytes(t.value_type) and not _is_list(t.value_type)
    if pa.types.is_struct(t):
        index = t.get_field_index("bytes")
        return index >= 0 and _holds_bytes(t.field(index).type)
    if pa.types.is_dictionary(t):
        return _holds_bytes(t.value_type)
    return _is_binary(t)


def _is_text(t: pa.DataType) -> bool:
    """A string type (dictionary-encoded too)."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t))


def _has_binary(t: pa.DataType) -> bool:
    """Binary anywhere in the type (a list of thumbnails, a struct with bytes): not text, so
    not metadata (it became the Python repr of the bytes)."""
    if _is_binary(t):
        return True
    if pa.types.is_dictionary(t):
        return _has_binary(t.value_type)
    return any(_has_binary(t.field(i).type) for i in range(t.num_fields))


def _parquet_item(shard: Shard, ordinal: int, key: str, data: bytes, fields: dict,
                  columns: _ParquetColumns, config: ReaderConfig) -> ShardItem:
    locator = f"#{key}"
    source = shard.source(locator)
    if len(data) > config.max_bytes:
        return Reject(shard.index, ordinal, source, "read", "too_large",
                      f"{len(data)} bytes > max_bytes {config.max_bytes}", len(data),
                      data[: config.reject_data_cap])
    # a partition's value wins over a column of its name, as pyarrow.dataset and DuckDB read them
    metadata = json.dumps(_finite({n: fields[n] for n in columns.metadata} | columns.partitions), default=str,
                          ensure_ascii=False, sort_keys=True)
    return Record(shard.index, ordinal, source, data, _field_text(fields.get(config.caption_column)),
                  _field_text(fields.get(config.url_column)), metadata, locator)


def _read_file(shard: Shard, f, config: ReaderConfig) -> Iterator[ShardItem]:
    try:
        data = read_up_to(f, config.max_bytes + 1)  # an HTTP stream gives what has arrived
        size = _size(f) if len(data) > config.max_bytes else len(data)
    except _DAMAGE as e:
        said = read_message(e, shard, config.http_timeout)
        yield Reject(shard.index, 0, shard.source(), "read", "unreadable", said)
        return
    kind = _shard_format(data)
    if kind:  # a Hive table's 000000_0: else "Pillow cannot identify" (or too_large)
        yield Reject(shard.index, 0, shard.source(), "read", "not_an_image",
                     f"{kind} data in a file whose name does not end in {_SHARD_NAMES[kind]}, "
                     "which is read as one image: rename it to read its records", size or len(data),
                     data[: config.reject_data_cap])
        return
    if len(data) > config.max_bytes:
        what = f"{size} bytes" if size else "more bytes"
        yield Reject(shard.index, 0, shard.source(), "read", "too_large",
                     f"{what} > max_bytes {config.max_bytes}", size or len(data),
                     data[: config.reject_data_cap])
        return
    sidecars = {}
    for suffix in (".txt", ".json"):
        sidecar = _read_sidecar(shard, suffix, config.max_bytes)
        if isinstance(sidecar, _Unusable):  # kept, its caption or metadata would be lost or cut short
            yield Reject(shard.index, 0, shard.source(), sidecar.stage, sidecar.reason, sidecar.message,
                         len(data), data[: config.reject_data_cap])
            return
        sidecars[suffix] = sidecar
    row = folder_row(shard.folder_metadata, shard.location) if shard.folder_metadata else None
    caption, url, metadata = _image_texts(sidecars[".txt"], sidecars[".json"], row, config)
    metadata = _with_partitions(metadata, shard.partitions)
    yield Record(shard.index, 0, shard.source(), data, caption, url, metadata)


def _image_texts(txt: bytes | None, json_data: bytes | None, row: dict | None,
                 config: ReaderConfig) -> tuple[str | None, str | None, str | None]:
    """(caption, url, metadata JSON) of an image from its NAME.txt and NAME.json and its row of
    an ImageFolder metadata file (caption under --caption_column, else `text`): its own files,
    where it has them, say more than the folder's."""
    caption = decode_text(txt)
    metadata, url = _metadata(decode_text(json_data))
    if row:
        if caption is None:
            caption = _field_text(row.get(config.caption_column, row.get("text")))
        url = url or _field_text(row.get(config.url_column))
        metadata = _with_fields(metadata, row)
    return caption, url, metadata


def _read_zip(shard: Shard, f, config: ReaderConfig, first_read: bool) -> Iterator[ShardItem]:
    """A zip's images, each with its caption and metadata members (a.txt, a.json beside
    a.jpg), as a folder's walk takes them (folder_entries: hidden members, such as macOS's
    __MACOSX/._a.jpg, and other files are left out, and counted in a warning). A record's
    ordinal is its member's place in the archive; a tar or Parquet packed in it is a reject.
    A failed transfer ends the shard with an `unreadable` reject, as a tar's stream does."""
    try:
        archive = zipfile.ZipFile(f)
        members = files(archive)
    except (zipfile.BadZipFile, *_DAMAGE) as e:
        yield Reject(shard.index, 0, shard.source(), "read", _failure(e),
                     read_message(e, shard, config.http_timeout))
        return
    ordinals = {name: n for n, name in enumerate(members)}
    visible = [name for name in members if not hidden(name)]
    entries, skipped, described = folder_entries(visible)
    tables: dict[str, dict[str, dict]] = {}  # an ImageFolder metadata member's rows, read once

    def row_of(name: str) -> dict | None:
        found = described.get(name)
        if found is None:
            return None
        if found not in tables:
            tables[found] = _zipped_rows(archive, members[found], found, config.max_bytes)
        return row_in(tables[found], found, name)

    skipped["hidden"] += len(members) - len(visible)
    if first_read and skipped.total():
        _log.warning("%s: skipped %d members that are neither shards nor images (%s)", shard.uri,
                     skipped.total(), counted(skipped))
    keys = _Keys()
    for name, sidecars in entries.items():
        key = keys(printable(name))
        try:
            row = row_of(name)
            yield _zip_item(shard, archive, members, name, sidecars, ordinals[name], key, row, config)
        except _DAMAGE as e:  # a failed transfer: the rest is not read
            yield Reject(shard.index, ordinals[name], shard.source(f"#{key}"), "read", _failure(e),
                         read_message(e, shard, config.http_timeout))
            return


def _zipped_rows(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str,
                 max_bytes: int) -> dict[str, dict]:
    """The rows of an ImageFolder metadata member (imagefolder.named_rows); none when it cannot
    be read (its images are read without it)."""
    read = member_bytes(archive, info, max_bytes, 0)
    if isinstance(read, NoBytes) or read[1] < 0:
        return {}
    try:
        return named_rows(name, read[0])
    except Exception:  # noqa: BLE001 - not CSV, not Parquet: its images are read without it
        return {}


def _zip_item(shard: Shard, archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], name: str,
              sidecars: tuple[str, ...], ordinal: int, key: str, row: dict | None,
              config: ReaderConfig) -> ShardItem:
    """One image member of a zip, with its sidecar members and its ImageFolder row -> a
    Record, or a Reject."""
    info, locator = members[name], f"#{key}"
    source = shard.source(locator)
    kind = shard_kind(name)
    if kind != "file":
        return Reject(shard.index, ordinal, source, "read", "nested_shard",
                      f"a {kind} shard inside a zip is not read: unpack it and give it as an input",
                      info.file_size)
    read = member_bytes(archive, info, config.max_bytes, config.reject_data_cap)
    if isinstance(read, NoBytes):
        return Reject(shard.index, ordinal, source, "read", read.error_type, read.message, info.file_size)
    data, size = read
    if size < 0:
        return Reject(shard.index, ordinal, source, "read", "too_large",
                      f"{-size} bytes > max_bytes {config.max_bytes}", -size, data)
    texts: dict[str, bytes | None] = {}
    stem = posixpath.splitext(name)[0]
    for suffix in sidecars:  # as found: .txt or .TXT
        sidecar = member_bytes(archive, members[stem + suffix], config.max_bytes, 0)
        if not isinstance(sidecar, NoBytes) and sidecar[1] < 0:  # kept, its caption would be cut short
            return Reject(shard.index, ordinal, source, "read", "too_large",
                          f"its {suffix} member is {-sidecar[1]} bytes > max_bytes {config.max_bytes}",
                          size, data[: config.reject_data_cap])
        texts[suffix.lower()] = None if isinstance(sidecar, NoBytes) else sidecar[0]  # a caption lost
    caption, url, metadata = _image_texts(texts.get(".txt"), texts.get(".json"), row, config)
    metadata = _with_partitions(metadata, shard.partitions)
    return Record(shard.index, ordinal, source, data, caption, url, metadata, locator)


def _read_warc(shard: Shard, f, config: ReaderConfig, first_read: bool) -> Iterator[ShardItem]:
    """A WARC's image records (warcfile.warc_images), keyed by their URL; its other records
    (pages, requests, revisits) are counted in a warning. An image the crawl did not get
    whole (cut short, an HTTP error) is a reject with its url; damage ends the shard with a
    reject after the records before it, as in a tar."""
    keys, skipped = _Keys(), Counter()
    ordinal = 0
    try:
        for image in warc_images(f, config.max_bytes, config.reject_data_cap, skipped):
            ordinal = image.ordinal + 1
            key = keys(printable(image.url) or f"{image.ordinal:09d}")
            locator = f"#{key}"
            source = shard.source(locator)
            metadata = json.dumps(image.metadata | dict(shard.partitions), ensure_ascii=False, sort_keys=True)
            if image.unusable:
                yield Reject(shard.index, image.ordinal, source, "read", *image.unusable,
                             image.size or len(image.data), image.data[: config.reject_data_cap])
            elif image.size is None:
                yield Reject(shard.index, image.ordinal, source, "read", "too_large",
                             f"more than max_bytes {config.max_bytes} bytes", config.max_bytes + 1,
                             image.data)
            else:
                yield Record(shard.index, image.ordinal, source, image.data, None, image.url or None,
                             metadata, locator)
    except (*_DAMAGE, ArchiveLoadFailed) as e:
        yield Reject(shard.index, ordinal, shard.source(), "read", _failure(e),
                     read_message(e, shard, config.http_timeout))
    if first_read and skipped.total():
        _log.warning("%s: skipped %d records that are not images (%s)", shard.uri, skipped.total(),
                     counted(skipped))


_SHARD_NAMES = {"Parquet": ".parquet", "tar": ".tar", "zip": ".zip"}


def _shard_format(data: bytes) -> str | None:
    """"Parquet", "tar" or "zip" when a file's bytes are a shard's (by their magic numbers), else None."""
    if data[:4] == b"PAR1":  # the footer holds the other "PAR1": a file cut at max_bytes lacks it
        return "Parquet"
    if data[257:262] == b"ustar":
        return "tar"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first member, or an empty zip
        return "zip"
    return None


class _Unusable(NamedTuple):
    """Why a sidecar makes its image's record a reject."""
    stage: str
    reason: str
    message: str


def _read_sidecar(shard: Shard, suffix: str, max_bytes: int) -> bytes | None | _Unusable:
    """The bytes of the file's sidecar, read as a webdataset sample's member; None when it has
    none, or it is gone or unreadable now (the image is read without it); _Unusable when it is
    a pipe or device (opening it waits for a writer: the run never ended) or larger than
    max_bytes, as a tar's member is."""
    written = next((s for s in shard.sidecars if s.lower() == suffix), None)  # .txt, or .TXT
    if written is None:
        return None
    location = shard.sidecar(written)
    special = _special_file(location)
    if special:
        return _Unusable("open", "not_a_file", f"its {suffix} file is {special}, not a regular file")
    try:
        with open_input(location) as f:
            data = read_up_to(f, max_bytes + 1)
            size = _size(f) if len(data) > max_bytes else len(data)
    except Exception:  # noqa: BLE001 - a caption lost is not an image lost
        return None
    if len(data) > max_bytes:
        return _Unusable("read", "too_large",
                         f"its {suffix} file is {size or 'more'} bytes > max_bytes {max_bytes}")
    return data


def _size(f: IO[bytes]) -> int | None:
    """The size of file `f` if it can tell without being read (a seek to its end, an HTTP
    Content-Length), else None: a too-large file is not downloaded to be measured."""
    try:
        return f.seek(0, 2)
    except (OSError, ValueError):
        return getattr(f, "size", None)
