"""A Parquet (or Arrow IPC, or MDS) shard's columns: which holds the images and which are text, and the
checks of the columns the flags name, before a run (of a TFRecord's features too, when no shard
is a table)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from memgen.arrowfile import read_schema, record_batches
from memgen.decode import identified
from memgen.inline import decoded
from memgen.mdsfile import mds_schema, mds_shard
from memgen.readers.config import DEFAULT_IMAGE_COLUMNS, PER_ROW, ReaderConfig
from memgen.readers.tfrecord import image_values, unnamed_image
from memgen.records import Reject, Shard
from memgen.shards import compression, open_input
from memgen.tfrecordfile import Example, examples

TABLES = ("parquet", "arrow", "mds")  # shards of columns: a row (an MDS sample) an image, or a list of them


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
    first Parquet, Arrow IPC or MDS shard lacks, and what an --image_column it has holds when that is
    not bytes (text, a URL column: every record would be a reject), or without --image_column why
    it has no image column by the default names although columns hold bytes, or when all shards
    are tables and none of its columns does (every shard a reject, an empty memory), from one read
    of its schema; nothing when all are usable, or the shard
    cannot be read here (its reader says why, as a reject)."""
    named = {flag: name for flag, name, default in (
        ("--image_column", config.image_column, None),
        ("--caption_column", config.caption_column, ReaderConfig.caption_column),
        ("--url_column", config.url_column, ReaderConfig.url_column),
        ("--key_column", config.key_column, ReaderConfig.key_column)) if name != default}
    first = _first_table_schema(shards)
    if first is None:
        return _named_features(shards, config)
    first_shard, schema = first
    uri = first_shard.uri
    if config.image_column is None:
        try:
            _image_column(schema, config)
        except ColumnError as e:  # images under a name memgen does not guess (`image_data`, `JPG`)
            if any(_holds_bytes(t) for t in schema.types):
                return NamedColumns([], None, "", f"{uri}: {e}")
            # no bytes at all: metadata beside tars or image files, else a list of URLs (LAION's)
            if all(shard.kind in TABLES for shard in shards):
                # text under an image's name may be base64, which the error says how to read
                base64_said = any(is_text(schema.field(n).type) for n in DEFAULT_IMAGE_COLUMNS
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
        if is_text(found):
            holds = _not_base64_images(first_shard, config.image_column)
        elif not (_holds_bytes(found) or pa.types.is_null(found)):  # all null (pandas' None): undecided
            holds = f"{found} in {uri}, not image bytes"
    return NamedColumns(missing, holds, f"{uri} (its columns: {', '.join(schema.names)})"[:400])


def _named_features(shards: list[Shard], config: ReaderConfig) -> NamedColumns:
    """named_columns of the first TFRecord shard, by its first Example: a missing
    --image_column feature (in its context or, of a SequenceExample, its feature lists), one
    holding numbers or text (a url, a label: as a Parquet's text column that is no base64,
    every record would be a reject), or without the flag binary features under names not
    guessed; its caption, url and key features are not checked."""
    found = _first_example(shards)
    if found is None:
        return NamedColumns([], None, "")
    shard, example = found
    lists = f"; its feature lists: {', '.join(example.sequences)}" if example.sequences else ""
    described = f"{shard.uri} (its features: {', '.join(sorted(example.features))}{lists})"[:400]
    if config.image_column is None:
        said = unnamed_image(example)
        return NamedColumns([], None, "", f"{shard.uri}: {said}" if said else None)
    values = image_values(example, config.image_column)
    if values is None:
        return NamedColumns([f"--image_column {config.image_column}"], None, described)
    first = values[0] if values else None
    if first is not None and not isinstance(first, bytes):
        return NamedColumns([], f"numbers in {shard.uri}, not image bytes", described)
    text = _text_not_image(first) if first else None
    holds = f"text in {shard.uri}, not image bytes (its first: {text[:60]!r})" if text is not None else None
    return NamedColumns([], holds, described)


def _text_not_image(data: bytes) -> str | None:
    """`data` as text when it is UTF-8 and no image (image bytes are not UTF-8), else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if identified(data) else text


def _first_example(shards: list[Shard]) -> tuple[Shard, Example] | None:
    """(shard, its first Example) of the first TFRecord shard; None when there is none, it
    cannot be read here, or its first record is no Example (its reader says why, as a
    reject); not asked over http(s), where nothing is read before the run."""
    first = next((s for s in shards if s.kind == "tfrecord"), None)
    if first is None or first.uri.startswith(("http://", "https://")):
        return None
    try:
        with open_input(first.location, compression(first.uri)) as f:
            example = next(examples(f, ReaderConfig.max_bytes), None)
    except Exception:  # noqa: BLE001 - unreadable here: its reader says why, as a reject
        return None
    return None if example is None or example.features is None else (first, example)


def _not_base64_images(shard: Shard, column: str) -> str | None:
    """What a text --image_column holds when its first value is not a base64 image (URLs,
    paths, captions: every record would be a reject), else None."""
    try:
        with open_input(shard.location, compression(shard.uri)) as f:
            for texts in _column_values(shard, f, column):
                first = next((text for text in texts if text), None)
                if first is not None:
                    data = decoded(first)
                    if isinstance(data, bytes) and identified(data):
                        return None
                    return f"text in {shard.uri}, not base64 images (its first: {first[:60]!r})"
    except Exception:  # noqa: BLE001 - unreadable here: its reader says why, as a reject
        return None
    return None


def _column_values(shard: Shard, f: IO[bytes], column: str) -> Iterator[list]:
    """A table shard's values of `column`, a batch (an MDS sample) at a time."""
    if shard.kind == "mds":
        for sample in mds_shard(f, ReaderConfig.max_bytes)[1]:
            yield [sample.values[column]] if sample.values else []
        return
    batches = record_batches(f)[1] if shard.kind == "arrow" else pq.ParquetFile(f).iter_batches(
        batch_size=64, columns=[column])
    for batch in batches:
        yield batch.column(column).to_pylist()


def _table_schema(shard: Shard, f: IO[bytes]) -> pa.Schema:
    if shard.kind == "mds":
        return mds_schema(mds_shard(f, ReaderConfig.max_bytes)[0])
    return read_schema(f) if shard.kind == "arrow" else pq.read_schema(f)


def _first_table_schema(shards: list[Shard]) -> tuple[Shard, pa.Schema] | None:
    """(shard, schema) of the first Parquet, Arrow IPC or MDS shard; None when there is none, or it
    cannot be read here (its reader says why, as a reject). Over http(s), reading a Parquet's
    schema costs the whole file: not asked."""
    first = next((s for s in shards if s.kind in TABLES), None)
    if first is None or first.uri.startswith(("http://", "https://")):
        return None
    try:
        with open_input(first.location, compression(first.uri)) as f:
            return first, _table_schema(first, f)
    except Exception:  # noqa: BLE001 - unreadable here: its reader says why, as a reject
        return None


class ParquetColumns:
    """Which columns of a Parquet shard are read, and what each is for: the image bytes,
    text fields (caption, url, key) and metadata (every other column but binary ones,
    which are not text), with the shard's Hive partitions (Shard.partitions). The caption is
    --caption_column's, else `text`'s, as Hugging Face datasets name it (diffusers' training
    scripts read `text`; an ImageFolder's metadata is read so too)."""

    def __init__(self, schema: pa.Schema, config: ReaderConfig, partitions: dict[str, str | None]) -> None:
        self.partitions = partitions
        names = schema.names
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ColumnError("duplicate_columns", f"column names appear more than once: {repeated}")
        self.image = _image_column(schema, config)
        self.caption = config.caption_column if config.caption_column in names else "text"
        self.listed = _is_list(schema.field(self.image).type)  # several images a row
        self.metadata = [n for n in names if n != self.image and not _has_binary(schema.field(n).type)]
        text = [n for n in (self.caption, config.url_column, config.key_column)
                if n in names and n != self.image and n not in self.metadata]
        self.fields = self.metadata + text
        self.read = [self.image, *self.fields]
        self.per_row = PER_ROW if self.listed else 1  # a row's records' ordinals: row * per_row + i


def shard_columns(schema: pa.Schema, config: ReaderConfig, shard: Shard) -> ParquetColumns | Reject:
    """The columns of a table shard of `schema`, or the reject of one whose columns give no
    records (no image column, names repeated)."""
    try:
        return ParquetColumns(schema, config, dict(shard.partitions))
    except ColumnError as e:
        return Reject(shard.index, 0, shard.source(), "read", e.error_type, str(e))


def _image_column(schema: pa.Schema, config: ReaderConfig) -> str:
    """--image_column, or the first default name whose column holds bytes, else the first
    column the file's Hugging Face metadata declares an Image (`datasets` keeps that feature
    under any name: `photo`, `picture`)."""
    candidates = ([config.image_column] if config.image_column  # each once: a reject names them
                  else list(dict.fromkeys([*DEFAULT_IMAGE_COLUMNS, *_hf_images(schema)])))
    wrong = [f"{n!r} holds {schema.field(n).type}" for n in candidates
             if n in schema.names and not _holds_bytes(schema.field(n).type)]
    for name in candidates:
        if name in schema.names and _holds_bytes(schema.field(name).type):
            return name
    if config.image_column in schema.names and is_text(schema.field(config.image_column).type):
        return config.image_column  # base64, as named (URLs or paths are refused before the run)
    for name in candidates:  # pandas' all-None column: each row a reject of its own, not the shard one
        if name in schema.names and (pa.types.is_null(schema.field(name).type)
                                     or _paths_alone(schema.field(name).type)):
            return name
    found = f" ({'; '.join(wrong)}, not image bytes)" if wrong else ""
    # the flag that reads them, with the columns that could be it: `image_data`, `JPG`
    holding = [n for n in schema.names if _holds_bytes(schema.field(n).type)]
    hint = f"; {holding} hold bytes: name the image one with --image_column" if holding else ""
    texts = [n for n in candidates if n in schema.names and is_text(schema.field(n).type)]
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
    return is_binary(t)


def _paths_alone(t: pa.DataType) -> bool:
    """A Hugging Face image struct {bytes, path} (or a list of them) whose `bytes` no row holds,
    so pyarrow typed it null (`Table.from_pylist` of images kept as files): each row is read
    from its path, as when the bytes are typed binary."""
    t = t.value_type if _is_list(t) else t
    return (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and t.get_field_index("path") >= 0
            and pa.types.is_null(t.field("bytes").type))


def is_text(t: pa.DataType) -> bool:
    """A string type (dictionary-encoded too)."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_binary(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t))


def _has_binary(t: pa.DataType) -> bool:
    """Binary anywhere in the type (a list of thumbnails, a struct with bytes): not text, so
    not metadata (it became the Python repr of the bytes)."""
    if is_binary(t):
        return True
    if pa.types.is_dictionary(t):
        return _has_binary(t.value_type)
    return any(_has_binary(t.field(i).type) for i in range(t.num_fields))
