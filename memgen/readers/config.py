"""What every shard reader shares: its configuration, what it yields, and what damage is."""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import zstandard

from memgen.records import Record, Reject, Shard
from memgen.shards import HTTP_TIMEOUT
from memgen.tarstream import TarDamage
from memgen.transfer import transfer_failed
from memgen.zstdstream import WindowTooLarge

DAMAGE = (TarDamage, EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError, ValueError)


@dataclass(frozen=True)
class ReaderConfig:
    max_bytes: int = 64 << 20  # larger records are rejected without being read whole
    reject_data_cap: int = 1 << 20  # bytes of a rejected record kept for inspection
    image_column: str | None = None  # Parquet: None = first of DEFAULT_IMAGE_COLUMNS
    caption_column: str = "caption"
    url_column: str = "url"
    key_column: str = "key"
    http_timeout: float = HTTP_TIMEOUT  # seconds an http(s) server may send nothing


PER_ROW = 1 << 16  # ordinals of one row's images (row * PER_ROW + n): row_images, too_many_images
DEFAULT_IMAGE_COLUMNS = ("jpg", "image", "img", "png", "webp", "image_bytes", "bytes")
ShardItem = Record | Reject
_Image = TypeVar("_Image")


def row_images(images: Sequence[_Image]) -> Sequence[_Image]:
    """The images of a row (a list column's, an Example's feature) that are read: all, up to
    PER_ROW; of more, PER_ROW - 1, the row's last ordinal left to its too_many_images reject
    (given the last image's, two items had one ordinal: materialize finds rejects by it)."""
    return images if len(images) <= PER_ROW else images[: PER_ROW - 1]


def too_many_images(shard: Shard, first: int, key: str, count: int, where: str) -> Iterator[Reject]:
    """The reject of a row of `count` images past PER_ROW (`first`: its first image's ordinal,
    `where`: the column or feature holding them), in the place row_images left it."""
    if count > PER_ROW:
        last = PER_ROW - 1
        yield Reject(shard.index, first + last, shard.source(f"#{key}/{last}"), "read", "too_many_images",
                     f"{count} images in {where}: the first {last} are read", 0)


def over_max_bytes(size: int | None, max_bytes: int) -> str:
    """What a reject too large to read says of its size: known, or only that it is larger
    (`size` None or 0, as known_size gives a stream's it cannot tell: no too-large file is empty)."""
    return f"{size} bytes > max_bytes {max_bytes}" if size else f"more than max_bytes {max_bytes} bytes"


def failure(e: BaseException) -> str:
    """A shard's read that failed: unreadable when storage failed to deliver (worth a retry),
    unsupported_compression for a zstd window too large to read (or the error wrapping it),
    else corrupt_shard."""
    if transfer_failed(e):
        return "unreadable"
    refused = any(isinstance(raised, WindowTooLarge) for raised in (e, e.__cause__))
    return "unsupported_compression" if refused else "corrupt_shard"
