"""Shard names: suffixes, kinds (by name, or by first bytes), compression, a source's shard."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import fsspec

from memgen.brotlistream import BROTLI
from memgen.shards.store import url_fs
from memgen.snappyblock import SNAPPY_BLOCK
from memgen.sniff import HEAD, KINDS, shard_format
from memgen.zstdstream import ZSTD

# compressed tars by the suffixes tar itself reads; the stream is decompressed by its suffix
# (zstd's: `tar --zstd`'s .tar.zst, Hugging Face webdatasets', the .tar.zstd and .tzst some write)
TAR_COMPRESSION = {".tar": None, ".tar.gz": "gzip", ".tgz": "gzip", ".tar.bz2": "bz2", ".tbz2": "bz2",
                   ".tbz": "bz2", ".tar.xz": "xz", ".txz": "xz", ".tar.zst": ZSTD, ".tar.zstd": ZSTD,
                   ".tzst": ZSTD}
TAR_SUFFIXES = tuple(TAR_COMPRESSION)
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")  # .parq: fastparquet's and dask's examples
ZIP_SUFFIXES = (".zip",)
# Arrow IPC: Hugging Face datasets' cache and save_to_disk (.arrow), Feather v2, Polars' .ipc;
# .arrows is the stream format's registered suffix
ARROW_SUFFIXES = (".arrow", ".arrows", ".feather", ".ipc")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")  # gzip per record, which warcio reads itself
TFRECORD_COMPRESSION = {".tfrecord": None, ".tfrecords": None,
                        ".tfrecord.gz": "gzip", ".tfrecords.gz": "gzip"}  # TensorFlow's GZIP option
TFRECORD_SUFFIXES = tuple(TFRECORD_COMPRESSION)
# MosaicML Streaming's MDS shards: shard.00000.mds, compressed whole by MDSWriter(compression=...)
MDS_COMPRESSION = {".mds": None, ".mds.zstd": ZSTD, ".mds.gz": "gzip", ".mds.bz2": "bz2", ".mds.br": BROTLI,
                   ".mds.snappy": SNAPPY_BLOCK}
MDS_SUFFIXES = tuple(MDS_COMPRESSION)
SHARD_SUFFIXES = (TAR_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES + ZIP_SUFFIXES + WARC_SUFFIXES
                  + TFRECORD_SUFFIXES + MDS_SUFFIXES)
# TensorFlow Datasets names its shards after their place: mnist-train.tfrecord-00000-of-00004
_TFDS_SHARD = re.compile(r"\.tfrecords?-\d+-of-\d+$")
# Shards named without a suffix: TensorFlow's sharded files (ImageNet's train-00000-of-01024) and
# Hive's (000000_0, 000000_0_copy_1): what they hold is read from their first bytes (sniff)
_UNSUFFIXED_SHARD = re.compile(r"(?:^|/)(?:[^/.]*-\d+-of-\d+|\d+_\d+(?:_copy_\d+)?)$")
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".ico", ".cur", ".jp2", ".j2k", ".jpc", ".jpf", ".jpx", ".j2c",
    ".avif", ".avifs", ".mpo",
    # rarer picture formats that Pillow reads, as `memgen sample` names them (safe_names.EXTENSIONS)
    ".tga", ".pcx", ".qoi", ".sgi", ".dds", ".xbm", ".xpm", ".psd", ".icns", ".ras", ".blp",
)
# Suffixes of formats Pillow reads that as often name something else (.pcd point clouds, .fit
# fitness logs, .gbr Gerber files, .im, ...), or that Pillow gives none (sample's .spider): a
# folder walk skips them, and a tar sample's member with one is its image only when it has no
# member with an IMAGE_SUFFIXES suffix (a lidar sample's .png is its image, not its .pcd).
OTHER_IMAGE_SUFFIXES = (".pcd", ".fit", ".fits", ".gbr", ".im", ".msp", ".pxr", ".dcx", ".fli", ".flc",
                        ".ftc", ".ftu", ".spider", ".imt", ".mcidas", ".xvthumb")
SIDECARS = (".txt", ".json")  # an image file's caption and metadata (with its url)
# Hugging Face ImageFolder's metadata files (memgen.imagefolder), preferred in this order
FOLDER_METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def _name(uri: str) -> str:
    """What a shard's suffix is read from, lower-cased: an http(s) URL's path when it has a
    shard's suffix, without the query a signed URL carries (shard-000.tar?X-Amz-Signature=...
    is a tar), else the whole URL (download?file=shard-000.tar is one too)."""
    lower = uri.lower()
    if lower.startswith(("http://", "https://")):
        path = urlsplit(lower).path
        return path if shard_suffix(path) else lower
    return lower


def shard_suffix(lower: str) -> str:
    """The shard suffix a lower-cased name ends with, "" for none."""
    tfds = _TFDS_SHARD.search(lower)
    return tfds.group() if tfds else next((s for s in SHARD_SUFFIXES if lower.endswith(s)), "")


def is_shard_name(lower: str) -> bool:
    """Whether a lower-cased name is a shard's: by its suffix, or one named without
    (_UNSUFFIXED_SHARD), whose records' sources hold a key after '#' too."""
    return bool(shard_suffix(lower) or _UNSUFFIXED_SHARD.search(lower))


