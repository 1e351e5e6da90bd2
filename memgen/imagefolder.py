"""Hugging Face ImageFolder metadata, read: a `metadata.jsonl`, `.csv` or `.parquet` file
in a folder of images, a row per image named by its `file_name` (from the metadata file's
folder, `train/a.jpg`), the other columns its fields (diffusers' fine-tuning sets keep the
caption under `text`). Which file describes an image is found where it is listed
(shards.FOLDER_METADATA).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import posixpath
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from memgen.shards import open_input
from memgen.text import decode_text

_log = logging.getLogger(__name__)


def folder_row(metadata_file: str, image: str) -> dict | None:
    """The row of `metadata_file` whose file_name is `image` (a path below the metadata file's
    folder), without its file_name; None when it has none, or the file cannot be read (said
    once in a warning: the images are read without it)."""
    return row_in(_rows(metadata_file), metadata_file, image)


def row_in(rows: NamedRows, metadata_file: str, image: str) -> dict | None:
    """`image`'s row among `rows` (named_rows' of `metadata_file`), a copy; None if it has none."""
    relative = posixpath.normpath(image[len(posixpath.dirname(metadata_file)):].lstrip("/"))
    row = rows.get(relative)
    return None if row is None else dict(row)  # the cached row stays as read


@functools.lru_cache(maxsize=4)  # a worker reads each of its metadata files once (a row per image)
def _rows(metadata_file: str) -> NamedRows:
    try:
        with open_input(metadata_file) as f:
            rows = named_rows(metadata_file, f.read())
    except Exception as e:  # noqa: BLE001 - gone, unreadable: the images are read without it
        rows = not_read(metadata_file, f"{type(e).__name__}: {str(e)[:200]}")
    if rows.said:
        _log.warning("%s", rows.said)
    return rows


def not_read(metadata_file: str, why: str) -> NamedRows:
    """No rows, for a metadata file that could not be read (`said`: why)."""
    rows = NamedRows(b"", [], np.zeros(0, np.int64), 0)
    rows.said = f"{metadata_file}: not read ({why}); the images it names are read without its fields"
    return rows


def named_rows(metadata_file: str, data: bytes) -> NamedRows:
    """The rows of a metadata file's bytes by file_name (NamedRows): JSON lines, CSV or a
    Parquet table (but for binary values, which are not text). A row without a file_name, or a
    line that is no JSON object, is left out, and counted in `said`; a file_name that comes
    again keeps its first row. A file that is not CSV or Parquet has none (not_read). What is
    said is the caller's to log: a zip's re-reads would say it again."""
    try:
        if metadata_file.endswith(".parquet"):
            rows = _table_rows(pq.read_table(io.BytesIO(data)), parquet=True)
        elif metadata_file.endswith(".csv"):  # types inferred, as `datasets` reads it (0.9 a number)
            rows = _table_rows(pa_csv.read_csv(io.BytesIO(data)), parquet=False)
        else:
            rows = _fast_lines(data) or _python_lines(data)
    except Exception as e:  # noqa: BLE001 - not CSV, not Parquet: the images are read without it
        return not_read(metadata_file, f"{type(e).__name__}: {str(e)[:200]}")
    if len(rows) < rows.read:
        rows.said = (f"{metadata_file}: {rows.read - len(rows)} of its {rows.read} rows name no image (no "
                     "file_name, a line that is no JSON object, a name again): left out")
    return rows


def _name_hash(name: str) -> int:
    """The index's key of a name (a function, so a test can make two names collide)."""
    return hash(name)


