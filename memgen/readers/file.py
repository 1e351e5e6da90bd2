"""The single-file reader: one image, with its NAME.txt and NAME.json and its folder's metadata row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, NamedTuple

from memgen.imagefolder import folder_row
from memgen.readers.config import DAMAGE, ReaderConfig, ShardItem, over_max_bytes
from memgen.readers.fields import image_texts, with_partitions
from memgen.readers.probe import known_size, special_file
from memgen.records import Record, Reject, Shard
from memgen.shards import open_input
from memgen.sniff import shard_format
from memgen.tarstream import read_up_to
from memgen.transfer import read_message


def read_file(shard: Shard, f: IO[bytes], config: ReaderConfig) -> Iterator[ShardItem]:
    """A single image file as one record, with the caption and metadata of its NAME.txt and
    NAME.json and of its ImageFolder metadata row; a file that holds a shard's data (Parquet,
    an Arrow IPC file, tar, zip, TFRecord) under another name is a reject that says to rename it."""
    try:
        data = read_up_to(f, config.max_bytes + 1)  # an HTTP stream gives what has arrived
        size = known_size(f) if len(data) > config.max_bytes else len(data)
    except DAMAGE as e:
        said = read_message(e, shard, config.http_timeout)
        yield Reject(shard.index, 0, shard.source(), "read", "unreadable", said)
        return
    kind = shard_format(data)
    if kind:  # a Hive table's 000000_0: else "Pillow cannot identify" (or too_large)
        yield Reject(shard.index, 0, shard.source(), "read", "not_an_image",
                     f"{kind} data in a file whose name does not end in {_SHARD_NAMES[kind]}, "
                     "which is read as one image: rename it to read its records", size or len(data),
                     data[: config.reject_data_cap])
        return
    if len(data) > config.max_bytes:
        yield Reject(shard.index, 0, shard.source(), "read", "too_large",
                     over_max_bytes(size, config.max_bytes), size or len(data),
                     data[: config.reject_data_cap])
        return
    sidecars = {}
    for suffix in (".txt", ".json"):
        sidecar = _read_sidecar(shard, suffix, config.max_bytes)
        if isinstance(sidecar, _Unusable):  # kept, its caption or metadata would be lost or cut short
            yield Reject(shard.index, 0, shard.source(), sidecar.stage, sidecar.reason, sidecar.message,
                         len(data), data[: config.reject_data_cap])
            return
        sidecars[suffix] = sidecar
    row = folder_row(shard.folder_metadata, shard.location) if shard.folder_metadata else None
    caption, url, metadata = image_texts(sidecars[".txt"], sidecars[".json"], row, config)
    metadata = with_partitions(metadata, shard.partitions)
    yield Record(shard.index, 0, shard.source(), data, caption, url, metadata)


_SHARD_NAMES = {"Parquet": ".parquet", "Arrow": ".arrow", "tar": ".tar", "zip": ".zip",
                "TFRecord": ".tfrecord"}


class _Unusable(NamedTuple):
    """Why a sidecar makes its image's record a reject."""
    stage: str
    reason: str
    message: str


def _read_sidecar(shard: Shard, suffix: str, max_bytes: int) -> bytes | None | _Unusable:
    """The bytes of the file's sidecar, read as a webdataset sample's member; None when it has
    none, or it is gone or unreadable now (the image is read without it); _Unusable when it is
    a pipe or device (opening it waits for a writer: the run never ended) or larger than
    max_bytes, as a tar's member is."""
    written = next((s for s in shard.sidecars if s.lower() == suffix), None)  # .txt, or .TXT
    if written is None:
        return None
    location = shard.sidecar(written)
    special = special_file(location)
    if special:
        return _Unusable("open", "not_a_file", f"its {suffix} file is {special}, not a regular file")
    try:
        with open_input(location) as f:
            data = read_up_to(f, max_bytes + 1)
            size = known_size(f) if len(data) > max_bytes else len(data)
    except Exception:  # noqa: BLE001 - a caption lost is not an image lost
        return None
    if len(data) > max_bytes:
        return _Unusable("read", "too_large",
                         f"its {suffix} file is {over_max_bytes(size, max_bytes)}")
    return data
