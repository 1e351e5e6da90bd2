"""Zstandard-compressed shards (.tar.zst): a streaming reader that says when the stream was cut.

Why not fsspec's "zstd" (zstandard's stream_reader as it is): a stream that ends inside a
frame reads as a shorter one without a word, so a .tar.zst cut short lost its last members
silently or said only that the tar had no end marker. Here the compressed bytes' frame
structure (RFC 8878: frames of blocks, skippable frames) is followed as they pass, and an
end inside a frame is an EOFError, as Python's gzip raises for a cut .tar.gz. Decompression
stays zstandard's, in bounded pieces: a stream of RLE blocks (ratio 32,768:1) never
becomes one huge bytes object.
"""

from __future__ import annotations

from typing import IO

import zstandard

from memgen.readonly import ReadOnlyStream, register_reader

ZSTD = "memgen-zstd"  # the fsspec compression name of ZstdReader (fsspec's own "zstd" misses cuts)
MAGIC = b"\x28\xb5\x2f\xfd"
_FRAME = int.from_bytes(MAGIC, "little")
_SKIPPABLE = range(0x184D2A50, 0x184D2A60)  # a skippable frame: magic, 4-byte size, content
_DICT_ID = (0, 1, 2, 4)  # bytes of the frame header's dictionary id, by its flag
_CONTENT_SIZE = (0, 2, 4, 8)  # bytes of its content size by its flag (flag 0: 1 in a single segment)
_RLE = 1  # a block of one byte repeated: 1 byte stored whatever its size
# the largest window decoded, as the zstd CLI's without --long: a frame written with
# `zstd --long=30` asks for 1 GiB of memory a stream, which a worker reading several would lack
WINDOW_LIMIT = 1 << 27


class WindowTooLarge(zstandard.ZstdError):
    """A frame asks for a window over WINDOW_LIMIT: no damage, a compression setting refused."""


class _Frames:
    """A compressed stream's reader that follows its frame structure: which header it expects
    next, and how many bytes of a block or skippable frame lie before it."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._state, self._want = "magic", 4  # the header expected next, and its length
        self._pending = b""  # that header's bytes so far
        self._skip = 0  # bytes before it: a block's content, a skippable frame's
        self._checksum = False  # the frame's blocks end with a 4-byte checksum
        self._frame_header = b""  # the current frame's header so far: its window size when whole
        self.widest = 0  # the largest window a frame read so far asks for
        self.offset = 0  # compressed bytes read

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.offset += len(data)
        self._follow(data)
        return data

    def between_frames(self) -> bool:
        return self._state == "magic" and not self._pending and not self._skip

    def _follow(self, data: bytes) -> None:
        pos = 0
        while pos < len(data) and self._state != "junk":
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            take = self._want - len(self._pending)
            self._pending += data[pos:pos + take]
            pos += take
            if len(self._pending) == self._want:
                header, self._pending = self._pending, b""
                self._header(header)

    def _header(self, header: bytes) -> None:
        """Take a complete header; set what comes after it."""
        state = self._state
        if state in ("magic", "descriptor", "header"):
            self._frame_header = (b"" if state == "magic" else self._frame_header) + header
        if state == "magic":
            magic = int.from_bytes(header, "little")
            # not zstd: zstandard says what it is; nothing here ends between frames any more
            self._expect(*(("descriptor", 1) if magic == _FRAME else ("skippable", 4) if magic in _SKIPPABLE
                           else ("junk", 0)))
        elif state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._expect("magic", 4)
        elif state == "descriptor":
            flags = header[0]
            single_segment = bool(flags & 0x20)
            self._checksum = bool(flags & 0x04)
            size_flag = flags >> 6
            rest = ((not single_segment) + _DICT_ID[flags & 3]
                    + (_CONTENT_SIZE[size_flag] or int(single_segment)))
            self._expect(*(("header", rest) if rest else ("block", 3)))
        elif state == "header":  # whole: the window it asks for is known
            self.widest = max(self.widest, zstandard.get_frame_parameters(self._frame_header).window_size)
            self._expect("block", 3)
        elif state == "block":
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            self._skip = 1 if kind == _RLE else size
            self._expect(*(("block", 3) if not last else ("checksum", 4) if self._checksum else ("magic", 4)))
        else:  # the checksum
            self._expect("magic", 4)

    def _expect(self, state: str, length: int) -> None:
        self._state, self._want = state, length


class ZstdReader(ReadOnlyStream):
    """A zstd stream's decompressed bytes, across frames (pzstd and `cat` write several); an
    EOFError where the stream ends inside a frame, after every byte before the cut."""

    def __init__(self, f: IO[bytes]) -> None:
        self._frames = _Frames(f)
        # the source is not closed here: fsspec and transfer close it after the reader
        self._reader = zstandard.ZstdDecompressor(max_window_size=WINDOW_LIMIT).stream_reader(
            self._frames, read_across_frames=True, closefd=False)

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._reader.read(n)
        except zstandard.ZstdError as e:
            if self._frames.widest <= WINDOW_LIMIT or "memory" not in str(e):  # not its window
                raise
            raise WindowTooLarge(
                f"{e}: a frame's window is {self._frames.widest >> 20} MiB (written by zstd --long); "
                f"windows up to {WINDOW_LIMIT >> 20} MiB are read, as by zstd without --long: "
                "compress without --long") from e
        if not data and n and not self._frames.between_frames():
            raise EOFError(f"zstd stream ended inside a frame at compressed byte {self._frames.offset} "
                           "(cut short)")
        return data

    def close(self) -> None:
        self._reader.close()


register_reader(ZSTD, ZstdReader)
