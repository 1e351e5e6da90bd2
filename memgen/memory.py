"""The memory on disk: table folders of Parquet parts and manifest.json (written last).

Pure I/O through fsspec, no Beam. A part file is written under a hidden temporary
name and renamed, so readers (pyarrow.dataset, DuckDB globs) never see half a file;
a memory is finished only when its manifest exists.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import posixpath
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from memgen.fingerprint import MODES, ORIENTATIONS, FingerprintConfig
from memgen.near import DEFAULT_THRESHOLD, MAX_THRESHOLD
from memgen.outputs import AtomicFile, Claim, claim_output, glob_in, missing_bucket, temporaries, write_atomic
from memgen.readers import ReaderConfig
from memgen.schema import table_schema

TABLES = ("images", "duplicates", "rejects")
MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
ROW_GROUP_BYTES = 64 << 20  # image rows are buffered up to this before a row group is written
PART_KEY = b"memgen.part"  # a part's footer names the part: a copy of another one is found out


class MemoryDirError(ValueError):
    """A memory directory that cannot be used as asked (missing, unfinished, finished)."""


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


def absolute(url: str) -> str:
    """A local path made absolute (what a manifest records: it is read from elsewhere);
    URLs with a scheme as they are."""
    return url if "://" in url else os.path.abspath(url)


def part_name(shard_index: int, suffix: str = "") -> str:
    return f"part-{shard_index:06d}{'-' + suffix if suffix else ''}.parquet"


class ParquetPart:
    """Rows added one at a time to a Parquet file (zstd, row groups of ~ROW_GROUP_BYTES).

    Put in place whole on a clean exit (memgen.outputs.AtomicFile), so readers never see
    half a file; a part that received no row leaves no file, unless `keep_empty`.
    """

    def __init__(self, url: str, schema: pa.Schema, keep_empty: bool = False) -> None:
        fs, self.path = fsspec.core.url_to_fs(url)
        self._target = AtomicFile(fs, self.path)
        self.schema = schema
        self.keep_empty = keep_empty
        self.count = 0
        self._batch: list[dict[str, Any]] = []
        self._size = 0
        self._writer = None

    def __enter__(self) -> ParquetPart:
        return self

    def add(self, row: dict[str, Any]) -> None:
        self._batch.append(row)
        self.count += 1
        # every bytes and text field counts: small images with wide metadata fill a row group too
        self._size += sum(len(v) for v in row.values() if isinstance(v, bytes | str)) + 500  # + the dict
        if self._size >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        if self._writer is None:
            self._open()
        self._writer.write_table(pa.Table.from_pylist(self._batch, schema=self.schema))
        self._batch, self._size = [], 0

    def _open(self) -> None:
        named = self.schema.with_metadata({**(self.schema.metadata or {}),
                                           PART_KEY: _part_of(self.path).encode()})
        self._writer = pq.ParquetWriter(self._target.open(), named, compression="zstd")

    def __exit__(self, exc_type, *_) -> None:
        try:
            if exc_type is None:
                self._flush()
                if self._writer is None and self.keep_empty:
                    self._open()
            if self._writer is not None:
                self._writer.close()
                if exc_type is None:
                    self._target.commit()
                    return
        except BaseException:
            self._discard()
            raise
        self._discard()

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.is_open = False  # else its __del__ closes again, writing to a closed file
        self._target.discard()


def _part_of(path: str) -> str:
    """TABLE/part-NNNNNN.parquet: what a part's footer calls it."""
    return posixpath.join(posixpath.basename(posixpath.dirname(path)), posixpath.basename(path))


def write_rows(url: str, table: str, rows: Iterable[dict[str, Any]], keep_empty: bool = False) -> int:
    """Write one table's rows to a Parquet part atomically; returns the row count (0: no file,
    unless keep_empty)."""
    with ParquetPart(url, table_schema(table), keep_empty) as part:
        for row in rows:
            part.add(row)
    return part.count


def read_manifest(memory: str) -> dict[str, Any] | None:
    """The manifest of a finished run (memory, sample), or None; MemoryDirError for one that
    is not a JSON object."""
    data = _manifest_bytes(memory)
    return None if data is None else read_json_object(data, f"{memory} is damaged: its {MANIFEST}")


