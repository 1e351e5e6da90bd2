"""WARC files: a crawl's image records are records, its pages and requests are counted."""

from __future__ import annotations

import gzip
import io
import json
import logging
from pathlib import Path

import brotli
import duckdb
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from memgen.pipelines.cli import main
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from memgen.shards import shard_kind
from shardkit import jpeg

CONFIG = ReaderConfig()
TYPED = ("Content-Type", "image/jpeg")


def chunked(data: bytes, size: int = 1000) -> bytes:
    parts = [data[i: i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def write_warc(path: Path, records: list[tuple[str, str, bytes, list | None]]) -> Path:
    """records: (WARC type, URL, payload, HTTP headers: [status line, [(name, value)]] or None
    for a resource's Content-Type as [None, type])."""
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=path.name.endswith(".gz"))
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "memgen-test"}))
        for rec_type, url, payload, http in records:
            if rec_type == "resource":
                record = writer.create_warc_record(url, rec_type, payload=io.BytesIO(payload),
                                                   warc_content_type=http[1])
            else:
                headers = StatusAndHeaders(http[0], http[1], protocol="HTTP/1.1") if http else None
                record = writer.create_warc_record(url, rec_type, payload=io.BytesIO(payload),
                                                   http_headers=headers)
            writer.write_record(record)
    return path


def ok(content_type: str, *more: tuple[str, str]) -> list:
    return ["200 OK", [("Content-Type", content_type), *more]]


CRAWL = [
    ("request", "http://site/a.jpg", b"", ["GET /a.jpg HTTP/1.1", [("Host", "site")]]),
    ("response", "http://site/index.html", b"<html><img src=a.jpg></html>", ok("text/html; charset=utf-8")),
    ("response", "http://site/a.jpg", jpeg(1), ok("image/jpeg")),
    ("response", "http://site/b.png", chunked(gzip.compress(jpeg(2))),  # as the server sent it
     ok("image/png", ("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip"))),
    ("response", "http://site/c.webp?w=300", jpeg(3), ok("application/octet-stream")),  # typed by its URL
    ("response", "http://site/notes.txt", b"text", ok("application/octet-stream")),
    ("resource", "file:///scans/d.jpg", jpeg(4), [None, "image/jpeg"]),
    ("response", "http://site/a.jpg", jpeg(1), ok("image/jpeg")),  # fetched again: an exact duplicate
]


def read(path: Path, config: ReaderConfig = CONFIG) -> list:
    return list(read_shard(Shard(0, str(path), shard_kind(str(path))), config, first_read=True))


@pytest.mark.parametrize("name", ["crawl.warc.gz", "crawl.warc"])
def test_a_crawls_image_records_are_its_records(tmp_path, caplog, name):
    path = write_warc(tmp_path / name, CRAWL)
    with caplog.at_level(logging.WARNING, logger="memgen.readers"):
        items = read(path)
    assert all(isinstance(item, Record) for item in items), items
    assert [(i.url, i.data) for i in items] == [
        ("http://site/a.jpg", jpeg(1)), ("http://site/b.png", jpeg(2)), ("http://site/c.webp?w=300", jpeg(3)),
        ("file:///scans/d.jpg", jpeg(4)), ("http://site/a.jpg", jpeg(1))]
    assert [i.ordinal for i in items] == [3, 4, 5, 7, 8]  # among all records, the warcinfo first
    assert items[0].source == f"{path}#http://site/a.jpg" and items[-1].locator == "#http://site/a.jpg~2"
    meta = json.loads(items[1].metadata)
    assert meta["content_type"] == "image/png" and meta["http_status"] == 200
    assert meta["warc_record_id"].startswith("<urn:uuid:") and meta["warc_date"]
    assert json.loads(items[3].metadata)["http_status"] is None  # a resource: no HTTP answer
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{path}: skipped 4 records that are not images (request 1, response "
                    "application/octet-stream 1, response text/html 1, warcinfo 1)"], said
    assert read(path) == items


def test_an_answer_the_server_sent_brotli_encoded_is_its_image(tmp_path):
    """Content-Encoding: br (what browsers ask for first). warcio undoes it only where the
    brotli module imports: without it, the record was its compressed bytes, a decode_error."""
    headers = ok("image/jpeg", ("Content-Encoding", "br"))
    encoded = brotli.compress(jpeg(5))
    path = write_warc(tmp_path / "br.warc.gz", [("response", "http://site/e.jpg", encoded, headers)])
    [item] = read(path)
    assert (item.url, item.data) == ("http://site/e.jpg", jpeg(5))


