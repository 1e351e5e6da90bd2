"""What a file's first bytes say it holds, when its name does not say: a shard (Parquet, Arrow
IPC file, tar, zip, TFRecord) by its magic numbers, a TFRecord by its first length's checksum."""

from __future__ import annotations

from memgen.arrowfile import MAGIC
from memgen.tfrecordfile import begins_a_tfrecord

HEAD = 512  # bytes that tell: a tar's "ustar" is at 257
KINDS = {"Parquet": "parquet", "Arrow": "arrow", "tar": "tar", "zip": "zip",  # format -> Shard.kind
         "TFRecord": "tfrecord"}


def shard_format(data: bytes) -> str | None:
    """"Parquet", "Arrow", "tar", "zip" or "TFRecord" when `data` (a file's first HEAD bytes, or more)
    begins a shard of that format, else None."""
    if data[:4] == b"PAR1":  # the footer holds the other "PAR1": a file cut at max_bytes lacks it
        return "Parquet"
    if data[:6] == MAGIC:  # an Arrow IPC file (Feather v2); a bare stream has no magic number
        return "Arrow"
    if data[257:262] == b"ustar":
        return "tar"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first member, or an empty zip
        return "zip"
    if begins_a_tfrecord(data):  # a chance of 1 in 2**32 for other bytes
        return "TFRecord"
    return None