# manifest.json bytes already read, by URL, while a command holds them (`manifests_held`)
_held_manifests: dict[str, bytes] | None = None


@contextlib.contextmanager
def manifests_held() -> Iterator[None]:
    """Within it, a manifest read once is not read again (but once this process writes it):
    a finished run's manifest does not change, and a command reads each a dozen times or
    more (evaluate 21: on an object store a HEAD and a GET each). memgen's command line holds
    them for one command; one absent is asked again (a run may finish it meanwhile)."""
    global _held_manifests
    outer, _held_manifests = _held_manifests, {}
    try:
        yield
    finally:
        _held_manifests = outer


def _manifest_bytes(memory: str) -> bytes | None:
    """manifest.json's bytes, None when there is none (asking exists() first cost a request
    more on object stores)."""
    url = join(memory, MANIFEST)
    if _held_manifests is not None and url in _held_manifests:
        return _held_manifests[url]
    fs, path = fsspec.core.url_to_fs(url)
    try:
        data = fs.cat_file(path)
    except (FileNotFoundError, NotADirectoryError):  # the latter: MEMORY is a file
        return None
    except Exception as e:  # storage that fails (no credentials, no network) names no file
        e.add_note(f"reading {url}")
        raise
    if _held_manifests is not None:
        _held_manifests[url] = data
    return data


def read_json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from bytes; MemoryDirError "WHAT is not ..." for anything else."""
    try:
        value = json.loads(data)
    except ValueError:  # not JSON, or not UTF-8
        raise MemoryDirError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise MemoryDirError(f"{what} is not a JSON object")
    return value


def manifest_digest(memory: str) -> str | None:
    """sha256 of a finished memory's manifest.json (which run made it, wherever it is now),
    or None when `memory` holds no finished memory."""
    data = _manifest_bytes(memory)
    return None if data is None else hashlib.sha256(data).hexdigest()


def write_manifest(memory: str, manifest: dict[str, Any]) -> None:
    """manifest.json, atomically: a run killed while writing it leaves no manifest (an
    unfinished run, which a rerun completes), never half of one."""
    write_atomic(join(memory, MANIFEST), lambda f: json.dump(manifest, f, indent=2, sort_keys=True))
    if _held_manifests is not None:
        _held_manifests.pop(join(memory, MANIFEST), None)


def memory_claim(memory: str) -> Claim:
    """A new memorize run's claim on `memory` (memgen.outputs)."""
    return Claim(memory, "memorize", "--memory", MANIFEST)


def prepare_output(claim: Claim, check_only: bool = False) -> None:
    """Make the claimed memory ready for a new run: refuse a finished one and any folder memgen
    did not make (memgen.outputs), clear the tables of an unfinished one (`check_only`: refuse
    only)."""
    refuse_finished(claim)
    claim_output(claim, (*TABLES, temporaries(MANIFEST)), check_only)


def refuse_finished(claim: Claim) -> None:
    """MemoryDirError when the claimed folder holds a finished run (its manifest.json), which
    is never overwritten; deleting it is suggested only when it is this job's own output
    (a sample's --out given the memory it reads was told to delete the memory)."""
    manifest = read_manifest(claim.url)
    if manifest is None:
        return
    job = manifest.get("job", "?")
    what = {"memorize": "memory", "sample": "sample"}.get(job, f"run of memgen {job}")
    advice = " or delete it" if job == claim.job else ""
    raise MemoryDirError(f"{claim.url} already holds a finished {what} (manifest.json); "
                         f"choose another {claim.flag}{advice}")


def memorized_settings(memory: str) -> tuple[ReaderConfig, FingerprintConfig, int]:
    """A memory's memorize settings (defaults where its manifest names none): how it read, how
    it fingerprinted, its near-duplicate threshold; MemoryDirError for options this memgen
    does not know (a memory of a newer memgen)."""
    options = (read_manifest(memory) or {}).get("options", {})
    with _known_options(memory):
        reader = ReaderConfig(**options.get("reader", {}))
    return reader, memorized_fingerprint(memory), options.get("threshold", DEFAULT_THRESHOLD)