class NamedRows:
    """A metadata file's rows by file_name, held compactly: the file's JSON lines (bytes) or its
    table, and the 64-bit hashes of the names, sorted, each with where its row is. A row is
    decoded when asked for, and its own file_name checked, so a hash that two names share never
    gives the wrong row. (A million JSON lines of 138 MB held as a dict took 606 MB; as this,
    154 MB: the file's bytes and 16 bytes a name. benchmarks/README.md, section 11.)"""

    def __init__(self, source: bytes | pa.Table, names: list[str], where: np.ndarray, read: int,
                 binary: frozenset[str] | None = None):
        self._source = source  # JSON lines, each from an offset in `where` to its \n; or a table's rows
        self._binary = binary  # a Parquet table's binary columns (held as whether each value is); None: CSV's
        self.read = read  # the rows the file had, named or not
        self.said: str | None = None  # a warning about the file, for the reader to log
        self._index(names, where)

    def _index(self, names: list[str], where: np.ndarray) -> None:
        hashes = np.fromiter(map(_name_hash, names), np.int64, count=len(names))
        order = np.argsort(hashes, kind="stable")  # stable: a name's rows stay in file order
        self._hashes, self._where = hashes[order], where[order]
        same = np.flatnonzero(self._hashes[1:] == self._hashes[:-1])  # a name again, or a collision
        self._count = len(names) - len(same) + _collided(same, order, names)

    def __len__(self) -> int:
        return self._count

    def get(self, name: str) -> dict | None:
        """The first row named `name` (a normalised path), decoded; None if none is."""
        key = _name_hash(name)
        first = int(self._hashes.searchsorted(key))
        for at in range(first, len(self._hashes)):
            if self._hashes[at] != key:
                break
            row = self._row(int(self._where[at]))
            if row is not None and _file_name(row) == name:
                return row
        return None

    def _row(self, where: int) -> dict | None:
        """The row at `where` (a line's offset, a table's row number), with its file_name."""
        if not isinstance(self._source, pa.Table):
            end = self._source.find(b"\n", where)
            line = self._source[where:end if end >= 0 else None]
            return _json_object(line.decode("utf-8", "surrogatepass"))
        row = self._source.slice(where, 1).to_pylist()[0]
        if self._binary is None:  # a CSV's: as read
            return row
        for column in self._binary:  # a Parquet's binary value is left out, a missing one is None
            if row[column]:
                del row[column]
            else:
                row[column] = None
        return {k: v for k, v in row.items() if not isinstance(v, bytes)}

    def __reduce__(self):
        # the hashes are this process's (str hash is salted a process): another one makes its own
        names = [_file_name(self._row(int(w))) for w in self._where]
        return _unpickled, (self._source, names, self._where, self.read, self._binary)


def _unpickled(source: bytes | pa.Table, names: list[str], where: np.ndarray, read: int,
               binary: frozenset[str] | None) -> NamedRows:
    return NamedRows(source, names, where, read, binary)


def _collided(same: np.ndarray, order: np.ndarray, names: list[str]) -> int:
    """How many names more than hashes there are: runs of one hash hold a name again (counted
    once) or, rarely, names that collide (each counted)."""
    extra, run = 0, set()
    for n, at in enumerate(same):
        if n == 0 or same[n - 1] != at - 1:  # a new run of one hash
            extra += max(len(run) - 1, 0)
            run = {names[order[at]]}
        run.add(names[order[at + 1]])
    return extra + max(len(run) - 1, 0)


def _file_name(row: dict | None) -> str | None:
    """A row's file_name as an image asks for it (./a.jpg is a.jpg); None for none."""
    name = row.pop("file_name", None) if row else None
    return _normal(name) if isinstance(name, str) and name else None


_ODD = r"^\.|/\.|//|/$"  # a name normpath may change (., .. or empty parts); the others it keeps


def _normal(name: str) -> str:
    return posixpath.normpath(name) if re.search(_ODD, name) else name


