"""Shard discovery: input URLs (brace ranges, globs, directories) -> sorted Shards.

Everything goes through fsspec, so local paths, memory://, https:// and (with the
cloud extra) s3:// and gs:// behave the same. One shard is one unit of work.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import fsspec
from braceexpand import UnbalancedBracesError, braceexpand
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import glob_translate

from memgen.outputs import MARKER, missing_bucket
from memgen.records import Shard, printable
from memgen.sniff import HEAD, KINDS, shard_format

# compressed tars by the suffixes tar itself reads; the stream is decompressed by its suffix
TAR_COMPRESSION = {".tar": None, ".tar.gz": "gzip", ".tgz": "gzip", ".tar.bz2": "bz2", ".tbz2": "bz2",
                   ".tbz": "bz2", ".tar.xz": "xz", ".txz": "xz"}
TAR_SUFFIXES = tuple(TAR_COMPRESSION)
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")  # .parq: fastparquet's and dask's examples
ZIP_SUFFIXES = (".zip",)
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")  # gzip per record, which warcio reads itself
TFRECORD_COMPRESSION = {".tfrecord": None, ".tfrecords": None,
                        ".tfrecord.gz": "gzip", ".tfrecords.gz": "gzip"}  # TensorFlow's GZIP option
TFRECORD_SUFFIXES = tuple(TFRECORD_COMPRESSION)
SHARD_SUFFIXES = TAR_SUFFIXES + PARQUET_SUFFIXES + ZIP_SUFFIXES + WARC_SUFFIXES + TFRECORD_SUFFIXES
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
IMAGES = "images"  # the folder of a memgen run's output (sample, memory) that holds its images
SIDECARS = (".txt", ".json")  # an image file's caption and metadata (with its url)
# Hugging Face ImageFolder's metadata files (memgen.imagefolder), preferred in this order
FOLDER_METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
HTTP_TIMEOUT = 60.0  # seconds an http(s) server may send nothing before a read fails
MAX_EXPANDED = 1_000_000  # URLs one brace range may stand for (LAION-5B is ~0.5M shards)
_INT_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?\}")
SILENT_ASKS = 3  # URLs of one host asked whether they exist before its silence is taken as final
_GLOB_CHARS = set("*?[")
_log = logging.getLogger(__name__)


class NoInputError(ValueError):
    """No input URL matched anything, a folder of the inputs cannot be listed, or an input
    cannot be read as a brace range."""


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
    compressed = TAR_COMPRESSION | TFRECORD_COMPRESSION
    return next((c for suffix, c in compressed.items() if lower.endswith(suffix)), None)


def shard_kind(uri: str) -> str:
    lower = _name(uri)
    if lower.endswith(TFRECORD_SUFFIXES) or _TFDS_SHARD.search(lower):
        return "tfrecord"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(ZIP_SUFFIXES):
        return "zip"
    if lower.endswith(WARC_SUFFIXES):
        return "warc"
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


def _is_listed_file(path: str) -> bool:
    """Files that a directory walk picks up: shards and images, not sidecars."""
    return is_shard_name(path.lower()) or path.lower().endswith(IMAGE_SUFFIXES)


def _stem(path: str) -> str:
    return path[: len(path) - len(shard_suffix(path.lower()))]


class FolderEntries(NamedTuple):
    listed: dict[str, tuple[str, ...]]  # shards and images, each with its sidecars
    skipped: Counter  # the other files, by suffix
    described: dict[str, str]  # image -> the ImageFolder metadata file that describes it


def folder_entries(paths: list[str], beside: frozenset[str] = frozenset(),
                   glob: bool = False) -> FolderEntries:
    """The shards and images among the files of a folder walk or a glob, each with its
    sidecars (SIDECARS beside an image: a.txt, a.json for a.jpg, as img2dataset's "files"
    output and training folders have them), and the other files by suffix. img2dataset
    writes NNNNN.parquet beside NNNNN.tar or the folder NNNNN/: their metadata, without
    images; it and NNNNN_stats.json are not shards. `beside`: more such tars and folders
    (without their suffix), that a glob did not match. A `glob` that matches no shard or
    image means the other files it matches (`blobs/*` of files named by hash). An image below
    an ImageFolder metadata file (FOLDER_METADATA) is described by the nearest one; such a
    file is not a shard."""
    images = [p for p in paths if p.lower().endswith(IMAGE_SUFFIXES)]
    described = _described(paths, images)
    metadata_files = set(described.values())
    paths = [p for p in paths if p not in metadata_files]
    present = set(paths)
    # img2dataset's shards: NNNNN.tar (webdataset output), NNNNN.tfrecord, the folder NNNNN/ (files output)
    shards = ({_stem(p) for p in paths if p.lower().endswith(TAR_SUFFIXES + TFRECORD_SUFFIXES)}
              | {posixpath.dirname(p) for p in paths} | beside)

    def metadata_of_a_shard(path: str) -> bool:  # img2dataset names shards by number only
        stem = _stem(path)
        return (path.lower().endswith(PARQUET_SUFFIXES) and posixpath.basename(stem).isdigit()
                and stem in shards)

    listed: dict[str, tuple[str, ...]] = {}
    for path in paths:
        if metadata_of_a_shard(path):
            continue
        if path.lower().endswith(IMAGE_SUFFIXES):
            stem = posixpath.splitext(path)[0]
            # as written: a.txt, else A.TXT (as cameras and old Windows tools name files)
            listed[path] = tuple(found for s in SIDECARS
                                 if (found := next((x for x in (s, s.upper()) if stem + x in present), None)))
        elif _is_listed_file(path):
            listed[path] = ()
    if glob and not listed:
        listed = {path: () for path in paths if not metadata_of_a_shard(path)}
    used = {posixpath.splitext(p)[0] + s for p, sidecars in listed.items() for s in sidecars}
    skipped: Counter = Counter()
    for path in paths:
        if metadata_of_a_shard(path):
            skipped["parquet beside its tar, TFRecord or folder"] += 1
        elif path not in listed and path not in used:
            skipped[posixpath.splitext(posixpath.basename(path))[1].lower() or "no suffix"] += 1
    return FolderEntries(listed, skipped, {image: described[image] for image in listed if image in described})


def _described(paths: list[str], images: list[str]) -> dict[str, str]:
    """{image: the ImageFolder metadata file nearest up its folders}, of the listed `paths`;
    one of several in a folder by FOLDER_METADATA's order."""
    files: dict[str, str] = {}
    for path in paths:
        name = posixpath.basename(path)
        if name in FOLDER_METADATA:
            folder = posixpath.dirname(path)
            if folder not in files or FOLDER_METADATA.index(name) < FOLDER_METADATA.index(
                    posixpath.basename(files[folder])):
                files[folder] = path
    if not files:
        return {}

    @functools.cache
    def nearest(folder: str) -> str | None:
        above = posixpath.dirname(folder)
        return files.get(folder) or (None if above == folder else nearest(above))

    return {image: found for image in images if (found := nearest(posixpath.dirname(image)))}


