"""A listing's files sorted: shards, images with their sidecars, ImageFolder metadata, the rest."""

from __future__ import annotations

import functools
import posixpath
from collections import Counter
from typing import NamedTuple

import fsspec

from memgen.shards.names import (
    FOLDER_METADATA,
    IMAGE_SUFFIXES,
    PARQUET_SUFFIXES,
    SIDECARS,
    TAR_SUFFIXES,
    TFRECORD_SUFFIXES,
    is_shard_name,
    shard_suffix,
)


def _is_listed_file(path: str) -> bool:
    """Files that a directory walk picks up: shards and images, not sidecars."""
    return is_shard_name(path.lower()) or path.lower().endswith(IMAGE_SUFFIXES)


def _stem(path: str) -> str:
    return path[: len(path) - len(shard_suffix(path.lower()))]


STATS = "_stats.json"  # img2dataset's NNNNN_stats.json beside its shard NNNNN


class FolderEntries(NamedTuple):
    listed: dict[str, tuple[str, ...]]  # shards and images, each with its sidecars
    skipped: Counter  # the other files, by suffix
    described: dict[str, str]  # image -> the ImageFolder metadata file that describes it


def folder_entries(paths: list[str], beside: frozenset[str] = frozenset(),
                   glob: bool = False) -> FolderEntries:
    """The shards and images among the files of a folder walk or a glob, each with its
    sidecars (SIDECARS beside an image: a.txt, a.json for a.jpg, as img2dataset's "files"
    output and training folders have them), and the other files by suffix. img2dataset
    writes NNNNN.parquet beside NNNNN.tar or the folder NNNNN/: their metadata, without
    images; it and NNNNN_stats.json are not shards. `beside`: more such tars and folders
    (without their suffix), that a glob did not match. A `glob` that matches no shard or
    image means the other files it matches (`blobs/*` of files named by hash). An image below
    an ImageFolder metadata file (FOLDER_METADATA) is described by the nearest one; such a
    file is not a shard."""
    images = [p for p in paths if p.lower().endswith(IMAGE_SUFFIXES)]
    described = _described(paths, images)
    metadata_files = set(described.values())
    paths = [p for p in paths if p not in metadata_files]
    present = set(paths)
    shard_metadata = {p for p in img2dataset_metadata(paths, beside) if p.lower().endswith(PARQUET_SUFFIXES)}
    listed: dict[str, tuple[str, ...]] = {}
    for path in paths:
        if path in shard_metadata:
            continue
        if path.lower().endswith(IMAGE_SUFFIXES):
            stem = posixpath.splitext(path)[0]
            # as written: a.txt, else A.TXT (as cameras and old Windows tools name files)
            listed[path] = tuple(found for s in SIDECARS
                                 if (found := next((x for x in (s, s.upper()) if stem + x in present), None)))
        elif _is_listed_file(path):
            listed[path] = ()
    if glob and not listed:
        listed = {path: () for path in paths if path not in shard_metadata}
    used = {posixpath.splitext(p)[0] + s for p, sidecars in listed.items() for s in sidecars}
    skipped: Counter = Counter()
    for path in paths:
        if path in shard_metadata:
            skipped["parquet beside its tar, TFRecord or folder"] += 1
        elif path not in listed and path not in used:
            skipped[posixpath.splitext(posixpath.basename(path))[1].lower() or "no suffix"] += 1
    return FolderEntries(listed, skipped, {image: described[image] for image in listed if image in described})


def img2dataset_metadata(paths: list[str], beside: frozenset[str] = frozenset()) -> frozenset[str]:
    """Of `paths`, img2dataset's files about its shards, no images: NNNNN.parquet and
    NNNNN_stats.json beside NNNNN.tar (webdataset output), NNNNN.tfrecord or the folder NNNNN/
    (files output) among `paths` or in `beside` (more such, without their suffix)."""
    shards = ({_stem(p) for p in paths if p.lower().endswith(TAR_SUFFIXES + TFRECORD_SUFFIXES)}
              | {posixpath.dirname(p) for p in paths} | beside)

    def number(path: str) -> str | None:  # img2dataset names shards by number only
        lower = path.lower()
        stem = path[: -len(STATS)] if lower.endswith(STATS) else (
            _stem(path) if lower.endswith(PARQUET_SUFFIXES) else None)
        return stem if stem is not None and posixpath.basename(stem).isdigit() else None

    return frozenset(p for p in paths if (stem := number(p)) is not None and stem in shards)


def _described(paths: list[str], images: list[str]) -> dict[str, str]:
    """{image: the ImageFolder metadata file nearest up its folders}, of the listed `paths`;
    one of several in a folder by FOLDER_METADATA's order."""
    files: dict[str, str] = {}
    for path in paths:
        name = posixpath.basename(path)
        if name in FOLDER_METADATA:
            folder = posixpath.dirname(path)
            if folder not in files or FOLDER_METADATA.index(name) < FOLDER_METADATA.index(
                    posixpath.basename(files[folder])):
                files[folder] = path
    if not files:
        return {}

    @functools.cache
    def nearest(folder: str) -> str | None:
        above = posixpath.dirname(folder)
        return files.get(folder) or (None if above == folder else nearest(above))

    return {image: found for image in images if (found := nearest(posixpath.dirname(image)))}


def img2dataset_shards(fs: fsspec.AbstractFileSystem, files: list[str]) -> frozenset[str]:
    """Of the numbered Parquet files a glob matched, those beside a tar, TFRecord or folder of
    their number that the glob did not match (`out/0000?.*` matches 00002.parquet, not 00002/):
    one listing of each of their folders."""
    numbered = [_stem(f) for f in files
                if f.lower().endswith(PARQUET_SUFFIXES) and posixpath.basename(_stem(f)).isdigit()]
    found: set[str] = set()
    for folder in sorted({posixpath.dirname(stem) for stem in numbered}):
        try:
            entries = {e.rstrip("/") for e in fs.ls(folder, detail=False)}
        except OSError:
            continue
        found |= {stem for stem in numbered if posixpath.dirname(stem) == folder
                  and (stem in entries or stem + ".tar" in entries or stem + ".tfrecord" in entries)}
    return frozenset(found)


def counted(kinds: Counter) -> str:
    """"kind n, ..." of the files or members a listing or reader left out, by kind."""
    return ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()) if n)
