"""What a file is (a pipe, a device) and how large, told without reading it."""

from __future__ import annotations

import os
import stat
from typing import IO

from memgen.shards import url_fs

_SPECIAL = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
            (stat.S_ISBLK, "a device"))


def special_file(location: str) -> str | None:
    """What a local path names when it is a pipe, socket or device, else None (a regular
    file, a folder, a remote URL, nothing: opening it says so)."""
    if "://" in location and not location.startswith("file://"):
        return None
    path = url_fs(location)[1]
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the name (a Parquet's image path); opening says so
        return None
    return next((what for test, what in _SPECIAL if test(mode)), None)


def known_size(f: IO[bytes]) -> int | None:
    """The size of file `f` if it can tell without being read (a seek to its end, an HTTP
    Content-Length), else None: a too-large file is not downloaded to be measured."""
    try:
        return f.seek(0, 2)
    except (OSError, ValueError):
        return getattr(f, "size", None)
