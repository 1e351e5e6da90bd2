"""A Parquet shard's images kept as files beside it (a Hugging Face image that names only its file)."""

from __future__ import annotations

import os
import posixpath
import re
from urllib.parse import quote, urljoin

import fsspec
from fsspec.implementations.local import LocalFileSystem

from memgen.decode import identified
from memgen.readers.config import ReaderConfig, over_max_bytes
from memgen.readers.fields import row_said, utf8_or_guessed
from memgen.readers.probe import known_size, special_file
from memgen.records import Reject, Shard, printable
from memgen.shards import storage_options, url_fs
from memgen.tarstream import read_up_to
from memgen.transfer import FailsAsOSError, open_error, open_message, silent_server

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def image_file(shard: Shard, row: int, key: str, column: str, name: bytes, fields: dict,
                config: ReaderConfig) -> bytes | Reject:
    """The bytes of a Hugging Face image that names only its file (`datasets` saved without
    embedding them: bytes null, path set), read as the Parquet's own bytes are: through fsspec,
    --max_bytes and --http_timeout as for a shard. A missing or unreadable file, or one that
    is not followed (_beside), is the row's reject, with its url. `name`: the path's bytes; its
    messages say it as text."""
    source, path = shard.source(f"#{key}"), utf8_or_guessed(name)
    where = _beside(shard, name, config.http_timeout)
    if isinstance(where, str):
        return Reject(shard.index, row, source, "read", "empty",
                      f"{column} {path!r} is not read: {where}{row_said(fields, config)}"[:500])
    fs, location = where
    special = special_file(location) if _is_local(fs) else None
    if special:  # opening a named pipe waits for a writer: the run never ended
        return Reject(shard.index, row, source, "read", "not_a_file",
                      f"{column} {path!r} is {special}, not a regular file{row_said(fields, config)}"[:500])
    try:
        data, size = _fetched(fs, location, config.max_bytes)
    except IsADirectoryError:  # not worth a retry, as unreadable is (a rerun would be refused)
        return Reject(shard.index, row, source, "read", "not_a_file",
                      f"{column} {path!r} is a folder, not a regular file{row_said(fields, config)}"[:500])
    except Exception as e:  # noqa: BLE001 - any failure (a cut, a silent server: worth a retry) is the row's
        return Reject(shard.index, row, source, "read", open_error(e),
                      f"{column} {path!r}: {_file_said(e, shard, config)}{row_said(fields, config)}"[:500])
    # A path may name any file this machine reads (a Parquet from elsewhere naming ~/.ssh/id_rsa):
    # only an image's bytes go on, and a reject keeps none, so no other file lands in a memory
    if len(data) > config.max_bytes:
        return Reject(shard.index, row, source, "read", "too_large",
                      f"{column} {path!r} is {over_max_bytes(size, config.max_bytes)} (its bytes are not "
                      "kept: a path may name any file)", size or len(data))
    if not identified(data):
        return Reject(shard.index, row, source, "read", "not_an_image",
                      f"{column} {path!r} is not an image of a format its first bytes tell (its bytes are "
                      f"not kept: a path may name any file){row_said(fields, config)}"[:500], len(data))
    return data


def _fetched(fs: fsspec.AbstractFileSystem, location: str, max_bytes: int) -> tuple[bytes, int | None]:
    """(its first max_bytes + 1 bytes, its size when known) of an image's file. In a bucket one
    ranged GET (_ranged); over http(s) streamed (a server that ignores ranges sends no more than
    is read) with a size (any), which skips fsspec's info(): a HEAD before each GET."""
    if not _is_local(fs) and not location.startswith(("http://", "https://")):
        return _ranged(fs, location, max_bytes)
    streamed = {} if _is_local(fs) else {"block_size": 0, "size": 1}
    with FailsAsOSError(fs.open(location, "rb", **streamed)) as f:
        data = read_up_to(f, max_bytes + 1)
        return data, known_size(f) if len(data) > max_bytes else len(data)


def _ranged(fs: fsspec.AbstractFileSystem, location: str, max_bytes: int) -> tuple[bytes, int | None]:
    """(its first max_bytes + 1 bytes, its size or None when more came) of an image's file in a
    bucket, in one ranged GET: open() asked for the object's size first (a HEAD each image, the
    round trip that costs most on S3 or GCS). A range past the end gives what there is; a
    zero-byte object refuses any range (416)."""
    try:
        data = fs.cat_file(location, start=0, end=max_bytes + 1)
    except Exception as e:
        if _unsatisfiable(e):
            return b"", 0
        raise
    return data, (None if len(data) > max_bytes else len(data))


def _unsatisfiable(e: BaseException) -> bool:
    """Whether a ranged GET from byte 0 was answered 416: s3fs raises OSError from botocore's
    ClientError (InvalidRange), gcsfs HttpError (code 416), aiohttp a status 416."""
    for error in (e, e.__cause__, e.__context__):
        response = getattr(error, "response", None)
        said = response if isinstance(response, dict) else {}
        if 416 in (getattr(error, "status", None), getattr(error, "code", None),
                   said.get("ResponseMetadata", {}).get("HTTPStatusCode")) or (
                said.get("Error", {}).get("Code") == "InvalidRange"):
            return True
    return False


def _beside(shard: Shard, name: bytes, http_timeout: float) -> tuple[fsspec.AbstractFileSystem, str] | str:
    """(file system, path) of a Hugging Face image's file: a relative path from the Parquet
    shard's folder, on its file system (an s3:// or https:// shard's images are in the same
    bucket or on the same server, and never above the bucket); an absolute one only beside a
    local shard. Else why it is not read: an absolute path of a remote shard would read the
    worker's own disk, and a URL would make memgen a crawler (img2dataset downloads them). `name`:
    the path's bytes, a local file's name as they are, a server's percent-encoded."""
    path = utf8_or_guessed(name)
    if _URL.match(path):
        return "a URL is not downloaded (img2dataset downloads them)"
    if b"\x00" in name:  # a damaged or hostile Parquet: no file is named so, now or on a rerun
        return "a file name cannot hold a NUL byte"
    location = shard.location
    if location.startswith(("http://", "https://")):
        if path.startswith("/"):
            return "an absolute path is read only beside a local Parquet, not one on a server"
        url = urljoin(location, quote(name))
        return fsspec.core.url_to_fs(url, **storage_options(url, http_timeout))[0], url
    fs, shard_path = url_fs(location)
    if _is_local(fs):
        return fs, os.path.join(os.path.dirname(shard_path), os.fsdecode(name))  # not UTF-8: surrogates
    if path.startswith("/"):
        return "an absolute path is read only beside a local Parquet, not one in a bucket"
    root = shard_path.lstrip("/").split("/", 1)[0]
    found = posixpath.normpath(posixpath.join(posixpath.dirname(shard_path), path))
    if found.lstrip("/").split("/", 1)[0] != root or found.lstrip("/") == root:
        return f"it leads out of the shard's bucket {root!r}"
    return fs, found


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _file_said(e: Exception, shard: Shard, config: ReaderConfig) -> str:
    """Why an image's file could not be read; a silent server's timeout says after how long."""
    # a local name that is not UTF-8 holds surrogates: not Parquet text
    return silent_server(e, shard, config.http_timeout) or printable(open_message(e))
