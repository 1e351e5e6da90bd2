"""Hive partitions: the key=value folders above a file."""

from __future__ import annotations

from urllib.parse import unquote

from memgen.records import printable

_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def hive_partitions(location: str, root: str | None) -> dict[str, str | None]:
    """The Hive partitions of a file, {key: value} of the `key=value` folders between `root` (the
    input folder that listed it) and the file, as pyarrow.dataset reads a folder;
    without a root (a file named, a brace range), of every folder of its path after the scheme
    and bucket or host, as pyarrow reads a list of files. Keys and values are URL-decoded, as
    Hive escapes them (%20, %2F, %3D), a value of __HIVE_DEFAULT_PARTITION__ is null, and values
    are text (pyarrow guesses numbers: which a later file may contradict). A key that comes
    twice: the lower folder's value. A local folder name that is not UTF-8 (`lang=\\xff`) is
    text as printable() shows its uri: its metadata is written as Parquet strings, UTF-8 only."""
    if root is not None and location.startswith(root.rstrip("/") + "/"):
        below = location[len(root.rstrip("/")) + 1:]
    elif root is not None:
        return {}
    elif "://" in location:
        scheme, rest = location.split("://", 1)
        below = rest.split("/", 1)[1] if "/" in rest else ""
        if scheme in ("http", "https"):
            below = below.split("?", 1)[0]
    else:
        below = location
    partitions: dict[str, str | None] = {}
    for folder in below.split("/")[:-1]:
        key, equals, value = folder.partition("=")
        if equals and key:
            partitions[printable(unquote(key))] = None if value == _HIVE_NULL else printable(unquote(value))
    return partitions
