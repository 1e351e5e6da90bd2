"""MosaicML Streaming's MDS shards (`shard.00000.mds`, compressed `shard.00000.mds.zstd`:
what `streaming.MDSWriter` writes, MosaicML's and Databricks' training data format), read
front to back, and written as MDSWriter writes them (with their index.json), without
`streaming` (whose import pulls torch and transformers).

A shard describes itself: a uint32 sample count n, n + 1 uint32 offsets from the file's
start (each sample's start, then the last one's end), the writer's configuration as JSON
(column names, encodings and fixed sizes, which the folder's index.json repeats), then the
samples. A sample is the uint32 sizes of its columns of variable size, then each column's
bytes in order. All little-endian, as numpy writes them on the machines that do.

Nothing is sought: a shard over https or from a bucket is read as it arrives, a sample at
a time. A file cut short raises EOFError after the samples before the cut; a pickled column
(`pkl`) is never unpickled (pickle runs code): it is binary bytes, as an encoding this
module does not know.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
from collections.abc import Callable, Iterator
from typing import IO, NamedTuple

import numpy as np
import pyarrow as pa
from PIL import Image

from memgen.tarstream import read_up_to, skip

_U32 = 4
_CONFIG_LIMIT = 1 << 20  # a writer's configuration is a few hundred bytes: more says this is no MDS shard
SIZE_LIMIT = 1 << 26  # MDSWriter's default shard size: a shard is downloaded whole before it is read
INDEX = "index.json"  # the dataset's list of shards, beside them


class Column(NamedTuple):
    name: str
    encoding: str  # MDS's: "jpeg", "str", "ndarray:float32:768", ...
    size: int | None  # bytes of every value when fixed (numbers, a shaped ndarray), else None


class Sample(NamedTuple):
    """One sample of a shard, as read."""

    ordinal: int  # its place in the shard
    values: dict[str, object] | None  # column -> value; None: not read, `unread` says why
    size: int  # bytes of the encoded sample
    unread: tuple[str, str] | None = None  # (error type, why): too_large, or corrupt_sample
    head: bytes = b""  # a sample not read: its first bytes, to see what it is


class MdsError(ValueError):
    """Bytes that are no MDS shard, or a damaged one."""


def mds_shard(f: IO[bytes], max_bytes: int, head_bytes: int = 0) -> tuple[list[Column], Iterator[Sample]]:
    """(columns, samples) of the MDS shard `f`, read front to back; a sample over `max_bytes`,
    or whose columns do not decode as declared (the offsets frame the next one), is not read
    but for its first `head_bytes`. MdsError where the head is no MDS shard's, EOFError where
    the file ends before a sample does."""
    head = read_up_to(f, 2 * _U32)
    if len(head) < 2 * _U32:
        raise MdsError("shorter than an MDS shard's head")
    count, first = struct.unpack("<2I", head)
    table_end = _U32 * (count + 2)  # the count and the offsets: the configuration follows
    # told from the first offset before the others are read: other bytes make a count of millions
    if not table_end <= first <= table_end + _CONFIG_LIMIT:
        raise MdsError("its first bytes are not an MDS shard's offsets (no MDS shard, or a damaged one)")
    table = read_up_to(f, _U32 * count)
    if len(table) < _U32 * count:
        raise EOFError(f"the file ends inside the offsets of its {count} samples: it was cut short")
    offsets = (first, *struct.unpack(f"<{count}I", table))
    if any(a > b for a, b in itertools.pairwise(offsets)):
        raise MdsError("its offsets do not grow from sample to sample (a damaged MDS shard)")
    columns = _columns(read_up_to(f, first - table_end))
    return columns, _samples(f, offsets, columns, max_bytes, head_bytes)


def _columns(config: bytes) -> list[Column]:
    """The columns the writer's configuration JSON declares."""
    try:
        said = json.loads(config)
        names, encodings, sizes = said["column_names"], said["column_encodings"], said["column_sizes"]
    except (ValueError, KeyError, TypeError) as e:
        raise MdsError(f"no MDS writer configuration after its offsets ({e})") from None
    columns = [Column(*column) for column in zip(names, encodings, sizes, strict=False)]
    if (said.get("format", "mds") != "mds" or not len(names) == len(encodings) == len(sizes)
            or not all(isinstance(c.name, str) and isinstance(c.encoding, str)
                       and (c.size is None or isinstance(c.size, int) and c.size >= 0) for c in columns)):
        raise MdsError(f"its configuration is not an MDS shard's: {config[:200]!r}")
    return columns


def _samples(f: IO[bytes], offsets: tuple[int, ...], columns: list[Column], max_bytes: int,
             head_bytes: int) -> Iterator[Sample]:
    for ordinal, (start, end) in enumerate(itertools.pairwise(offsets)):
        size = end - start
        if size > max_bytes:
            head = read_up_to(f, min(head_bytes, size))
            if len(head) + skip(f, size - len(head)) < size:
                raise EOFError(f"the file ends inside sample {ordinal}: it was cut short")
            why = f"a sample of {size} bytes > max_bytes {max_bytes}"
            yield Sample(ordinal, None, size, ("too_large", why), head)
            continue
        data = read_up_to(f, size)
        if len(data) < size:
            raise EOFError(f"the file ends inside sample {ordinal}: it was cut short")
        try:
            yield Sample(ordinal, _sample_values(data, columns, ordinal), size)
        except MdsError as e:
            yield Sample(ordinal, None, size, ("corrupt_sample", str(e)[:500]), data[:head_bytes])


