"""fsspec's file systems for input URLs: their options over http(s), opening, existence."""

from __future__ import annotations

import fsspec
from fsspec.implementations.local import LocalFileSystem

HTTP_TIMEOUT = 60.0  # seconds an http(s) server may send nothing before a read fails


def storage_options(url: str, http_timeout: float = HTTP_TIMEOUT) -> dict:
    """fsspec options for opening `url`. Over http(s): a server silent for `http_timeout`
    seconds fails the read, and a slow download never does (aiohttp's default, 300 s for the
    whole request, cut off every shard that took longer to stream, and let a stalled server
    hold a worker that long)."""
    if not url.startswith(("http://", "https://")):
        return {}
    import aiohttp  # fsspec's http client; only http(s) needs it

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=http_timeout, sock_read=http_timeout)
    return {"client_kwargs": {"timeout": timeout}}


def path_exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether `path` names something as it is (a name may hold glob characters: "pics [2020]")."""
    try:
        return fs.exists(path)
    except PermissionError:
        raise  # "no input matched" would hide why
    except OSError:  # a name too long for the disk, say: nothing by that name
        return False


def url_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec's file system and path of an input URL; a local path (no "://") as it is
    written, where fsspec reads a "::" in it as a chain of file systems (a folder named
    crawl::2024 was crawl, and matched nothing)."""
    if "://" not in url:
        return LocalFileSystem(), LocalFileSystem._strip_protocol(url)
    return fsspec.core.url_to_fs(url)


def open_input(url: str, compression: str | None = None) -> fsspec.core.OpenFile:
    """An input file to read (a shard, a sidecar, a calibration list or image, a model), a
    local one as its name is written (url_fs)."""
    return fsspec.core.OpenFile(*url_fs(url), "rb", compression=compression)