class _Expanded(NamedTuple):
    """What one input stands for."""
    urls: dict[str, tuple[str, ...]]  # with the sidecars of images in its folders or glob
    exists: bool | None  # whether it exists or matched (None: not checked, an http(s) URL; a
    # brace range of them would cost a request each)
    skipped: Counter  # the files of its folders or glob that are not shards, images or sidecars
    root: str | None  # the folder, the glob's fixed folder; None for a file named: hive_partitions
    described: dict[str, str]  # image URL -> its ImageFolder metadata file's


def _expand_one(url: str) -> _Expanded:
    """What one input URL stands for (_Expanded)."""
    fs, path = url_fs(url)
    protocol = url.split("://", 1)[0] if "://" in url else None
    if isinstance(fs, LocalFileSystem):  # a/../a/x.tar and file:///…/a/x.tar are a/x.tar: read once
        path, protocol = posixpath.normpath(path), None

    def unstrip(p: str) -> str:
        return fs.unstrip_protocol(p) if protocol else p

    if _GLOB_CHARS & set(path) and protocol not in ("http", "https") and not _exists(fs, path):
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
        entries = folder_entries(files, _img2dataset_shards(fs, files), glob=True)
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
    return _Expanded({unstrip(path): ()}, _exists(fs, path), Counter(), None, {})  # a file named: as it is


