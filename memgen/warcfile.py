"""Images in WARC files (ISO 28500), the web archive crawlers write (Heritrix, wget
--warc-file, Browsertrix, Common Crawl), read with warcio, streamed front to back.

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

from warcio.archiveiterator import ArchiveIterator
from warcio.recordloader import ArcWarcRecord

from memgen.shards import IMAGE_SUFFIXES

_UNTYPED = ("", "application/octet-stream", "binary/octet-stream")


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
        kind = _image_type(record)
        if kind is None:
            skipped[_what(record)] += 1
            continue
        data = record.content_stream().read(max_bytes + 1)
        size = len(data) if len(data) <= max_bytes else None
        _check_whole(record, ordinal)
        status = record.http_headers.get_statuscode() if record.http_headers else None
        metadata = {"warc_date": record.rec_headers.get_header("WARC-Date"),
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
    return record.rec_headers.get_header("WARC-Target-URI") or ""


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
