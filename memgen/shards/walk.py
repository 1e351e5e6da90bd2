"""Folder walks and globs: the files one input URL stands for; hidden files, links, loops."""

from __future__ import annotations

import logging
import os
import posixpath
from collections import Counter
from typing import NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem

from memgen.outputs import MARKER
from memgen.shards.braces import NoInputError
from memgen.shards.entries import folder_entries, img2dataset_shards
from memgen.shards.store import path_exists, url_fs

IMAGES = "images"  # the folder of a memgen run's output (sample, memory) that holds its images
GLOB_CHARS = set("*?[")
_log = logging.getLogger("memgen.shards")  # the name tests and logging setups select


class _Expanded(NamedTuple):
    """What one input stands for."""
    urls: dict[str, tuple[str, ...]]  # with the sidecars of images in its folders or glob
    exists: bool | None  # whether it exists or matched (None: not checked, an http(s) URL; a
    # brace range of them would cost a request each)
    skipped: Counter  # the files of its folders or glob that are not shards, images or sidecars
    root: str | None  # the folder, the glob's fixed folder; None for a file named: hive_partitions
    described: dict[str, str]  # image URL -> its ImageFolder metadata file's


def expand_one(url: str) -> _Expanded:
    """What one input URL stands for (_Expanded)."""
    fs, path = url_fs(url)
    protocol = url.split("://", 1)[0] if "://" in url else None
    if isinstance(fs, LocalFileSystem):  # a/../a/x.tar and file:///…/a/x.tar are a/x.tar: read once
        path, protocol = posixpath.normpath(path), None

    def unstrip(p: str) -> str:
        return fs.unstrip_protocol(p) if protocol else p

    if GLOB_CHARS & set(path) and protocol not in ("http", "https") and not path_exists(fs, path):
        matches = [m for m in sorted(fs.glob(path)) if not _hidden_match(path, m)]
        if not matches:
            _unlisted_glob(fs, path)
        files: list[str] = []
        loops: list[str] = []
        folder = _glob_folder(path)
        for m in matches:
            if not fs.isdir(m):
                files.append(m)
            elif isinstance(fs, LocalFileSystem) and _link_above(m, folder):
                loops.append(m)
            else:
                files.extend(_walk(fs, m, loops))
        _say_loops(url, loops)
        entries = folder_entries(files, img2dataset_shards(fs, files), glob=True)
        return _Expanded({unstrip(f): sidecars for f, sidecars in entries.listed.items()}, bool(matches),
                         entries.skipped, unstrip(folder).rstrip("/"),
                         {unstrip(f): unstrip(m) for f, m in entries.described.items()})
    if protocol in ("http", "https"):  # a missing URL becomes a reject row when it is opened
        return _Expanded({url: ()}, None, Counter(), None, {})
    try:
        if fs.isdir(path):
            loops: list[str] = []
            entries = folder_entries(_walk(fs, path, loops))
            _say_loops(url, loops)
            return _Expanded({unstrip(f): sidecars for f, sidecars in entries.listed.items()}, True,
                             entries.skipped, unstrip(path),
                             {unstrip(f): unstrip(m) for f, m in entries.described.items()})
    except OSError:
        pass
    # a file named: as it is
    return _Expanded({unstrip(path): ()}, path_exists(fs, path), Counter(), None, {})


def _walk(fs: fsspec.AbstractFileSystem, root: str, loops: list[str]) -> list[str]:
    """Files below `root`, skipping hidden files and folders (.git, .cache, .DS_Store, ...),
    the empty `folder/` objects an S3 console's "Create folder" makes, and in a memgen run's
    output (a sample, a memory) all but its images/ (a sample's contact sheet is no image of
    it, a memory's duplicates/ and rejects/ hold none)."""
    below = len(root.rstrip("/")) + 1  # find() gives paths that start with root
    files = _local_files(root, loops) if isinstance(fs, LocalFileSystem) else [
        p for p in fs.find(root) if not p.endswith("/")]
    runs = sorted({posixpath.dirname(p) + "/" for p in files if posixpath.basename(p) == MARKER})
    for run in runs:
        said = run.rstrip("/") if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(run.rstrip("/"))
        _log.warning("%s is the output of a memgen run: only its %s/ is read", said, IMAGES)  # s3://b/m
    return sorted(p for p in files if not hidden(p[below:])
                  and not any(p.startswith(run) and not p.startswith(run + IMAGES + "/") for run in runs))


def _local_files(root: str, loops: list[str]) -> list[str]:
    """The files below a local folder, following links to files and folders (a day's folder
    linked into a crawl was skipped without a word, while a glob followed it), but not hidden
    folders (their files are left out anyway); a link to a folder above it on its own path or
    holding `root` (`loop -> ..`, `self -> .`) would go round and round: it is added to
    `loops`. A folder reached by two paths lists its files under both (discover keeps one).
    NoInputError for a folder below it that cannot be listed (fsspec's find skipped those
    silently, and their records were lost)."""
    def unlisted(e: OSError) -> None:
        raise NoInputError(f"{e.filename or root} cannot be listed: {e.strerror or e}")

    top = os.path.realpath(root)
    above = {root: (top,)}  # each folder to walk: the real paths of it and the folders above it
    files = []
    for folder, folders, names in os.walk(root, onerror=unlisted, followlinks=True):
        files += [posixpath.join(folder, name) for name in names]
        chain = above.pop(folder, (top,))
        kept = []
        for name in sorted(folders):
            if name.startswith("."):
                continue
            path = posixpath.join(folder, name)
            real = os.path.realpath(path)
            if real in chain or _holds(real, top):
                loops.append(path)
            else:
                kept.append(name)
                above[path] = (*chain, real)
        folders[:] = kept
    return files


def _link_above(path: str, base: str) -> bool:
    """Whether a glob's match is a link to its folder or to one holding it: walked, it would
    read the glob's folder again, round and round."""
    return os.path.islink(path) and _holds(os.path.realpath(path), os.path.realpath(base))


def _holds(folder: str, path: str) -> bool:
    """Whether `path` is `folder` or lies below it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _say_loops(given: str, loops: list[str]) -> None:
    if loops:
        shown = ", ".join(sorted(loops)[:3]) + (" ..." if len(loops) > 3 else "")
        _log.warning("%s: skipped %d links to folders above them, which would be read round and round: %s",
                     given, len(loops), shown)


def _glob_folder(pattern: str) -> str:
    """The folder a glob lists: its part before the first glob character."""
    return posixpath.dirname(pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]) or "."


def _unlisted_glob(fs: fsspec.AbstractFileSystem, pattern: str) -> None:
    """NoInputError when the local folder a glob lists cannot be listed (the glob matched
    nothing, and "no input matched" hid why)."""
    folder = _glob_folder(pattern)
    if isinstance(fs, LocalFileSystem) and os.path.isdir(folder):
        try:
            os.listdir(folder)
        except OSError as e:
            raise NoInputError(f"{folder} cannot be listed: {e.strerror or e}") from None


def hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def _hidden_match(pattern: str, match: str) -> bool:
    """Whether a glob's match is hidden below the pattern's fixed folders (`photos/*` matching
    photos/.thumbs, ._x.jpg), as a shell's glob and a folder's walk leave them out; unless the
    pattern itself names dot-files (`photos/.*`, `cache/.thumbs/*`)."""
    fixed = []
    for part in pattern.split("/"):
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    rest = pattern.split("/")[len(fixed):]
    return not any(part.startswith(".") for part in rest) and hidden(match.split("/", len(fixed))[-1])