def _img2dataset_shards(fs: fsspec.AbstractFileSystem, files: list[str]) -> frozenset[str]:
    """Of the numbered Parquet files a glob matched, those beside a tar, TFRecord or folder of
    their number that the glob did not match (`out/0000?.*` matches 00002.parquet, not 00002/):
    one listing of each of their folders."""
    numbered = [_stem(f) for f in files
                if f.lower().endswith(PARQUET_SUFFIXES) and posixpath.basename(_stem(f)).isdigit()]
    found: set[str] = set()
    for folder in sorted({posixpath.dirname(stem) for stem in numbered}):
        try:
            entries = {e.rstrip("/") for e in fs.ls(folder, detail=False)}
        except OSError:
            continue
        found |= {stem for stem in numbered if posixpath.dirname(stem) == folder
                  and (stem in entries or stem + ".tar" in entries or stem + ".tfrecord" in entries)}
    return frozenset(found)


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether `path` names something as it is (a name may hold glob characters: "pics [2020]")."""
    try:
        return fs.exists(path)
    except PermissionError:
        raise  # "no input matched" would hide why
    except OSError:  # a name too long for the disk, say: nothing by that name
        return False


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
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    rest = pattern.split("/")[len(fixed):]
    return not any(part.startswith(".") for part in rest) and hidden(match.split("/", len(fixed))[-1])


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


def expand(raw: str) -> list[str]:
    """The URLs an input's brace range stands for; a name with braces that exists as written
    (`photos {a,b}`, `sh}ard.tar`) is itself, as one with glob characters is. (http(s) names
    are not asked: a brace range of them costs no request.) NoInputError for braces that do
    not pair up, or a range of more than MAX_EXPANDED URLs (a digit too many: the list alone
    filled the memory)."""
    if "{" in raw or "}" in raw:
        if not raw.startswith(("http://", "https://")):
            fs, path = url_fs(raw)
            if _exists(fs, path):
                return [raw]
    # braceexpand makes a tuple of each range before the first URL: measure them first
    longest = max((abs(int(b) - int(a)) // max(1, int(step or 1)) + 1
                   for a, b, step in _INT_RANGE.findall(raw)), default=0)
    try:
        urls = [] if longest > MAX_EXPANDED else list(itertools.islice(braceexpand(raw), MAX_EXPANDED + 1))
    except UnbalancedBracesError:
        raise NoInputError(f"{raw}: its braces do not pair up (a range is {{00000..00099}}), and "
                           "nothing has that name") from None
    if longest > MAX_EXPANDED or len(urls) > MAX_EXPANDED:
        raise NoInputError(f"{raw} stands for more than {MAX_EXPANDED:,} URLs: give a smaller range, "
                           "or their folder or a glob")
    return urls


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
                if where.startswith(folder + "/") and _exists(in_fs, in_path) and in_fs.isdir(in_path):
                    return url
                if (_GLOB_CHARS & set(in_path) and type(in_fs) is type(fs) and _glob_reaches(in_path, path)
                        and not _exists(in_fs, in_path)):  # `pics [2020]` that exists is read as named
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
    for raw in inputs:
        with _listing(raw):
            for url in expand(raw):
                expanded, exists, skipped, root, metadata = _expand_one(url)
                described.update(metadata)
                if skipped:
                    _log.warning("%s: skipped %d files that are neither shards nor images (%s)%s",
                                 url, skipped.total(), counted(skipped), _hashed_hint(url, skipped))
                for uri, sidecars in expanded.items():  # named and walked too: whatever the order
                    known = {s.lower(): s for s in (*urls.get(uri, ()), *sidecars)}
                    urls[uri] = tuple(known[s] for s in SIDECARS if s in known)
                    roots[uri] = _higher_root(roots[uri], root) if uri in roots else root
                any_exists = any_exists or bool(exists)
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
        why = _unanswered(url, http_timeout)
        any_exists = why is None
        if any_exists:
            break
        refused = refused or (None if why.startswith("404") else f" (asked {url}: {why})")
        silent[host] += not why[:3].isdigit()
    if not any_exists or not urls:
        raise NoInputError(f"no input matched: {' '.join(inputs)}{refused or _missing_buckets(inputs)}")
    named = _one_name_each(urls)
    kinds = discovered_kinds(sorted(named))
    return [Shard.of(i, uri, kinds[uri], named[uri],
                     tuple(hive_partitions(uri, roots[uri]).items()), described.get(uri))
            for i, uri in enumerate(sorted(named))]


def counted(kinds: Counter) -> str:
    """"kind n, ..." of the files or members a listing or reader left out, by kind."""
    return ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()) if n)


def _hashed_hint(url: str, skipped: Counter) -> str:
    """How to read the files without a suffix a folder's walk skipped: images named by hash, as
    some crawlers save them, were "no input matched" and nothing said how to read them."""
    if not skipped["no suffix"] or _GLOB_CHARS & set(url):
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


def listing_digest(shards: Sequence[Shard]) -> str:
    """sha256 of the shards' URIs, their sidecars (captions, metadata) and the version of each
    of those files, in order: what a run's inputs were listed as (a glob or a folder lists
    anew each time; a retry over the same listing has nothing new to read, and a file
    rewritten under its name lists otherwise). A shard's Hive partitions, its records'
    metadata, are added where it has any (the same file listed from another folder has
    others), and its ImageFolder metadata file with its version, so listings without either
    digest as they did before."""
    listed = "\n".join(
        "\t".join([shard.uri, ",".join(shard.sidecars), file_version(shard.location),
                   *(file_version(shard.sidecar(suffix)) for suffix in shard.sidecars),
                   *([json.dumps(shard.partitions)] if shard.partitions else []),
                   *([shard.folder_metadata, file_version(shard.folder_metadata)]
                     if shard.folder_metadata else [])])
        for shard in shards)
    return hashlib.sha256(listed.encode("utf-8", "surrogateescape")).hexdigest()


# what an object store's info says that changes when an object is rewritten: its ETag (S3,
# Azure), etag and generation (GCS), as its listing says
_VERSION_KEYS = ("size", "ETag", "etag", "generation")


def file_version(url: str) -> str:
    """What tells this version of a file from another without reading it; "" for an http(s)
    URL (a request each; a read checks its ETag as it goes) and for a file that is not there
    (its reader rejects it). An object store answers from the listing a glob or folder made."""
    if url.startswith(("http://", "https://")):
        return ""
    try:
        if "://" not in url or url.startswith("file://"):  # a stat alone: a folder of 1M images
            found = os.stat(url.removeprefix("file://"))
            return f"size={found.st_size},mtime={found.st_mtime_ns}"
        fs, path = url_fs(url)
        info = fs.info(path)
    except (OSError, ValueError):  # gone, or a name too long: its reader says so
        return ""
    return ",".join(f"{key}={info[key]}" for key in _VERSION_KEYS if info.get(key) is not None)


def file_digest(url: str) -> str:
    """sha256 of one input file's bytes (a calibration list, a model), read in blocks."""
    digest = hashlib.sha256()
    with open_input(url) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _unanswered(url: str, http_timeout: float) -> str | None:
    """None when an http(s) URL answers, else why not: its status, or the connection's error
    (a server down or refusing access is not a URL that matches nothing)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url, http_timeout))
    try:  # one GET, its response closed unread; strict: other errors than a 404 are raised
        return None if fs.exists(path, strict=True) else "404 Not Found"
    except Exception as e:  # noqa: BLE001 - refused, unreachable, timed out: it does not answer
        if isinstance(e, TimeoutError):
            return f"no answer in {http_timeout:g} s (--http_timeout)"
        return http_answer(e) or f"{type(e).__name__}: {e}"[:300]


def http_answer(error: BaseException) -> str | None:
    """An HTTP client error's status line ("500 Internal Server Error"), None for others."""
    status = getattr(error, "status", None)
    return f"{status} {getattr(error, 'message', '')}".strip() if status else None
