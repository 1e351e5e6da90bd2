"""What every shard reader shares: its configuration, what it yields, and what damage is."""

from __future__ import annotations

import lzma
import zlib
from dataclasses import dataclass

from memgen.records import Record, Reject
from memgen.shards import HTTP_TIMEOUT
from memgen.tarstream import TarDamage
from memgen.transfer import transfer_failed

DAMAGE = (TarDamage, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class ReaderConfig:
    max_bytes: int = 64 << 20  # larger records are rejected without being read whole
    reject_data_cap: int = 1 << 20  # bytes of a rejected record kept for inspection
    image_column: str | None = None  # Parquet: None = first of DEFAULT_IMAGE_COLUMNS
    caption_column: str = "caption"
    url_column: str = "url"
    key_column: str = "key"
    http_timeout: float = HTTP_TIMEOUT  # seconds an http(s) server may send nothing


PER_ROW = 1 << 16  # images read from one row's list column (its records' ordinals: row * PER_ROW + n)
DEFAULT_IMAGE_COLUMNS = ("jpg", "image", "img", "png", "webp", "image_bytes", "bytes")
ShardItem = Record | Reject


def over_max_bytes(size: int | None, max_bytes: int) -> str:
    """What a reject too large to read says of its size: known, or only that it is larger
    (`size` None or 0, as known_size gives a stream's it cannot tell: no too-large file is empty)."""
    return f"{size} bytes > max_bytes {max_bytes}" if size else f"more than max_bytes {max_bytes} bytes"


def failure(e: BaseException) -> str:
    """A shard's read that failed: unreadable when storage failed to deliver (worth a retry),
    else corrupt_shard."""
    return "unreadable" if transfer_failed(e) else "corrupt_shard"