def memorized_fingerprint(memory: str) -> FingerprintConfig:
    """How a memory fingerprinted (memorized_settings' second), for a job that reads no shard:
    a reader option it does not know is no matter to it."""
    with _known_options(memory):
        return FingerprintConfig.of_memory(read_manifest(memory) or {})


@contextlib.contextmanager
def _known_options(memory: str) -> Iterator[None]:
    try:
        yield
    except TypeError as e:  # an option this memgen does not know
        raise MemoryDirError(f"{memory} is damaged: its manifest.json's options are not this "
                             f"memgen's ({e})") from None


def finished_manifest(memory: str) -> dict[str, Any]:
    """The manifest of a finished memory; MemoryDirError for anything else."""
    manifest = read_manifest(memory)
    if manifest is None:
        raise MemoryDirError(f"{memory} is not a finished memory ({why_no_manifest(memory)})"
                             f"{run_above(memory)}")
    if manifest.get("job") != "memorize":  # a sample's folder has a manifest.json too
        raise MemoryDirError(f"{memory} is not a memory: its manifest.json is from "
                             f"memgen {manifest.get('job', '?')}, not memgen memorize")
    return _readable(memory, manifest)


def why_no_manifest(memory: str) -> str:
    """Why `memory` has no manifest: its bucket or itself missing (a typo), else a folder
    without one (a run unfinished, or not a memory)."""
    with contextlib.suppress(Exception):  # a store that fails to say: no more than before
        fs, path = fsspec.core.url_to_fs(memory)
        if bucket := missing_bucket(fs, path):
            return f"the bucket {bucket} does not exist"
        if not fs.exists(path):
            return "nothing is there"
        if fs.exists(posixpath.join(path, "report.json")):  # evaluate's --out given for --memory/--sample
            return "no manifest.json: it holds memgen evaluate's report.json"
    return "no manifest.json"


_RUNS = {"memorize": "memory", "sample": "sample"}


def run_above(folder: str) -> str:
    """"; the folder above it, M, is a memory" when `folder` is one of a finished run's own
    (`M/images`, a sample's `S/images`: the run is the folder above), else ""."""
    parent = posixpath.dirname(folder.rstrip("/"))
    if not parent or parent.rstrip("/").endswith(":"):  # "images", "s3://bucket": nothing above it
        return ""
    try:
        job = (read_manifest(parent) or {}).get("job")
    except Exception:  # noqa: BLE001 - only a hint: a folder above that cannot be read has none
        return ""
    return f"; the folder above it, {parent}, is a {_RUNS[job]}" if job in _RUNS else ""


