"""Output folders: a run writes into a folder that is new, empty, or its own unfinished one.

Before anything else a run writes MARKER, naming its job and the run, into its folder; a
rerun of a killed run finds it and clears what that run left. A folder holding anything
else (the user's photos, another job's output, the input itself) is refused, never
cleared: a run deletes only what a run of the same job wrote. A run finishes its output
(manifest, report) only while the marker still names it: a second run started into the
same folder takes it over, and the first stops short of finishing it (`Claim.check`).
The marker is not a lock: two runs that claim a folder at the same instant are not told
apart.

Paths are taken literally: an output named `s3://bucket/run[1]` or `runs/a?b` is legal,
and fsspec's mv, rm and glob would read '[', '?' and '*' in it as glob patterns (and
could reach another folder), so renaming, removing and listing go through the helpers
below.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import io
import os
import posixpath
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

MARKER = ".memgen-run"
OBJECT_STORES = {"s3", "s3a", "gs", "gcs"}  # protocols whose folders are key prefixes in a bucket
# The packages of the clients fsspec reaches object stores and HTTP through: their own errors
# (not OSErrors) say that storage failed, not memgen (hf:// is huggingface_hub's, over httpx).
STORAGE_CLIENTS = frozenset({"aiohttp", "s3fs", "gcsfs", "botocore", "google", "urllib3", "requests",
                             "huggingface_hub", "httpx", "httpx2", "httpcore", "httpcore2"})


def from_storage_client(e: BaseException) -> bool:
    """An error of one of the STORAGE_CLIENTS' own classes."""
    return type(e).__module__.split(".")[0] in STORAGE_CLIENTS


class OutputDirError(ValueError):
    """An output folder that a run may not write into."""


@dataclass(frozen=True)
class Claim:
    """One run's hold on its output folder `url`, made by `job`; `flag` names the folder
    in messages; the run has finished once the folder holds `result`."""

    url: str
    job: str
    flag: str
    result: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def mark(self) -> str:
        """What MARKER holds while this run owns the folder: the job, then the run."""
        return f"{self.job} {self.run}"

    def held(self) -> bool:
        """Whether the folder's marker still names this run (no other run took it over)."""
        return self._marker() == self.mark

    def check(self) -> None:
        """OutputDirError when another run took the folder over while this one ran, or the
        folder (its marker) went away."""
        marker = self._marker()
        if marker is None:
            raise OutputDirError(f"{self.flag} {self.url} lost its {MARKER} while this run ran (the folder "
                                 "or its bucket deleted?); this run left it unfinished")
        if marker != self.mark:
            raise OutputDirError(f"{self.flag} {self.url} was taken over by another memgen {self.job} "
                                 "run while this one ran; this run left it unfinished")

    def taken_over(self) -> bool:
        """Whether another run's marker is in the folder now (False when storage cannot say)."""
        try:
            marker = self._marker()
        except Exception:  # noqa: BLE001 - the run's own error says what storage did
            return False
        return marker is not None and marker != self.mark

    def finished(self) -> bool:
        """Whether this run wrote its result (a run's leftovers are cleared when it claims)."""
        fs, path = fsspec.core.url_to_fs(self.url)
        return self.held() and fs.exists(posixpath.join(path, self.result))

    def _marker(self) -> str | None:
        fs, path = fsspec.core.url_to_fs(self.url)
        return _read_marker(fs, posixpath.join(path, MARKER))


READ_WHOLE = frozenset({"images", "duplicates", "rejects"})  # a run's folders that readers glob