def mds_schema(columns: list[Column]) -> pa.Schema:
    """The columns as a table's schema, typed as `_decoded` gives their values."""
    return pa.schema([(column.name, _arrow_type(column.encoding)) for column in columns])


def _sample_values(data: bytes, columns: list[Column], ordinal: int = 0) -> dict[str, object]:
    """A sample's bytes as {column: value} (MdsError where they do not decode as declared)."""
    variable = sum(column.size is None for column in columns)
    if len(data) < _U32 * variable:
        raise MdsError(f"sample {ordinal} is shorter than its column sizes")
    sizes = iter(struct.unpack(f"<{variable}I", data[: _U32 * variable]))
    at, values = _U32 * variable, {}
    for column in columns:
        size = column.size if column.size is not None else next(sizes)
        if at + size > len(data):
            raise MdsError(f"sample {ordinal}: its {column.name} column runs past the sample's end")
        try:
            values[column.name] = _decoded(column.encoding, data[at: at + size])
        except (ValueError, KeyError, IndexError, struct.error, OSError) as e:
            said = f"sample {ordinal}: its {column.name} column is no {column.encoding} ({e})"
            raise MdsError(said) from None
        at += size
    return values


def _decoded(encoding: str, raw: bytes) -> object:
    """A value of an MDS encoding as memgen reads it: image bytes as stored (`pil`, raw
    pixels, as a PNG of them: lossless), lists of images as lists of bytes, numbers and text
    as Python's, `json` parsed, an ndarray as (nested) lists; `pkl` and encodings not known
    here as their bytes."""
    name, _, spec = encoding.partition(":")
    if name in _IMAGE_LISTS:
        images = _jpeg_array(raw) if name in ("jpeg_array", "jpegarray") else _list(raw)
        return [_png(image) for image in images] if name == "list[pil]" else images
    if name == "pil":
        return _png(raw)
    if name in ("str", "str_decimal"):  # a Decimal as its text: exact
        return raw.decode("utf-8")
    if name == "str_int":
        return int(raw.decode("utf-8"))
    if name == "str_float":
        return float(raw.decode("utf-8"))
    if name == "json":
        return json.loads(raw.decode("utf-8"))
    if name == "ndarray":
        return _python(_ndarray(raw, spec))
    if name == "int" or name in _SCALARS:
        dtype = np.dtype("<i8" if name == "int" else _SCALARS[name])
        if len(raw) != dtype.itemsize:
            raise ValueError(f"{len(raw)} bytes, not {dtype.itemsize}")
        return _python(np.frombuffer(raw, dtype)[0])
    return raw  # bytes, jpeg, png; pkl (never unpickled); a custom encoding


def _arrow_type(encoding: str) -> pa.DataType:
    """The Arrow type of what `_decoded` gives for `encoding`: what a table's column checks
    need to tell image columns (binary, lists of it) from text and metadata."""
    name = encoding.partition(":")[0]
    if name in _IMAGE_LISTS:
        return pa.list_(pa.large_binary())
    if name in ("str", "str_decimal", "json"):
        return pa.large_string()
    if name in ("int", "str_int") or name in _SCALARS:
        return pa.float64() if name.startswith("float") else pa.int64()
    if name == "str_float":
        return pa.float64()
    if name == "ndarray":
        return pa.list_(pa.float64())
    return pa.large_binary()


_IMAGE_LISTS = ("list[jpeg]", "list[png]", "list[pil]", "jpeg_array", "jpegarray")
_SCALARS = {name: "<" + np.dtype(name).str[1:] for name in ("uint8", "uint16", "uint32", "uint64", "int8",
                                                            "int16", "int32", "int64", "float16", "float32",
                                                            "float64")}
# streaming's NDArray codes: a value's dtype (1 byte when the encoding names none), a shape's
_ND_DTYPES = {8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 18: "float16", 32: "uint32", 33: "int32",
              34: "float32", 64: "uint64", 65: "int64", 66: "float64"}
_ND_SHAPE_DTYPES = ("<u1", "<u2", "<u4", "<u8")


def _ndarray(raw: bytes, spec: str) -> np.ndarray:
    """streaming's NDArray: [dtype code: 1, when the encoding names none] [ndim << 2 | shape
    dtype code: 1, and the shape, when the encoding gives none] [values]."""
    dtype_name, _, shape_text = spec.partition(":")
    at = 0
    if not dtype_name:
        dtype_name, at = _ND_DTYPES[raw[0]], 1
    if shape_text:
        shape = tuple(int(n) for n in shape_text.split(","))
    else:
        ndim, shape_dtype = raw[at] >> 2, np.dtype(_ND_SHAPE_DTYPES[raw[at] & 3])
        shape = tuple(int(n) for n in np.frombuffer(raw, shape_dtype, ndim, at + 1))
        at += 1 + ndim * shape_dtype.itemsize
    return np.frombuffer(raw, _SCALARS[dtype_name], offset=at).reshape(shape)