def test_images_the_crawl_did_not_get_whole_are_rejects_with_their_url(tmp_path):
    big = jpeg(5, quality=100)
    path = write_warc(tmp_path / "bad.warc.gz", [
        ("response", "http://site/gone.jpg", b"<h1>404</h1>", ["404 Not Found", [TYPED]]),
        ("response", "http://site/part.jpg", jpeg(6)[:500], ["206 Partial Content", [TYPED]]),
        ("response", "http://site/big.jpg", big, ok("image/jpeg")),
        ("response", "http://site/fine.jpg", jpeg(7), ok("image/jpeg")),
    ])
    config = ReaderConfig(max_bytes=len(big) - 1, reject_data_cap=32)
    items = {i.source.rsplit("#", 1)[1]: i for i in read(path, config)}
    assert isinstance(items["http://site/fine.jpg"], Record)
    assert (items["http://site/gone.jpg"].error_type, items["http://site/gone.jpg"].message) == (
        "http_error", "the crawl got HTTP 404 for it")
    assert items["http://site/part.jpg"].error_type == "http_error"
    big_one = items["http://site/big.jpg"]
    assert (big_one.error_type, big_one.data) == ("too_large", big[:32])


def test_a_truncated_record_and_a_cut_file(tmp_path):
    path = tmp_path / "cut.warc"
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=False)
        http = StatusAndHeaders("200 OK", [TYPED], protocol="HTTP/1.1")
        record = writer.create_warc_record("http://site/t.jpg", "response", payload=io.BytesIO(jpeg(8)[:300]),
                                           http_headers=http)
        record.rec_headers.add_header("WARC-Truncated", "length")  # the crawler's size limit
        writer.write_record(record)
        for i in (1, 2):
            writer.write_record(writer.create_warc_record(
                f"http://site/{i}.jpg", "response", payload=io.BytesIO(jpeg(i)),
                http_headers=StatusAndHeaders("200 OK", [TYPED], protocol="HTTP/1.1")))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 400])  # the last record cut short
    truncated, first, cut = read(path)
    assert truncated.error_type == "truncated"
    assert truncated.message == "the crawler cut it short (WARC-Truncated: length)"
    assert isinstance(first, Record) and first.data == jpeg(1)
    assert isinstance(cut, Reject) and cut.error_type == "corrupt_shard" and cut.ordinal == 2
    assert cut.message.endswith("bytes before the end of record 2 (http://site/2.jpg): it was cut short")
    (tmp_path / "junk.warc").write_bytes(b"not a warc\r\n\r\n" * 10)
    [junk] = read(tmp_path / "junk.warc")
    assert junk.error_type == "corrupt_shard"