def claim_output(claim: Claim, leftovers: Iterable[str], check_only: bool = False) -> None:
    """Make `claim.url` the folder of this new run, or raise OutputDirError saying why not.

    `leftovers`: glob patterns (relative to the folder) of what an unfinished run of the
    job may have left; `check_only` (a dry run) refuses what a run would refuse and writes
    nothing. Callers refuse a finished run (its manifest or report) first, with their own
    message.
    """
    url, flag = claim.url, claim.flag
    try:
        fs, path = fsspec.core.url_to_fs(url)
        if fs.exists(path) and not fs.isdir(path):
            raise OutputDirError(f"{flag} {url} is a file, not a folder")
        holder = _output_holding(fs, path)
        if holder:
            raise OutputDirError(f"{flag} {url} is inside the tables of {holder}, another memgen run's "
                                 "output, whose readers would take this run's files for its own; "
                                 "choose a folder outside them")
        marker = posixpath.join(path, MARKER)
        # a marker alone (even an empty one: killed while writing it) has nothing to lose, nor
        # has the empty `folder/` object an S3 console's "Create folder" makes (listed as itself)
        ours = [entry for entry in _entries(fs, path)
                if posixpath.basename(entry) != MARKER and entry.rstrip("/") != path.rstrip("/")]
        if ours:
            owner = (_read_marker(fs, marker) or "").partition(" ")[0]
            if owner != claim.job:
                what = f"the output of memgen {owner}" if owner else "files memgen did not write"
                raise OutputDirError(f"{flag} {url} is not empty: it holds {what}; "
                                     f"choose a new or empty folder")
        if check_only:
            _refuse_missing_bucket(fs, path, flag, url)  # a run finds out when it writes its marker
            return
        for pattern in leftovers if ours else ():
            for found in glob_in(fs, path, pattern):
                if not fs.exists(posixpath.join(found, MARKER)):  # another run's folder: never cleared
                    remove(fs, found)
        make_folder(fs, path)
        with fs.open(marker, "w") as f:
            f.write(claim.mark)
    except OSError as e:
        raise OutputDirError(f"{flag} {url} cannot be written: {type(e).__name__}: {e}"[:500]) from None


def _output_holding(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The folder a memgen run made (its marker stays when it finishes) that `path` lies in,
    below one of the folders its readers take whole, if any: a memory's tables are globbed,
    a sample's images/ read as a reference (a report in a memory's folder harms nothing)."""
    below, folder = path.rstrip("/"), posixpath.dirname(path.rstrip("/"))
    while folder and folder not in ("/", "."):
        first = below[len(folder):].strip("/").split("/", 1)[0]
        if first in READ_WHOLE and fs.exists(posixpath.join(folder, MARKER)):
            return fs.unstrip_protocol(folder) if not isinstance(fs, LocalFileSystem) else folder
        folder = posixpath.dirname(folder)
    return None


def _refuse_missing_bucket(fs: fsspec.AbstractFileSystem, path: str, flag: str, url: str) -> None:
    """On an object store, refuse a bucket that does not exist. Asking needs the bucket-listing
    right the folder's listing above already used, so it refuses nothing a run would take."""
    if bucket := missing_bucket(fs, path):
        raise OutputDirError(f"{flag} {url} cannot be written: the bucket {bucket} does not exist "
                             "(memgen does not create buckets)")


