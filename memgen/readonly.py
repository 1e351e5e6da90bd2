"""What memgen's decompressing readers (zstd, Brotli) share: a read-only file object, and
its registration as an fsspec compression (memgen writes no compressed streams)."""

from __future__ import annotations

from typing import IO, Any

import fsspec.compression


class ReadOnlyStream:
    """A file object that only reads; a subclass gives read() and close()."""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> Any:  # noqa: ANN401 - the subclass
        return self

    def __exit__(self, *_) -> None:
        self.close()


def register_reader(name: str, reader: type[ReadOnlyStream]) -> None:
    """`reader`, which wraps a compressed stream, as fsspec's compression `name`."""
    def open_reader(infile: IO[bytes], mode: str = "rb", **_) -> ReadOnlyStream:
        if "r" not in mode:
            raise ValueError(f"{name} only reads (mode {mode!r})")
        return reader(infile)

    fsspec.compression.register_compression(name, open_reader, [], force=True)  # force: a module reloaded