def _python(value: np.ndarray | np.generic) -> object:
    """numpy's value as Python's: a float32's or float16's shortest text (0.1, not
    0.10000000149011612), as a TFRecord's floats are read."""
    if value.dtype.kind == "f" and value.dtype.itemsize < 8:
        return _shortest(value.tolist(), value.dtype.type)
    return value.tolist()


def _shortest(value: object, kind: type) -> object:
    if isinstance(value, list):
        return [_shortest(v, kind) for v in value]
    return float(str(kind(value)))


def _list(raw: bytes) -> list[bytes]:
    """streaming's List: [placeholder: 4] [count: 4] [count sizes: 4 each] [the items]."""
    (count,) = struct.unpack_from("<I", raw, _U32)
    sizes = struct.unpack_from(f"<{count}I", raw, 2 * _U32)
    return _items(raw, 2 * _U32 + _U32 * count, sizes)


def _jpeg_array(raw: bytes) -> list[bytes]:
    """streaming's JPEGArray: [count: 4] [count sizes: 4 each] [the JPEGs]."""
    (count,) = struct.unpack_from("<I", raw)
    sizes = struct.unpack_from(f"<{count}I", raw, _U32)
    return _items(raw, _U32 + _U32 * count, sizes)


def _items(raw: bytes, at: int, sizes: tuple[int, ...]) -> list[bytes]:
    if at + sum(sizes) != len(raw):
        raise ValueError(f"its items' sizes add up to {at + sum(sizes)} bytes, not {len(raw)}")
    items = []
    for size in sizes:
        items.append(raw[at: at + size])
        at += size
    return items


def _png(raw: bytes) -> bytes:
    """streaming's PIL encoding, [width: 4] [height: 4] [mode length: 4] [mode] [pixels], as
    a PNG of those pixels."""
    width, height, mode_size = struct.unpack_from("<3I", raw)
    mode = raw[12: 12 + mode_size].decode("ascii")
    out = io.BytesIO()
    Image.frombytes(mode, (width, height), raw[12 + mode_size:]).save(out, "PNG")
    return out.getvalue()


class ShardWriter:
    """Samples -> MDS shards of at most `size_limit` bytes (a larger sample alone), cut as
    MDSWriter cuts them, the shard n named `name(n)`; `shards`: their index.json entries.
    Columns are in MDSWriter's order (sorted by name), a sample's values their encoded bytes."""

    def __init__(self, columns: list[Column], name: Callable[[int], str],
                 size_limit: int = SIZE_LIMIT) -> None:
        self.columns, self.name, self.size_limit = columns, name, size_limit
        self.config = {"column_encodings": [c.encoding for c in columns],
                       "column_names": [c.name for c in columns], "column_sizes": [c.size for c in columns],
                       "compression": None, "format": "mds", "hashes": [], "size_limit": size_limit,
                       "version": 2}
        self._config = json.dumps(self.config, sort_keys=True).encode()  # each shard's, after its offsets
        self._samples: list[bytes] = []
        self._size = 2 * _U32 + len(self._config)  # the shard's bytes so far
        self.shards: list[dict] = []

    @property
    def current(self) -> str:
        """The name of the shard the last sample added went into."""
        return self.name(len(self.shards))

    def add(self, values: dict[str, bytes]) -> tuple[str, bytes] | None:
        """Add a sample; (name, bytes) of the shard it did not fit in, finished, else None."""
        sizes = [len(values[c.name]) for c in self.columns if c.size is None]
        sample = struct.pack(f"<{len(sizes)}I", *sizes) + b"".join(values[c.name] for c in self.columns)
        done = self.finish() if self._samples and self._size + len(sample) + _U32 > self.size_limit else None
        self._samples.append(sample)
        self._size += len(sample) + _U32
        return done

    def finish(self) -> tuple[str, bytes] | None:
        """(name, bytes) of the shard of the samples added since the last one, None for none."""
        if not self._samples:
            return None
        count, name = len(self._samples), self.current
        start = _U32 * (count + 2) + len(self._config)
        offsets = list(itertools.accumulate(map(len, self._samples), initial=start))
        if offsets[-1] >= 1 << 32:  # a uint32 offset each
            raise ValueError(f"an MDS shard holds at most 4 GiB: {offsets[-1]} bytes of samples")
        data = struct.pack(f"<{count + 2}I", count, *offsets) + self._config + b"".join(self._samples)
        raw_data = {"basename": name.rpartition("/")[2], "bytes": len(data), "hashes": {}}
        self.shards.append({**self.config, "raw_data": raw_data, "samples": count, "zip_data": None})
        self._samples, self._size = [], 2 * _U32 + len(self._config)
        return name, data


def index_json(shards: list[dict]) -> bytes:
    """The index.json of a dataset of these shards (ShardWriter.shards), as MDSWriter writes it."""
    return json.dumps({"shards": shards, "version": 2}, sort_keys=True).encode()
