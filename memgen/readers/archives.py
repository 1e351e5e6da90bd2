"""The zip and WARC readers: an archive's image members -> Records and Rejects."""

from __future__ import annotations

import json
import logging
import posixpath
import zipfile
from collections import Counter
from collections.abc import Iterator
from typing import IO

from warcio.recordloader import ArchiveLoadFailed

from memgen.imagefolder import NamedRows, named_rows, not_read, row_in
from memgen.readers.config import DAMAGE, ReaderConfig, ShardItem, failure, over_max_bytes
from memgen.readers.fields import image_texts, with_partitions
from memgen.readers.keys import Keys
from memgen.records import Record, Reject, Shard, printable
from memgen.shards import counted, folder_entries, hidden, shard_kind
from memgen.transfer import read_message
from memgen.warcfile import warc_images
from memgen.ziparchive import NoBytes, files, member_bytes

# the package's name, as before readers.py became a package: logging set up for it still applies
_log = logging.getLogger("memgen.readers")


def read_zip(shard: Shard, f: IO[bytes], config: ReaderConfig, first_read: bool) -> Iterator[ShardItem]:
    """A zip's images, each with its caption and metadata members (a.txt, a.json beside
    a.jpg), as a folder's walk takes them (folder_entries: hidden members, such as macOS's
    __MACOSX/._a.jpg, and other files are left out, and counted in a warning). A record's
    ordinal is its member's place in the archive; a tar or Parquet packed in it is a reject.
    A failed transfer ends the shard with an `unreadable` reject, as a tar's stream does."""
    try:
        archive = zipfile.ZipFile(f)
        members = files(archive)
    except (zipfile.BadZipFile, *DAMAGE) as e:
        yield Reject(shard.index, 0, shard.source(), "read", failure(e),
                     read_message(e, shard, config.http_timeout))
        return
    ordinals = {name: n for n, name in enumerate(members)}
    visible = [name for name in members if not hidden(name)]
    entries, skipped, described = folder_entries(visible)
    tables: dict[str, NamedRows] = {}  # an ImageFolder metadata member's rows, read once

    def row_of(name: str) -> dict | None:
        found = described.get(name)
        if found is None:
            return None
        if found not in tables:
            tables[found] = _zipped_rows(archive, members[found], shard.source(f"#{found}"), config.max_bytes)
            if first_read and tables[found].said:
                _log.warning("%s", tables[found].said)
        return row_in(tables[found], found, name)

    skipped["hidden"] += len(members) - len(visible)
    if first_read and skipped.total():
        _log.warning("%s: skipped %d members that are neither shards nor images (%s)", shard.uri,
                     skipped.total(), counted(skipped))
    keys = Keys()
    for name, sidecars in entries.items():
        key = keys(printable(name))
        try:
            row = row_of(name)
            yield _zip_item(shard, archive, members, name, sidecars, ordinals[name], key, row, config)
        except DAMAGE as e:  # a failed transfer: the rest is not read
            yield Reject(shard.index, ordinals[name], shard.source(f"#{key}"), "read", failure(e),
                         read_message(e, shard, config.http_timeout))
            return


def _zipped_rows(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, max_bytes: int) -> NamedRows:
    """The rows of an ImageFolder metadata member (imagefolder.named_rows; `source`: the zip's
    with the member's name); none when it cannot be read, and `said` why, as for a loose one
    (its images are read without it)."""
    read = member_bytes(archive, info, max_bytes, 0)
    if isinstance(read, NoBytes):
        return not_read(source, f"{read.error_type}: {read.message}")
    if read[1] < 0:
        return not_read(source, f"{-read[1]} bytes > max_bytes {max_bytes}")
    return named_rows(source, read[0])  # not CSV, not Parquet: no rows, said in a warning


def _zip_item(shard: Shard, archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], name: str,
              sidecars: tuple[str, ...], ordinal: int, key: str, row: dict | None,
              config: ReaderConfig) -> ShardItem:
    """One image member of a zip, with its sidecar members and its ImageFolder row -> a
    Record, or a Reject."""
    info, locator = members[name], f"#{key}"
    source = shard.source(locator)
    kind = shard_kind(name)
    if kind != "file":
        return Reject(shard.index, ordinal, source, "read", "nested_shard",
                      f"a {kind} shard inside a zip is not read: unpack it and give it as an input",
                      info.file_size)
    read = member_bytes(archive, info, config.max_bytes, config.reject_data_cap)
    if isinstance(read, NoBytes):
        return Reject(shard.index, ordinal, source, "read", read.error_type, read.message, info.file_size)
    data, size = read
    if size < 0:
        return Reject(shard.index, ordinal, source, "read", "too_large",
                      f"{-size} bytes > max_bytes {config.max_bytes}", -size, data)
    texts: dict[str, bytes | None] = {}
    stem = posixpath.splitext(name)[0]
    for suffix in sidecars:  # as found: .txt or .TXT
        sidecar = member_bytes(archive, members[stem + suffix], config.max_bytes, 0)
        if not isinstance(sidecar, NoBytes) and sidecar[1] < 0:  # kept, its caption would be cut short
            return Reject(shard.index, ordinal, source, "read", "too_large",
                          f"its {suffix} member is {-sidecar[1]} bytes > max_bytes {config.max_bytes}",
                          size, data[: config.reject_data_cap])
        texts[suffix.lower()] = None if isinstance(sidecar, NoBytes) else sidecar[0]  # a caption lost
    caption, url, metadata = image_texts(texts.get(".txt"), texts.get(".json"), row, config)
    metadata = with_partitions(metadata, shard.partitions)
    return Record(shard.index, ordinal, source, data, caption, url, metadata, locator)


def read_warc(shard: Shard, f: IO[bytes], config: ReaderConfig, first_read: bool) -> Iterator[ShardItem]:
    """A WARC's image records (warcfile.warc_images), keyed by their URL; its other records
    (pages, requests, revisits) are counted in a warning. An image the crawl did not get
    whole (cut short, an HTTP error) is a reject with its url; damage ends the shard with a
    reject after the records before it, as in a tar."""
    keys, skipped = Keys(), Counter()
    ordinal = 0
    try:
        for image in warc_images(f, config.max_bytes, config.reject_data_cap, skipped):
            ordinal = image.ordinal + 1
            key = keys(printable(image.url) or f"{image.ordinal:09d}")
            locator = f"#{key}"
            source = shard.source(locator)
            metadata = json.dumps(image.metadata | dict(shard.partitions), ensure_ascii=False, sort_keys=True)
            if image.unusable:
                yield Reject(shard.index, image.ordinal, source, "read", *image.unusable,
                             image.size or len(image.data), image.data[: config.reject_data_cap])
            elif image.size is None:
                yield Reject(shard.index, image.ordinal, source, "read", "too_large",
                             over_max_bytes(None, config.max_bytes), config.max_bytes + 1,
                             image.data)
            else:
                yield Record(shard.index, image.ordinal, source, image.data, None, image.url or None,
                             metadata, locator)
    except (*DAMAGE, ArchiveLoadFailed) as e:
        yield Reject(shard.index, ordinal, shard.source(), "read", failure(e),
                     read_message(e, shard, config.http_timeout))
    if first_read and skipped.total():
        _log.warning("%s: skipped %d records that are not images (%s)", shard.uri, skipped.total(),
                     counted(skipped))
