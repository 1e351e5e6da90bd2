"""The members of a zip archive, as the readers take them (tarstream's counterpart).

A zip is a folder packed (a photo collection, a dataset's download): its central
directory names every member, and each is read by itself, so damage to one member costs
that member only (a tar's stream ends at its damage). Reading is bounded as a tar's is: a
member larger than max_bytes gives its head only, whatever size its header claims.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from typing import NamedTuple

from memgen.records import printable
from memgen.transfer import transfer_failed

_UNIX = 3  # ZipInfo.create_system of a zip made on Unix, whose external_attr holds st_mode


class NoBytes(NamedTuple):
    """Why a member gives no bytes: its reject's error type and message."""
    error_type: str
    message: str


def files(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's files by name, in its order; without folders. A name that comes again
    is its last member, as unzip leaves it."""
    return {info.filename: info for info in archive.infolist() if not info.is_dir()}


def member_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int,
                 head: int) -> tuple[bytes, int] | NoBytes:
    """(its bytes, its size) of a member; (its first `head` bytes, -its size) when larger than
    `max_bytes`; NoBytes for one that cannot be read: encrypted, a link, damaged, or in a
    compression zipfile lacks. A failed transfer raises (the shard's reader says so: worth
    a retry)."""
    name = printable(info.filename)
    if info.flag_bits & 0x1:
        return NoBytes("encrypted", f"{name} is encrypted: memgen asks for no password")
    try:
        with archive.open(info) as member:
            if _is_link(info):  # its bytes are the target's name
                target = printable(member.read(4096).decode(errors="replace"))
                return NoBytes("link_member", f"{name} is a link to {target}")
            if info.file_size > max_bytes:
                return member.read(head), -info.file_size
            data = member.read(max_bytes + 1)  # its header may claim less than it holds
    except NotImplementedError as e:  # Deflate64, zstd: zipfile reads stored, deflate, bzip2, lzma
        return NoBytes("unsupported_compression", f"{name}: {e}")
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as e:
        if transfer_failed(e):
            raise
        return NoBytes("corrupt_shard", f"{name}: {type(e).__name__}: {e}"[:500])
    if len(data) > max_bytes:
        return data[:head], -len(data)
    return data, len(data)


def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == _UNIX and stat.S_ISLNK(info.external_attr >> 16)
