"""Arrow IPC files and streams, read front to back: Hugging Face `datasets`' cache and
`save_to_disk` files (`data-00000-of-00001.arrow`, the stream format) and Feather v2 /
Arrow IPC files (`.feather`, `.arrow` as pyarrow and Polars write them: the file
format, whose first 8 bytes, "ARROW1" and padding, precede the same stream).

Nothing is sought: a stream over https or from a bucket is read as it arrives, a record
batch at a time. A stream that ends without its end-of-stream marker was cut short (pyarrow
reads one cut between two batches as a shorter one): that raises EOFError after the batches
before the cut, as a tar's missing end does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import pyarrow as pa

from memgen.tarstream import read_up_to

MAGIC = b"ARROW1"  # the file format's first (and last) bytes
_FEATHER_V1 = b"FEA1"  # Feather's first format (pyarrow before 0.17, 2020): no IPC stream inside
_FILE_HEAD = 8  # MAGIC and 2 bytes of padding, before the stream
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # a continuation marker and a length of 0


class _Watched:
    """A file object read from its `head` (bytes already taken from `f`) on, that keeps the
    last 8 bytes read: pyarrow reads a stream message by message, exactly, so those are
    the end-of-stream marker when the stream ended where its writer ended it."""

    def __init__(self, f: IO[bytes], head: bytes) -> None:
        self._f, self._head = f, head
        self.last = b""
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self._head if n < 0 else self._head[:n]
        self._head = self._head[len(data):]
        if n < 0:
            data += self._f.read()
        elif len(data) < n:  # all asked for, or fewer at the end only: pyarrow takes a short read for the end
            data += read_up_to(self._f, n - len(data))
        self.last = (self.last + data)[-len(_END_OF_STREAM):]
        return data


def record_batches(f: IO[bytes]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(schema, its record batches) of an Arrow IPC file or stream `f`, read front to back;
    the batches end with EOFError where the stream was cut short. pyarrow's errors (ArrowInvalid,
    a ValueError; OSError) are raised where the bytes are no Arrow IPC or damaged."""
    head = read_up_to(f, _FILE_HEAD)
    if head.startswith(_FEATHER_V1):
        raise ValueError("a Feather v1 file (written by pyarrow before 0.17), which holds no Arrow IPC "
                         "stream: write it again as Feather v2 (pyarrow.feather.write_feather)")
    watched = _Watched(f, b"" if head.startswith(MAGIC) else head)
    reader = pa.ipc.open_stream(pa.PythonFile(watched, mode="r"))
    return reader.schema, _checked(reader, watched)


def _checked(reader: pa.ipc.RecordBatchStreamReader, watched: _Watched) -> Iterator[pa.RecordBatch]:
    yield from reader
    if watched.last != _END_OF_STREAM:
        raise EOFError("the Arrow stream ends without its end-of-stream marker: it was cut short")


def read_schema(f: IO[bytes]) -> pa.Schema:
    """The schema of an Arrow IPC file or stream: its first message alone."""
    return record_batches(f)[0]
