"""Brotli-compressed shards (MosaicML Streaming's `.mds.br`): a streaming reader that says
when the stream was cut, registered with fsspec as BROTLI (fsspec has no Brotli codec).

Decompressed in bounded pieces (Brotli's output limit): a small file that inflates to
gigabytes never becomes one huge bytes object.
"""

from __future__ import annotations

from typing import IO

import brotli

from memgen.readonly import ReadOnlyStream, register_reader

BROTLI = "memgen-brotli"  # the fsspec compression name of BrotliReader
_CHUNK = 1 << 16  # compressed bytes read, and decompressed bytes made, at a time


class BrotliReader(ReadOnlyStream):
    """A Brotli stream's decompressed bytes; EOFError where it ends before its last
    meta-block, after every byte before the cut; ValueError for bytes that are no Brotli."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f  # not closed here: fsspec and transfer close it after the reader
        self._decompressor = brotli.Decompressor()
        self._pending = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._pending) < n:
            piece = self._more()
            if piece is None:
                break
            self._pending += piece
        size = len(self._pending) if n < 0 else min(n, len(self._pending))
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def _more(self) -> bytes | None:
        """The next decompressed bytes (at most _CHUNK), None at the stream's end."""
        try:
            if not self._decompressor.can_accept_more_data():  # output held back by the limit
                return self._decompressor.process(b"", output_buffer_limit=_CHUNK)
            if self._decompressor.is_finished():
                return None
            data = self._f.read(_CHUNK)
            if not data:
                raise EOFError("the Brotli stream ends before its last block: it was cut short")
            return self._decompressor.process(data, output_buffer_limit=_CHUNK)
        except brotli.error as e:
            raise ValueError(f"not a Brotli stream, or a damaged one ({e})") from None

    def close(self) -> None:
        self._pending.clear()


register_reader(BROTLI, BrotliReader)