def test_memorize_a_crawl_beside_images(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_warc(inputs / "crawl.warc.gz", CRAWL)
    (inputs / "saved.jpg").write_bytes(jpeg(3))
    assert main(["memorize", str(inputs), "--memory", str(tmp_path / "m")]) == 0
    assert capsys.readouterr().err.count("skipped 4 records that are not images") == 1  # not again re-read
    memory = tmp_path / "m"
    images = duckdb.sql(f"select url from '{memory}/images/*.parquet' order by url").fetchall()
    [(duplicates,)] = duckdb.sql(f"select count(*) from '{memory}/duplicates/*.parquet'").fetchall()
    assert len(images) == 4 and duplicates == 2  # a.jpg fetched twice; c.webp saved beside
    assert ("http://site/a.jpg",) in images


@pytest.mark.parametrize("name, kind", [("a.warc.gz", "warc"), ("A.WARC", "warc"), ("a.warc.tar", "tar"),
                                        ("https://h/a.warc.gz?sig=1", "warc"), ("a.arc.gz", "warc"),
                                        ("IA-001.ARC", "warc")])
def test_warc_kind(name, kind):
    assert shard_kind(name) == kind


ARC_SPEC = b"URL IP-address Archive-date Content-type Archive-length"


def write_arc(path: Path, records: list[tuple[str, bytes]], version: bytes = b"1 0 InternetArchive",
              spec: bytes = ARC_SPEC, fields: bytes = b"") -> Path:
    """An ARC file (version 1, as the Internet Archive's format page lays it out, written by
    hand: warcio only reads ARC): a filedesc record, then each (url, HTTP answer) archived
    on 2005-06-14 07:01:59, each record gzipped alone in an .arc.gz as crawlers wrote them."""
    body = version + b"\n" + spec + b"\n"
    parts = [b"filedesc://%s 0.0.0.0 20050614070159 text/plain %s%d\n%s\n" % (path.name.encode(), fields,
                                                                              len(body), body)]
    for url, answer in records:
        kind = answer.split(b"Content-Type: ", 1)[1].split(b"\r\n", 1)[0]
        parts.append(b"%s 192.0.2.1 20050614070159 %s %s%d\n%s\n" % (url.encode(), kind, fields, len(answer),
                                                                        answer))
    gzipped = path.name.endswith(".gz")
    path.write_bytes(b"".join(gzip.compress(p) if gzipped else p for p in parts))
    return path


def answer(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return b"HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status, content_type, len(body), body)


@pytest.mark.parametrize("name", ["IA-2005.arc.gz", "IA-2005.arc"])
def test_an_arc_files_images_are_records_as_a_warcs(tmp_path, caplog, name):
    """ARC, the format before WARC (the Internet Archive's crawls, Common Crawl's to 2012)."""
    path = write_arc(tmp_path / name, [
        ("http://site/index.html", answer(b"200 OK", b"text/html", b"<html><img src=a.jpg></html>")),
        ("http://site/a.jpg", answer(b"200 OK", b"image/jpeg", jpeg(1))),
        ("http://site/gone.jpg", answer(b"404 Not Found", b"image/jpeg", b"<h1>404</h1>")),
        ("http://site/b.jpg", answer(b"200 OK", b"image/jpeg", jpeg(2)))])
    with caplog.at_level(logging.WARNING, logger="memgen.readers"):
        a, gone, b = read(path)
    assert [(i.url, i.data, i.ordinal) for i in (a, b)] == [("http://site/a.jpg", jpeg(1), 2),
                                                           ("http://site/b.jpg", jpeg(2), 4)]
    assert a.source == f"{path}#http://site/a.jpg"
    assert json.loads(a.metadata) == {"warc_date": "2005-06-14T07:01:59Z", "warc_record_id": None,
                                      "content_type": "image/jpeg", "http_status": 200}
    assert (gone.error_type, gone.source) == ("http_error", f"{path}#http://site/gone.jpg")
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: skipped 2 records that are not images (arc_header 1, response text/html 1)"]
    assert read(path) == [a, gone, b]
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 300])  # the last record cut short
    *_, cut = read(path)
    assert (cut.error_type, cut.ordinal) == ("corrupt_shard", 4)


def test_an_arc_file_of_version_2_is_refused_not_misread(tmp_path):
    """warcio splits 5 fields: version 2's 10 gave a URL with spaces and the file's name as a
    Content-Type."""
    spec = b"URL IP-address Archive-date Content-type Result-code Checksum Location Offset Filename " \
           b"Archive-length"
    image = ("http://site/a.jpg", answer(b"200 OK", b"image/jpeg", jpeg(1)))
    path = write_arc(tmp_path / "alexa.arc", [image], b"2 0 Alexa Internet", spec,
                     fields=b"200 - - 0 alexa.arc ")
    [refused] = read(path)
    assert refused.error_type == "corrupt_shard"
    assert "ARC version 2, which is not read" in refused.message


def test_memorize_reads_arc_files_in_a_folder(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_arc(inputs / "IA-2005.arc.gz", [("http://site/a.jpg", answer(b"200 OK", b"image/jpeg", jpeg(1)))])
    write_warc(inputs / "crawl.warc.gz", CRAWL)
    assert main(["memorize", str(inputs), "--memory", str(tmp_path / "m")]) == 0
    [(urls,)] = duckdb.sql(f"select count(*) from '{tmp_path}/m/images/*.parquet'").fetchall()
    [(copies,)] = duckdb.sql(f"select count(*) from '{tmp_path}/m/duplicates/*.parquet'").fetchall()
    assert (urls, copies) == (4, 2)  # a.jpg archived in 2005 and crawled again since


def test_an_arc_version_1_url_with_a_space_is_read_not_taken_for_version_2(tmp_path):
    """Only the filedesc header says the version: a record whose URL holds a space ended the
    shard as 'ARC version 2', losing the records after it."""
    path = write_arc(tmp_path / "IA-2005.arc.gz", [
        ("http://site/a b.jpg", answer(b"200 OK", b"image/jpeg", jpeg(1))),
        ("http://site/c.jpg", answer(b"200 OK", b"image/jpeg", jpeg(2)))])
    spaced, after = read(path)
    assert (spaced.url, spaced.data) == ("http://site/a b.jpg", jpeg(1))
    assert (after.url, after.data) == ("http://site/c.jpg", jpeg(2))
