"""File versions and digests: what a run's inputs were listed as."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

from memgen.records import Shard
from memgen.shards.store import open_input, url_fs


def listing_digest(shards: Sequence[Shard]) -> str:
    """sha256 of the shards' URIs, their sidecars (captions, metadata) and the version of each
    of those files, in order: what a run's inputs were listed as (a glob or a folder lists
    anew each time; a retry over the same listing has nothing new to read, and a file
    rewritten under its name lists otherwise). A shard's Hive partitions, its records'
    metadata, are added where it has any (the same file listed from another folder has
    others), and its ImageFolder metadata file with its version, so listings without either
    digest as they did before."""
    listed = "\n".join(
        "\t".join([shard.uri, ",".join(shard.sidecars), file_version(shard.location),
                   *(file_version(shard.sidecar(suffix)) for suffix in shard.sidecars),
                   *([json.dumps(shard.partitions)] if shard.partitions else []),
                   *([shard.folder_metadata, file_version(shard.folder_metadata)]
                     if shard.folder_metadata else [])])
        for shard in shards)
    return hashlib.sha256(listed.encode("utf-8", "surrogateescape")).hexdigest()


# what an object store's info says that changes when an object is rewritten: its ETag (S3,
# Azure), etag and generation (GCS), as its listing says
_VERSION_KEYS = ("size", "ETag", "etag", "generation")


def file_version(url: str) -> str:
    """What tells this version of a file from another without reading it; "" for an http(s)
    URL (a request each; a read checks its ETag as it goes) and for a file that is not there
    (its reader rejects it). An object store answers from the listing a glob or folder made."""
    if url.startswith(("http://", "https://")):
        return ""
    try:
        if "://" not in url or url.startswith("file://"):  # a stat alone: a folder of 1M images
            found = os.stat(url.removeprefix("file://"))
            return f"size={found.st_size},mtime={found.st_mtime_ns}"
        fs, path = url_fs(url)
        info = fs.info(path)
    except (OSError, ValueError):  # gone, or a name too long: its reader says so
        return ""
    return ",".join(f"{key}={info[key]}" for key in _VERSION_KEYS if info.get(key) is not None)


def file_digest(url: str) -> str:
    """sha256 of one input file's bytes (a calibration list, a model), read in blocks."""
    digest = hashlib.sha256()
    with open_input(url) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
