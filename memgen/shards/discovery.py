"""Shard discovery: input URLs -> sorted, de-duplicated Shards; outputs inside inputs."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import glob_translate

from memgen.outputs import missing_bucket
from memgen.records import Shard
from memgen.shards.braces import NoInputError, expand
from memgen.shards.entries import counted, folder_entries, img2dataset_metadata
from memgen.shards.hive import hive_partitions
from memgen.shards.names import SIDECARS, discovered_kinds
from memgen.shards.probe import unanswered
from memgen.shards.store import HTTP_TIMEOUT, path_exists, url_fs
from memgen.shards.walk import GLOB_CHARS, expand_one

SILENT_ASKS = 3  # URLs of one host asked whether they exist before its silence is taken as final
_log = logging.getLogger("memgen.shards")  # the name tests and logging setups select


def input_folder_holding(location: str, inputs: list[str]) -> str | None:
    """The input (a folder, or a glob matching a folder) that `location`, an output, lies
    inside, if any: a later run over it would read the output as input. Only inputs that
    name `location`'s parents are asked whether they are folders (a brace range may stand
    for thousands of shards)."""
    fs, path = url_fs(location)
    where = fs.unstrip_protocol(_real(fs, path)).rstrip("/")
    for raw in inputs:
        with _listing(raw):
            for url in expand(raw):
                in_fs, in_path = url_fs(url)
                folder = in_fs.unstrip_protocol(_real(in_fs, in_path)).rstrip("/")
                if where.startswith(folder + "/") and path_exists(in_fs, in_path) and in_fs.isdir(in_path):
                    return url
                if (GLOB_CHARS & set(in_path) and type(in_fs) is type(fs) and _glob_reaches(in_path, path)
                        and not path_exists(in_fs, in_path)):  # `pics [2020]` that exists is read as named
                    return url
    return None


@contextlib.contextmanager
def _listing(raw: str) -> Iterator[None]:
    """Names the input in what its storage raised (a refused ftp server, no credentials)."""
    try:
        yield
    except Exception as e:
        e.add_note(f"listing {raw}")
        raise


def _real(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A local path with its symbolic links resolved (a link to the input folder is that
    folder); other paths as they are."""
    return os.path.realpath(path) if isinstance(fs, LocalFileSystem) else path


def _glob_reaches(pattern: str, path: str) -> bool:
    """Whether a glob matches `path` or a folder above it, whose walk would reach it."""
    matches = re.compile(glob_translate(pattern.rstrip("/"))).match
    parts = path.rstrip("/").split("/")
    return any(matches("/".join(parts[:i])) for i in range(1, len(parts) + 1))


def discover(inputs: list[str], http_timeout: float = HTTP_TIMEOUT) -> list[Shard]:
    """Sorted, de-duplicated shards for the given input URLs.

    Explicit URLs that do not exist still become shards (their reader rejects them
    with a reason), unless nothing at all exists: then NoInputError. http(s) URLs are
    asked for only when nothing else exists, until one answers.
    """
    urls: dict[str, tuple[str, ...]] = {}  # with their sidecars
    roots: dict[str, str | None] = {}  # the folder each was listed from (hive_partitions)
    described: dict[str, str] = {}  # image -> its ImageFolder metadata file
    any_exists = False
    unchecked: list[str] = []
    named: list[str] = []  # files named as they are (a shell's expanded glob)
    for raw in inputs:
        with _listing(raw):
            for url in expand(raw):
                expanded, exists, skipped, root, metadata = expand_one(url)
                described.update(metadata)
                if skipped:
                    _log.warning("%s: skipped %d files that are neither shards nor images (%s)%s",
                                 url, skipped.total(), counted(skipped), _hashed_hint(url, skipped))
                for uri, sidecars in expanded.items():  # named and walked too: whatever the order
                    known = {s.lower(): s for s in (*urls.get(uri, ()), *sidecars)}
                    urls[uri] = tuple(known[s] for s in SIDECARS if s in known)
                    roots[uri] = _higher_root(roots[uri], root) if uri in roots else root
                any_exists = any_exists or bool(exists)
                if exists and root is None:
                    named.extend(expanded)
                if exists is None:
                    unchecked.extend(expanded)
    refused = None  # why the first URL asked did not answer, unless it is not there (404)
    # hosts' URLs that got no status (refused, unreachable, timed out): a host is asked no more
    # after SILENT_ASKS (each URL of a brace range waited --http_timeout, a day for 1,000 shards)
    silent: Counter = Counter()
    for url in [] if any_exists else unchecked:
        host = urlsplit(url).netloc
        if silent[host] >= SILENT_ASKS:
            continue
        why = unanswered(url, http_timeout)
        any_exists = why is None
        if any_exists:
            break
        refused = refused or (None if why.startswith("404") else f" (asked {url}: {why})")
        silent[host] += not why[:3].isdigit()
    if not any_exists or not urls:
        raise NoInputError(f"no input matched: {' '.join(inputs)}{refused or _missing_buckets(inputs)}")
    _take_named_sidecars(named, urls, described)
    chosen = _one_name_each(urls)
    kinds = discovered_kinds(sorted(chosen))
    return [Shard.of(i, uri, kinds[uri], chosen[uri],
                     tuple(hive_partitions(uri, roots[uri]).items()), described.get(uri))
            for i, uri in enumerate(sorted(chosen))]


