"""The typed elements that flow between memorize stages.

Records carry bytes and live only inside one shard's worker; everything that is
shuffled (fingerprints, references, duplicate and reject rows) is small.
"""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple


def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes that are not (a local file name or a tar member name
    decoded with surrogateescape, as Python decodes them) become \\xNN escapes. Beam's coders
    and Parquet strings take nothing else."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no byte stands for
        return text.encode("utf-8", "backslashreplace").decode()


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")  # what printable() makes of a byte >= 0x80


def unprintable(text: str) -> str:
    """The name printable() made `text` of (its \\xNN escapes back to the bytes they stand
    for, as surrogateescape); Shard.of() of it opens the file."""
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


class Shard(NamedTuple):
    """One unit of parallel work: a tar, a Parquet file or a single image file."""

    index: int  # position in the sorted list of discovered shards (stable id)
    uri: str  # printable(): what tables and logs show
    kind: str  # tar | parquet | zip | warc | file
    raw: bytes | None = None  # the uri's bytes when they are not UTF-8 (a local file name)
    sidecars: tuple[str, ...] = ()  # a file's caption and metadata files beside it: ".txt", ".json"
    # (".TXT", ".JSON" where so written)
    # its Hive partitions, (key, value) of the key=value folders it lies in (shards.hive_partitions):
    # found once, where it is listed, so every worker reads the same metadata
    partitions: tuple[tuple[str, str | None], ...] = ()
    folder_metadata: str | None = None  # an image file's ImageFolder metadata.jsonl/.csv/.parquet

    @classmethod
    def of(cls, index: int, uri: str, kind: str, sidecars: tuple[str, ...] = (),
           partitions: tuple[tuple[str, str | None], ...] = (), folder_metadata: str | None = None) -> Shard:
        shown = printable(uri)
        raw = None if shown == uri else uri.encode("utf-8", "surrogateescape")
        return cls(index, shown, kind, raw, sidecars, partitions, folder_metadata)

    def sidecar(self, suffix: str) -> str:
        """Where a file's sidecar is: its name with `suffix` for the image's own (a.jpg: a.txt)."""
        return posixpath.splitext(self.location)[0] + suffix

    @property
    def location(self) -> str:
        """What opens the shard: its uri, or the name its raw bytes decode to."""
        return self.uri if self.raw is None else self.raw.decode("utf-8", "surrogateescape")

    def source(self, locator: str = "") -> str:
        """A record's source: this shard's uri + where in it the record is (Record.locator)."""
        return self.uri + locator


class Record(NamedTuple):
    """One image record read from a shard, with its original bytes."""

    shard: int
    # position of the record in the shard's stream (stable on re-read): a Parquet record's row,
    # or row * PER_ROW + n for the n-th image of a row's list (readers.PER_ROW)
    ordinal: int
    source: str  # Shard.source(locator)
    data: bytes
    caption: str | None = None
    url: str | None = None
    metadata: str | None = None  # JSON text
    locator: str = ""  # where in the shard: "#" + its key; "" for a single-file shard


class Reject(NamedTuple):
    """A record, or a whole shard, that could not be used and why."""

    shard: int
    ordinal: int  # its record's; of a reject of the shard or of a part of it: 0, or where reading stopped
    source: str
    stage: str  # open | read | fingerprint | materialize
    error_type: str
    message: str
    n_bytes: int = 0
    data: bytes | None = None  # attached when the tables are written, never shuffled

    def row(self, data_cap: int) -> dict:
        return {
            "source": self.source,
            "stage": self.stage,
            "error_type": self.error_type,
            "message": self.message,
            "n_bytes": self.n_bytes,
            "data": None if self.data is None else self.data[:data_cap],
        }


class Fingerprint(NamedTuple):
    """What dedup needs of a record: ids and hashes, no image bytes."""

    shard: int  # negative: an image of a --known memory (memgen.known), never written
    ordinal: int
    locator: str  # the record's source is its shard's uri + this: shuffled without the uri
    image_id: bytes  # sha256 of the bytes, 32 bytes (the tables hold its hex: half the size to shuffle)
    phash: int  # signed int64
    dhash: int  # signed int64
    width: int
    height: int
    format: str
    n_bytes: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def known(self) -> bool:
        """An image of a --known memory: kept there already, so a representative first."""
        return self.shard < 0

    def preference(self) -> tuple:
        """Sort key of the representative choice: an image of a --known memory, then most
        pixels, most bytes, smallest id."""
        return (not self.known, -self.pixels, -self.n_bytes, self.image_id, self.shard, self.ordinal)