def _readable(memory: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """A memory's manifest whose fields that jobs read have their types (counts and parts per
    table, the memorize options), from a memgen that reads its schema; MemoryDirError else,
    rather than a job's traceback."""
    version = manifest.get("schema_version", SCHEMA_VERSION)
    if _whole(version) and version > SCHEMA_VERSION:
        raise MemoryDirError(f"{memory} was written by a newer memgen: its manifest.json has schema "
                             f"version {version}, this memgen reads {SCHEMA_VERSION} (upgrade memgen)")
    counts, parts, options = (manifest.get(key, {}) for key in ("counts", "parts", "options"))
    fields = {"counts": counts, "parts": parts, "options": options}
    if isinstance(options, dict):
        fields |= {f"options.{key}": options.get(key, {}) for key in ("reader", "fingerprint")}
    bad = [key for key, value in fields.items() if not isinstance(value, dict)]
    if not bad:
        bad = [f"{key}.{table}" for key, values in (("counts", counts), ("parts", parts))
               for table in TABLES if table in values and not _whole(values[table])]
        bad += [] if "images" in counts else ["counts.images"]
        threshold = options.get("threshold", 0)
        bad += [] if _whole(threshold) and threshold <= MAX_THRESHOLD else ["options.threshold"]
        # an edited -1 decoded nothing: every image a failure, and the run said nothing else
        bad += [f"options.{group}.{key}" for group, key, usable in _OPTION_VALUES
                if key in options.get(group, {}) and not usable(options[group][key])]
        bad += [] if _whole(version) else ["schema_version"]
    if bad:
        raise MemoryDirError(f"{memory} is damaged: its manifest.json has no usable {', '.join(bad)}")
    return manifest


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _counting(value: Any) -> bool:
    return _whole(value) and value > 0


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


# the memorize options a job reuses, and values no memorize run writes (zero or negative
# sizes, an unknown mode; memorize's own bounds, 1 TiB records, are not repeated here)
_OPTION_VALUES = (("fingerprint", "mode", lambda v: v in MODES),
                  ("fingerprint", "max_pixels", _counting),
                  ("fingerprint", "min_side", _whole),
                  ("fingerprint", "orientations", lambda v: v in ORIENTATIONS),
                  ("reader", "max_bytes", _counting),
                  ("reader", "reject_data_cap", _whole),
                  ("reader", "http_timeout", _positive))


def check_memory(memory: str) -> None:
    """MemoryDirError unless every table of a finished memory is what its manifest counts."""
    for table in TABLES:
        _part_files(memory, table)


def _part_files(memory: str, table: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """A finished memory's part files of one table, sorted, and their filesystem;
    MemoryDirError, before any job reads them, when they are not what its manifest counts
    (a part lost, added or replaced) or one is not a Parquet part of the table. Checked
    once a process for each memory run: a job opens a table several times, and on object
    stores every footer is a round trip."""
    fs, files = _checked_part_files(memory, table, manifest_digest(memory))
    return fs, list(files)


@functools.lru_cache(maxsize=64)
def _checked_part_files(memory: str, table: str, digest: str | None
                        ) -> tuple[fsspec.AbstractFileSystem, tuple[str, ...]]:
    """_part_files' check, cached by the manifest's digest: another run of the memory is checked anew."""
    manifest = finished_manifest(memory)
    expected = manifest.get("parts", {}).get(table)
    fs, path = fsspec.core.url_to_fs(join(memory, table))
    files = sorted(glob_in(fs, path, "part-*.parquet"))
    if expected is not None and len(files) != expected:
        raise MemoryDirError(f"{memory} is damaged: its manifest counts {expected} {table} parts, "
                             f"{len(files)} are there")
    rows = sum(_footer_rows(memory, table, fs, files))
    if manifest.get("counts", {}).get(table, rows) != rows:
        raise MemoryDirError(f"{memory} is damaged: its manifest counts {manifest['counts'][table]} "
                             f"{table} rows, its parts hold {rows}")
    return fs, tuple(files)


def _nulls(footer: pq.FileMetaData, names: set[str]) -> dict[str, int]:
    """Columns of `names` that hold nulls, and how many, by the footer's statistics (a part
    rewritten by a tool that writes every column nullable, DuckDB's, passes when none is
    null; a null `copies` failed sample's weighting mid-run)."""
    nulls: dict[str, int] = {}
    for group in range(footer.num_row_groups):
        row_group = footer.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            stats = chunk.statistics
            if chunk.path_in_schema in names and stats is not None and stats.has_null_count:
                nulls[chunk.path_in_schema] = nulls.get(chunk.path_in_schema, 0) + stats.null_count
    return {name: count for name, count in nulls.items() if count}


FOOTER_READS = 16  # footers read at once: on object stores each is a round trip or two


def _footer_rows(memory: str, table: str, fs: fsspec.AbstractFileSystem, files: list[str]) -> list[int]:
    """Each part's row count, from its footer; MemoryDirError for a file that is not a Parquet
    part of `table` (a worker would fail on it mid-run, with Arrow's traceback)."""
    schema = table_schema(table)

    def rows(file: str) -> int:
        try:
            footer = pq.read_metadata(file, filesystem=fs)
        except (pa.ArrowException, OSError) as e:
            raise MemoryDirError(f"{memory} is damaged: {table}/{posixpath.basename(file)} "
                                 f"is not a readable Parquet file ({e})"[:500]) from None
        except ValueError as e:  # over http(s): a server without Range requests, which Parquet needs
            raise MemoryDirError(f"{memory}: {table}/{posixpath.basename(file)} cannot be read "
                                 f"({e})"[:500]) from None
        named = (footer.metadata or {}).get(PART_KEY, b"").decode(errors="replace")
        if named and named != _part_of(file):  # rewritten by other tools: none, or the part read
            raise MemoryDirError(f"{memory} is damaged: {_part_of(file)} is a copy of {named} "
                                 "(its footer says so)")
        found = footer.schema.to_arrow_schema()
        missing = set(schema.names) - set(found.names)
        if missing:
            raise MemoryDirError(f"{memory} is damaged: {table}/{posixpath.basename(file)} lacks "
                                 f"the {table} columns {', '.join(sorted(missing))}")
        for field in schema:  # a part rewritten with other types fails a job mid-run
            other = found.field(field.name).type
            if not _same_kind(field.type, other):
                raise MemoryDirError(f"{memory} is damaged: {table}/{posixpath.basename(file)} holds "
                                     f"{field.name} as {other}, not {field.type}")
        nulls = _nulls(footer, {f.name for f in schema if not f.nullable})
        if nulls:
            name, count = min(nulls.items())
            raise MemoryDirError(f"{memory} is damaged: {table}/{posixpath.basename(file)} holds {count} "
                                 f"nulls in {name}, which memgen writes in every row")
        return footer.num_rows

    with ThreadPoolExecutor(FOOTER_READS) as pool:
        return list(pool.map(rows, files))


def _same_kind(expected: pa.DataType, found: pa.DataType) -> bool:
    """Whether a column of type `found` reads as `expected`: the same type, or its large or
    view form (Polars writes large_string)."""
    kinds = ((pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view),
             (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view))
    return expected.equals(found) or any(
        any(test(expected) for test in kind) and any(test(found) for test in kind) for kind in kinds)


def open_table(memory: str, table: str) -> ds.Dataset:
    """A finished memory's table as a pyarrow dataset (empty when the table has no parts)."""
    fs, files = _part_files(memory, table)
    return ds.dataset(files, schema=table_schema(table), format="parquet", filesystem=fs)


@contextlib.contextmanager
def damaged_data(folder: str, name: str) -> Iterator[None]:
    """MemoryDirError for a Parquet file of a finished run (`name` in `folder`) that Arrow
    cannot decode: a memory part whose footer is whole (check_memory read it) but whose
    pages are not (overwritten, a disk's bad sector), a sample's index cut short. Found
    mid-run, it ended sample and evaluate in Arrow's traceback. What storage raises (an
    errno, a client's own OSError subclass) stays as it is: the command says it as storage's."""
    try:
        yield
    except (pa.ArrowInvalid, OSError) as e:
        if type(e) not in (pa.ArrowInvalid, OSError) or getattr(e, "errno", None) is not None:
            raise
        said = next((line for line in str(e).splitlines() if line.strip()), "")
        raise MemoryDirError(f"{folder} is damaged: {name} cannot be read ({said})"[:500]) from None


def _damaged_part(url: str) -> contextlib.AbstractContextManager[None]:
    return damaged_data(posixpath.dirname(posixpath.dirname(url)), _part_of(url))


def read_columns(part: str, columns: list[str]) -> pa.Table:
    """Some columns of a table's part (small ones: ids, copies), whole."""
    fs, path = fsspec.core.url_to_fs(part)
    with _damaged_part(part):
        return pq.read_table(path, columns=columns, filesystem=fs)


def part_rows(url: str, columns: list[str] | None = None, selected: frozenset[str] | None = None,
              batch_rows: int = 64) -> Iterator[dict[str, Any]]:
    """The rows of an images part (a URL), `batch_rows` at a time (`columns`: all, if None;
    image_id among them). With `selected`, only rows of those ids, and only the row groups
    that hold one are read beyond their id column: ids are random, so a filter's statistics
    skip nothing (a dataset scan read every image byte, and ahead: several times a part in
    memory, to take a few rows)."""
    with fsspec.open(url, "rb") as f, _damaged_part(url):
        part = pq.ParquetFile(f)
        groups = list(range(part.num_row_groups))
        if selected is not None:
            groups = [g for g in groups if not selected.isdisjoint(
                part.read_row_group(g, columns=["image_id"]).column(0).to_pylist())]
        if not groups:
            return
        for batch in part.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
            for row in batch.to_pylist():
                if selected is None or row["image_id"] in selected:
                    yield row


def image_parts(memory: str) -> list[str]:
    """A finished memory's images/ part files, sorted, as URLs fsspec can open anywhere."""
    fs, files = _part_files(memory, "images")
    return [fs.unstrip_protocol(f) for f in files] if "://" in memory else files