def _named(values: pa.ChunkedArray, where: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(names, where each row is) of the rows whose file_name is a name (text, not empty)."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):  # a CSV's numbers
        listed = values.to_pylist()
        keep = [n for n, value in enumerate(listed) if isinstance(value, str) and value]
        return [_normal(listed[n]) for n in keep], where[np.array(keep, dtype=np.int64)]
    named = pc.fill_null(pc.greater(pc.binary_length(values), 0), False)
    kept = values.filter(named)
    names = kept.to_pylist()
    for n in np.flatnonzero(pc.match_substring_regex(kept, _ODD).to_numpy(zero_copy_only=False)):
        names[n] = posixpath.normpath(names[n])
    return names, where[np.flatnonzero(named.to_numpy(zero_copy_only=False))]


def _table_rows(table: pa.Table, parquet: bool) -> NamedRows:
    """A CSV's or Parquet's table, held as read; a Parquet's binary columns (image bytes, left
    out of its rows) as whether each value is there."""
    no_names = pa.chunked_array([pa.nulls(table.num_rows)])
    values = table.column("file_name") if "file_name" in table.column_names else no_names
    names, where = _named(values, np.arange(len(values), dtype=np.int64))
    if not parquet:
        return NamedRows(table, names, where, table.num_rows)
    binary = frozenset(f.name for f in table.schema if _is_binary(f.type) and f.name != "file_name"
                       and table.schema.get_field_index(f.name) >= 0)  # -1: a name twice, left as is
    for column in binary:  # image bytes: a row held them ~no longer, only whether there are some
        at = table.schema.get_field_index(column)
        table = table.set_column(at, column, pc.is_valid(table.column(at)))
    return NamedRows(table, names, where, table.num_rows, binary)


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)


# What str.splitlines (the Python reading) cuts a line at but \n: \r, \v, \f, \x1c-\x1e, U+0085,
# U+2028, U+2029 (searched one by one: a regex of them took 3.5 s a 140 MB file, `in` 0.1 s)
_OTHER_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8",
                 b"\xe2\x80\xa9")
_NAME_ONLY = pa_json.ParseOptions(explicit_schema=pa.schema([("file_name", pa.string())]),
                                  unexpected_field_behavior="ignore")


def _fast_lines(data: bytes) -> NamedRows | None:
    """JSON lines as the Python reading (_python_lines) holds them, their names read by pyarrow
    (~5x faster); None where that reading could differ: not UTF-8 (or with a BOM), a line
    break other than \n, a line that is no JSON object or holds two, a file_name not text."""
    if data.startswith(b"\xef\xbb\xbf") or any(b in data for b in _OTHER_BREAKS) or not _utf8(data):
        return None
    try:
        values = pa_json.read_json(io.BytesIO(data), parse_options=_NAME_ONLY).column("file_name")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    starts = _line_starts(data)
    if len(starts) != len(values):  # a line of two objects
        return None
    names, where = _named(values, starts)
    return NamedRows(data, names, where, len(starts))


def _utf8(data: bytes) -> bool:
    """Whether `data` is UTF-8 (checked by pyarrow, without a copy as text)."""
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)]).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _line_starts(data: bytes, chunk: int = 1 << 24) -> np.ndarray:
    """The offsets of `data`'s lines that are not blank (but for spaces and tabs), as pyarrow
    reads them; a chunk at a time, so the scan costs no copy of the file."""
    found = [np.zeros(1, np.int64)]
    for at in range(0, len(data), chunk):
        piece = np.frombuffer(data, np.uint8, count=min(chunk, len(data) - at), offset=at)
        found.append(np.flatnonzero(piece == 10).astype(np.int64) + at + 1)
    starts = np.concatenate(found)
    ends = np.append(starts[1:] - 1, len(data))
    starts, ends = starts[ends > starts], ends[ends > starts]
    spaced = np.flatnonzero(np.isin(np.frombuffer(data, np.uint8)[starts], (9, 32)))  # rare: check each
    blank = [n for n in spaced if not data[starts[n]:ends[n]].strip(b" \t")]
    return np.delete(starts, blank)


def _python_lines(data: bytes) -> NamedRows:
    """JSON lines decoded (text.decode_text) and cut (str.splitlines) as ever, the lines that
    name an image held as UTF-8, a line each."""
    lines, names, where, read, size = [], [], [], 0, 0
    for line in (decode_text(data) or "").splitlines():
        if not line.strip():
            continue
        read += 1
        name = _file_name(_json_object(line))
        if name is not None:
            encoded = line.encode("utf-8", "surrogatepass")
            lines.append(encoded)
            names.append(name)
            where.append(size)
            size += len(encoded) + 1
    return NamedRows(b"\n".join(lines), names, np.array(where, dtype=np.int64), read)


def _json_object(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None