def missing_bucket(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The bucket `path` lies in when `fs` is an object store and it does not exist, else None."""
    bucket = path.split("/", 1)[0]
    return bucket if _object_store(fs) and not fs.exists(bucket) else None


def make_folder(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """A folder for files to be written in; nothing on an object store, where folders are key
    prefixes and makedirs creates a missing bucket (a typo, or one deleted during the run,
    would go unnoticed)."""
    if not _object_store(fs):
        fs.makedirs(path, exist_ok=True)


def _object_store(fs: fsspec.AbstractFileSystem) -> bool:
    """S3 or GCS: folders are key prefixes, and buckets are made by their owners."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & OBJECT_STORES)


def glob_in(fs: fsspec.AbstractFileSystem, folder: str, pattern: str) -> list[str]:
    """The paths in `folder` (a literal path) whose names match `pattern`. Listed afresh with
    ls, whose answer object stores' clients keep: opening a file listed then costs no request
    for its size (after glob, each cost a HEAD, and pyarrow asks twice: 8 a memory part)."""
    try:
        paths = fs.ls(folder, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    return [p for p in paths if fnmatch.fnmatchcase(posixpath.basename(p.rstrip("/")), pattern)]


def temporary(path: str) -> str:
    """A hidden name, this write's own, for a file written before it is renamed to `path`: a
    run that took the folder over writes its own (with one name, each run renamed the other's
    half-written file into place, or found its own gone)."""
    return posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")


def temporaries(name: str) -> str:
    """The glob pattern of the temporary names of the file `name` (what a killed run left)."""
    return f".{glob.escape(name)}.*.tmp"


def write_whole(url: str, write: Callable[[IO[bytes]], None]) -> None:
    """A file written by `write` (AtomicFile): a reader, or a rerun after a kill, never sees
    half of it, and an object store takes its content type from its suffix."""
    fs, path = fsspec.core.url_to_fs(url)
    target = AtomicFile(fs, path)
    try:
        write(target.open())
        target.commit()
    except BaseException:
        target.discard()
        raise


def write_atomic(url: str, write: Callable[[IO[str]], None]) -> None:
    """A text file written by `write`, as write_whole writes one."""
    def as_text(f: IO[bytes]) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8")
        write(text)
        text.flush()
        text.detach()  # the file stays open for commit() to close

    write_whole(url, as_text)


class AtomicFile:
    """A file at `path` that readers see whole or not at all. On a local disk it is written
    under a hidden name of its own beside it (`temporary`) and renamed; elsewhere (object
    stores) into a local temporary file (in TMPDIR) and uploaded in one put, which is atomic
    there (a rename there is a HEAD, a server-side copy and a DELETE: 4 requests a file
    instead of 1, and its bytes copied once more). Nothing is left behind when it is
    discarded, nor on an object store when the process dies while writing; the local files
    of processes that died (killed, or ended at once after Ctrl-C) are deleted by the next
    process that stages one (`_sweep_staged`)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs, self.path = fs, path
        self._local = isinstance(fs, LocalFileSystem)
        self._tmp = temporary(path) if self._local else None
        self._file: IO[bytes] | None = None

    def open(self) -> IO[bytes]:
        make_folder(self.fs, posixpath.dirname(self.path))
        if self._local:
            self._file = self.fs.open(self._tmp, "wb")
        else:
            _sweep_staged()
            # the target's suffix: s3fs takes the Content-Type from the local name (a report.html
            # as binary/octet-stream downloads instead of showing)
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by commit or discard
                prefix=_staged_prefix() + f"{os.getpid()}-", suffix=posixpath.splitext(self.path)[1],
                delete=False)
            self._tmp = self._file.name
        return self._file

    def commit(self) -> None:
        """Close the file and put it in place."""
        self._file.close()
        if self._local:
            self.fs.mv(self._tmp, self.path)  # os.rename: takes names as they are
            return
        try:
            self.fs.put_file(self._tmp, self.path)
        finally:
            os.unlink(self._tmp)

    def discard(self) -> None:
        """Close and delete what was written; closing may fail again (a full disk fails the
        close that flushes), which must not keep the file."""
        if self._file is None:
            return
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            if self._local:
                remove(self.fs, self._tmp)
            else:
                os.unlink(self._tmp)


STAGED = "memgen-staged-"  # local copies of files for object stores: memgen-staged-HOST-PID-*


def _staged_prefix() -> str:
    """This machine's (container's) staged files: a process id means nothing in another one
    that shares the folder."""
    return f"{STAGED}{socket.gethostname().replace('/', '_')}-"


@functools.cache
def _sweep_staged() -> None:
    """Once a process: delete the staged files of processes that no longer run (a worker
    killed mid-part, a command ended at once after Ctrl-C), each as large as a part."""
    prefix = _staged_prefix()
    for staged in Path(tempfile.gettempdir()).glob(f"{glob.escape(prefix)}*"):
        pid = staged.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not _runs(int(pid)):
            with contextlib.suppress(OSError):
                staged.unlink()


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete a file, or a folder and everything in it."""
    if isinstance(fs, LocalFileSystem):
        fs.rm(path, recursive=True)  # takes names as they are
        return
    for file in fs.find(path) if fs.isdir(path) else [path]:  # find lists by prefix, no pattern
        fs.rm_file(file)


def _entries(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    try:
        return fs.ls(path, detail=False)
    except FileNotFoundError:
        return []


def _read_marker(fs: fsspec.AbstractFileSystem, marker: str) -> str | None:
    try:
        with fs.open(marker, "r") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None