def compression(uri: str) -> str | None:
    """How a shard's bytes are compressed (fsspec's name), by its suffix."""
    lower = _name(uri)
    compressed = TAR_COMPRESSION | TFRECORD_COMPRESSION | MDS_COMPRESSION
    return next((c for suffix, c in compressed.items() if lower.endswith(suffix)), None)


def shard_kind(uri: str) -> str:
    lower = _name(uri)
    if lower.endswith(TFRECORD_SUFFIXES) or _TFDS_SHARD.search(lower):
        return "tfrecord"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(ARROW_SUFFIXES):
        return "arrow"
    if lower.endswith(ZIP_SUFFIXES):
        return "zip"
    if lower.endswith(WARC_SUFFIXES):
        return "warc"
    if lower.endswith(MDS_SUFFIXES):
        return "mds"
    return "file"


def discovered_kinds(uris: list[str]) -> dict[str, str]:
    """{uri: shard_kind}, but for shards named without a suffix (_UNSUFFIXED_SHARD): the kind
    their first bytes say (a ranged read each, asked together of each store: 1,024 ImageNet
    shards in a bucket cost one round of requests, not 1,024 in a row), else "file"; over
    http(s) "file", which the reader refuses in a line if it holds a shard."""
    kinds = {uri: shard_kind(uri) for uri in uris}
    stores: dict[int, tuple[fsspec.AbstractFileSystem, list[tuple[str, str]]]] = {}
    for uri, kind in kinds.items():
        streamed = uri.startswith(("http://", "https://"))
        if kind == "file" and not streamed and _UNSUFFIXED_SHARD.search(uri.lower()):
            fs, path = url_fs(uri)
            stores.setdefault(id(fs), (fs, []))[1].append((uri, path))
    for fs, asked in stores.values():
        # on_error="return": gone, unreadable, empty (a range refused) stay "file", said by their reader
        heads = fs.cat_ranges([path for _, path in asked], 0, HEAD, on_error="return")
        for (uri, _), head in zip(asked, heads, strict=True):
            if isinstance(head, bytes):
                kinds[uri] = KINDS.get(shard_format(head) or "", "file")
    return kinds


def split_source(source: str) -> tuple[str, str]:
    """(shard uri, member key) of a record's source (Shard.source): the key follows the first
    '#' after a shard's name (tar, Parquet, zip, WARC); a single-file shard has no key, and '#' is a legal
    character of file names ("a#b.jpg", "t#1.tar#key")."""
    at = source.find("#")
    while at >= 0:
        if is_shard_name(_name(source[:at])):
            return source[:at], source[at + 1:]
        at = source.find("#", at + 1)
    return source, ""