def _take_named_sidecars(named: list[str], urls: dict[str, tuple[str, ...]],
                         described: dict[str, str]) -> None:
    """Files named one by one (`memgen memorize photos/*`, the shell's glob) as their folder
    gives them: an image's NAME.txt and NAME.json, and an ImageFolder metadata file of images
    named, are theirs, not images of their own (each was a not_an_image reject, and its image
    lost its caption); img2dataset's metadata beside its shards is skipped. A file named that is
    none of these stays read as it is."""
    if not named:
        return
    # the images walked or matched too: a caption named beside its folder is that image's
    files = set(named)
    listing = sorted(files | set(urls))
    entries = folder_entries(listing)
    taken: set[str] = set()
    for image, sidecars in entries.listed.items():
        # only files named: one a glob matched alone (`captions/*`) stays read as it is
        found = [s for s in sidecars if posixpath.splitext(image)[0] + s in files]
        known = {s.lower(): s for s in (*urls[image], *found)}
        urls[image] = tuple(known[s] for s in SIDECARS if s in known)
        taken |= {posixpath.splitext(image)[0] + s for s in found}
    for image, metadata in entries.described.items():
        if metadata in files:
            described.setdefault(image, metadata)
            taken.add(metadata)
    # img2dataset's NNNNN.parquet and NNNNN_stats.json beside its shards, as a folder skips them
    metadata = img2dataset_metadata(listing) & files - taken
    if metadata:
        first = ", ".join(posixpath.basename(m) for m in sorted(metadata)[:2])
        _log.warning("files named: skipped %d of img2dataset's metadata beside its shards (%s%s)",
                     len(metadata), first, ", ..." if len(metadata) > 2 else "")
    for uri in taken | metadata:
        del urls[uri]


def _hashed_hint(url: str, skipped: Counter) -> str:
    """How to read the files without a suffix a folder's walk skipped: images named by hash, as
    some crawlers save them, were "no input matched" and nothing said how to read them."""
    if not skipped["no suffix"] or GLOB_CHARS & set(url):
        return ""
    return f"; a glob that matches only files without a suffix reads them as images: '{url.rstrip('/')}/*'"


def _missing_buckets(inputs: list[str]) -> str:
    """" (the bucket b does not exist)" for inputs in a bucket that does not exist, else "": a
    typo in a bucket's name matched nothing, as a wrong file name does, and said no more."""
    missing = []
    for raw in inputs:
        bucket = raw.split("://", 1)[-1].split("/", 1)[0]
        if "://" not in raw or re.search(r"[*?\[{]", bucket):  # a pattern: no one bucket to ask of
            continue
        with contextlib.suppress(Exception):  # unknown, as when its store is refused: said no more
            fs, path = url_fs(raw)
            if (gone := missing_bucket(fs, path)) and gone not in missing:
                missing.append(gone)
    if len(missing) > 1:
        return f" (the buckets {', '.join(missing)} do not exist)"
    return f" (the bucket {missing[0]} does not exist)" if missing else ""


def _higher_root(a: str | None, b: str | None) -> str | None:
    """Of two inputs that list one file, the root that leaves it more Hive partitions: a file
    named (None: its whole path), else the folder higher up; whatever the inputs' order."""
    if a is None or b is None:
        return None
    return min(a, b, key=lambda root: (len(root), root))


def _one_name_each(urls: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The URLs, a local file reached by several names through linked folders (`current ->
    day1` beside day1, a `**` glob, a folder and its link given both) under one: the name
    without a linked folder when there is one, else the first in order (each name read was
    every image again, as its own exact duplicate)."""
    real_folder = functools.lru_cache(maxsize=None)(os.path.realpath)  # a call per folder, not per file

    def unlinked(uri: str) -> bool:
        folder = posixpath.dirname(uri)
        return real_folder(folder) == folder

    chosen: dict[str, str] = {}
    for uri in sorted(urls):
        if "://" in uri:
            chosen[uri] = uri
            continue
        folder, name = posixpath.split(uri)
        key = posixpath.join(real_folder(folder), name)
        if key not in chosen or (unlinked(uri) and not unlinked(chosen[key])):
            chosen[key] = uri
    return {uri: urls[uri] for uri in chosen.values()}
