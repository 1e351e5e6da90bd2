"""Files compressed whole as one Snappy block (python-snappy's `snappy.compress`: MosaicML
Streaming's `.mds.snappy`), registered with fsspec as SNAPPY_BLOCK: fsspec's own "snappy"
reads the framed format, which these are not.

The block format has no frames to stream: the file is read and decompressed whole on the
first read, up to MAX_BYTES (an MDS shard's offsets are 32-bit: none is larger), and a file
cut short loses all of it (ValueError).
"""

from __future__ import annotations

import io
from typing import IO

import cramjam

from memgen.readonly import ReadOnlyStream, register_reader
from memgen.tarstream import read_up_to

SNAPPY_BLOCK = "memgen-snappy-block"
MAX_BYTES = 1 << 32


class SnappyBlockReader(ReadOnlyStream):
    """The decompressed bytes of a file that is one Snappy block."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f  # not closed here: fsspec and transfer close it after the reader
        self._data: io.BytesIO | None = None

    def read(self, n: int = -1) -> bytes:
        if self._data is None:
            self._data = io.BytesIO(_decompressed(read_up_to(self._f, MAX_BYTES)))
        return self._data.read(n)

    def close(self) -> None:
        self._data = None


def _decompressed(block: bytes) -> bytes:
    """A Snappy block's bytes; ValueError for one that is damaged, cut short, or would be
    larger than MAX_BYTES (its first bytes say its length)."""
    length, shift = 0, 0
    for byte in block[:5]:  # the uncompressed length, a little-endian varint
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    else:
        raise ValueError("not a Snappy block: no length at its start")
    if length > MAX_BYTES:
        raise ValueError(f"a Snappy block of {length} bytes, more than {MAX_BYTES} are read")
    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as e:
        raise ValueError(f"not a Snappy block, or a damaged or cut one ({e})") from None


register_reader(SNAPPY_BLOCK, SnappyBlockReader)
