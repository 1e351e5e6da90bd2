"""Images in WARC files (ISO 28500), the web archive crawlers write (Heritrix, wget
--warc-file, Browsertrix, Common Crawl), read with warcio, streamed front to back; and in
the ARC files (version 1) that came before them (the Internet Archive's crawls, Common
Crawl's of 2008-2012), whose records warcio reads alike.

An image is a `response` or `resource` record whose Content-Type (the HTTP answer's, else
the record's) is image/*, or, when it says nothing or only "octet-stream", whose URL ends
in an image suffix. Its payload is what the browser got: warcio undoes chunked transfer
and gzip or Brotli content encodings. A record's ordinal is its place among all the file's
records, so a re-read finds it again.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from typing import IO, NamedTuple
from urllib.parse import urlsplit

import brotli
from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import BufferedReader
from warcio.recordloader import ArcWarcRecord

from memgen.shards import IMAGE_SUFFIXES

_UNTYPED = ("", "application/octet-stream", "binary/octet-stream")


class _BrotliDecompressor:
    """The decompressor warcio asks for (decompress(), unused_data) over Google's brotli:
    warcio's own, written for brotlipy, sets an attribute brotli's Decompressor has not
    (AttributeError: a br-encoded image failed the run), and without brotli installed the
    record was its compressed bytes (a decode_error reject)."""

    unused_data = None  # warcio reads on while a block gave no output and this is unset

    def __init__(self) -> None:
        self._decompressor = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._decompressor.process(data)


BufferedReader.DECOMPRESSORS["br"] = _BrotliDecompressor


class WarcImage(NamedTuple):
    ordinal: int
    url: str
    data: bytes
    size: int | None  # None: larger than max_bytes (data is its head), by how much unknown
    metadata: dict
    unusable: tuple[str, str] | None  # (error type, why): the crawl did not get the image whole


def warc_images(f: IO[bytes], max_bytes: int, head: int, skipped: Counter) -> Iterator[WarcImage]:
    """Each image record of the WARC stream `f`; the other records are counted in `skipped`
    by their type (an HTTP response by its Content-Type). Damage raises (warcio's
    ArchiveLoadFailed, a gzip error): the stream cannot be read past it."""
    for ordinal, record in enumerate(ArchiveIterator(f)):
        # warcio splits 5 fields from the right: version 2's filedesc header gives a URL of spaces.
        # Only that header tells: a version 1 record's URL may hold a space ("a b.jpg").
        if record.rec_type == "arc_header" and " " in _url(record):
            raise ValueError(f"record {ordinal} of the ARC file has a header of more than 5 fields "
                             "(ARC version 2, which is not read: only ARC version 1 and WARC)")
        kind = _image_type(record)
        if kind is None:
            skipped[_what(record)] += 1
            continue
        data = record.content_stream().read(max_bytes + 1)
        size = len(data) if len(data) <= max_bytes else None
        _check_whole(record, ordinal)
        status = record.http_headers.get_statuscode() if record.http_headers else None
        metadata = {"warc_date": _date(record),
                    "warc_record_id": record.rec_headers.get_header("WARC-Record-ID"),
                    "content_type": kind, "http_status": int(status) if status and status.isdigit() else None}
        yield WarcImage(ordinal, _url(record), data if size is not None else data[:head], size, metadata,
                        _unusable(record, status))


def _check_whole(record: ArcWarcRecord, ordinal: int) -> None:
    """EOFError when the file ends inside the record (a copy cut short): warcio gives what
    there is, and a cut image would go on as one."""
    raw = record.raw_stream
    while raw.read(1 << 16):  # the rest of a record too large to keep, as it was stored
        pass
    if getattr(raw, "limit", 0) > 0:
        raise EOFError(f"the file ends {raw.limit} bytes before the end of record {ordinal} "
                       f"({_url(record)}): it was cut short")


def _image_type(record: ArcWarcRecord) -> str | None:
    """The Content-Type of an image record (as sent, or the URL's guess), else None."""
    if record.rec_type not in ("response", "resource"):
        return None
    said = (record.http_headers.get_header("Content-Type") if record.http_headers
            else record.rec_headers.get_header("Content-Type")) or ""
    kind = said.split(";", 1)[0].strip().lower()
    if kind.startswith("image/"):
        return kind
    if kind in _UNTYPED and posixpath.splitext(urlsplit(_url(record)).path)[1].lower() in IMAGE_SUFFIXES:
        return kind or "(none)"
    return None


def _url(record: ArcWarcRecord) -> str:
    return record.rec_headers.get_header("uri" if record.format == "arc" else "WARC-Target-URI") or ""


def _date(record: ArcWarcRecord) -> str | None:
    """When the record was archived, as WARC-Date writes it (an ARC's 20050614070159 is
    2005-06-14T07:01:59Z); an ARC date of another form as it is."""
    if record.format != "arc":
        return record.rec_headers.get_header("WARC-Date")
    said = record.rec_headers.get_header("archive-date")
    if said and len(said) == 14 and said.isdigit():
        return f"{said[:4]}-{said[4:6]}-{said[6:8]}T{said[8:10]}:{said[10:12]}:{said[12:]}Z"
    return said


def _what(record: ArcWarcRecord) -> str:
    """How a record that is not an image is counted: its type, a response's with its Content-Type."""
    if record.rec_type != "response" or not record.http_headers:
        return record.rec_type
    kind = (record.http_headers.get_header("Content-Type") or "").split(";", 1)[0].strip().lower()
    return f"response {kind or '(no type)'}"


def _unusable(record: ArcWarcRecord, status: str | None) -> tuple[str, str] | None:
    """Why an image record holds no whole image: the crawler cut it short, or the server
    answered with other than the whole file (a 206 part, a 404 page typed image/*)."""
    cut = record.rec_headers.get_header("WARC-Truncated")
    if cut:
        return "truncated", f"the crawler cut it short (WARC-Truncated: {cut})"
    if status and (not status.startswith("2") or status == "206"):
        return "http_error", f"the crawl got HTTP {status} for it"
    return None
