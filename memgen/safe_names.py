"""File names for sampled images that cannot escape the output directory.

In: a rank, the record's source (shard uri + '#' + member key, both from the web),
its Pillow format. Out: a name of [A-Za-z0-9_-] characters plus one extension, at
most ~100 bytes, unique by its rank prefix. Captions never become names.
"""

from __future__ import annotations

import posixpath
import re

from memgen.shards import split_source

MAX_STEM = 80  # bytes of the sanitized member key kept in a name
# by Pillow format, a suffix memgen's own readers take back (memgen.shards.IMAGE_SUFFIXES, and
# from tars OTHER_IMAGE_SUFFIXES): every picture format Pillow decodes (documents, video and
# data stubs aside); one of the format's own where Pillow registers any
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "JPEG2000": "jp2", "PNG": "png", "GIF": "gif", "WEBP": "webp",
              "BMP": "bmp", "DIB": "dib", "TIFF": "tiff", "PPM": "ppm", "ICO": "ico", "CUR": "cur",
              "AVIF": "avif", "TGA": "tga", "PCX": "pcx", "DCX": "dcx", "QOI": "qoi", "SGI": "sgi",
              "DDS": "dds", "XBM": "xbm", "XPM": "xpm", "PSD": "psd", "ICNS": "icns", "SUN": "ras",
              "BLP": "blp", "FITS": "fits", "FLI": "fli", "FTEX": "ftc", "GBR": "gbr", "IM": "im",
              "MSP": "msp", "PCD": "pcd", "PIXAR": "pxr", "SPIDER": "spider", "IMT": "imt",
              "MCIDAS": "mcidas", "XVTHUMB": "xvthumb"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # separators, dots, NUL, spaces, non-ASCII


def safe_stem(text: str, max_len: int = MAX_STEM) -> str:
    """Only [A-Za-z0-9_-]: no '/', '\\', '..', NUL or dot can survive; never empty."""
    return _UNSAFE.sub("_", text).strip("_-")[:max_len] or "image"


def extension(fmt: str) -> str:
    """The usual file extension of a Pillow format (jpg for JPEG, as webdataset expects)."""
    return EXTENSIONS.get(fmt.upper()) or safe_stem(fmt.lower(), 8)


def member_key(source: str) -> str:
    """The record's own name: its member key, else the file name of its shard."""
    uri, key = split_source(source)
    return key or posixpath.basename(uri.rstrip("/"))


def sample_stem(rank: int, source: str) -> str:
    """Unique (rank prefix) and readable (member key) stem, e.g. 000000012_cat_jpg."""
    return f"{rank:09d}_{safe_stem(member_key(source))}"


def safe_join(root: str, name: str) -> str:
    """root/name, refusing any name that is not a single plain path component."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or len(name.encode()) > 255):
        raise ValueError(f"unsafe file name {name!r}")
    return posixpath.join(root.rstrip("/"), name)
