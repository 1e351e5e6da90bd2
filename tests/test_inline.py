"""Images kept as base64 text in a Parquet column (--image_column names it)."""

from __future__ import annotations

import base64
import textwrap

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memgen.inline import NotBase64, decoded
from memgen.pipelines.cli import main
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from shardkit import jpeg

B64 = base64.b64encode(jpeg(1)).decode()


@pytest.mark.parametrize("text", [
    B64,
    f"data:image/jpeg;base64,{B64}",  # a data: URI, as pages inline images
    f"DATA:image/jpeg;charset=utf-8;base64,{B64}",
    "\n".join(textwrap.wrap(B64, 76)) + "\n",  # MIME's lines
    B64.rstrip("="),  # its padding left off
    base64.urlsafe_b64encode(jpeg(1)).decode(),
])
def test_every_form_of_base64_gives_the_bytes(text):
    assert decoded(text) == jpeg(1)


@pytest.mark.parametrize("text", ["http://x/a.jpg", "images/a.jpg", "a cat on a mat", "", "===="])
def test_text_that_is_not_base64_says_so(text):
    assert isinstance(decoded(text), NotBase64)


def test_a_base64_column_read_as_images(tmp_path):
    path = tmp_path / "inline.parquet"
    pq.write_table(pa.table({"image_b64": [B64, f"data:image/png;base64,{base64.b64encode(jpeg(2)).decode()}",
                                           None, "not base64!"],
                             "url": ["u0", "u1", "u2", "u3"]}), path)
    items = list(read_shard(Shard(0, str(path), "parquet"), ReaderConfig(image_column="image_b64")))
    assert [(type(i), i.url if isinstance(i, Record) else i.error_type) for i in items] == [
        (Record, "u0"), (Record, "u1"), (Reject, "empty"), (Reject, "not_base64")]
    assert [i.data for i in items[:2]] == [jpeg(1), jpeg(2)]
    assert items[3].message == "image_b64 holds text that is not base64: 'not base64!' (url 'u3')"


def test_memorize_a_base64_column_and_refuse_one_of_urls(tmp_path, capsys):
    pq.write_table(pa.table({"b64": [B64, base64.b64encode(jpeg(2)).decode(), B64]}), tmp_path / "a.parquet")
    assert main(["memorize", str(tmp_path / "a.parquet"), "--memory", str(tmp_path / "m"),
                 "--image_column", "b64"]) == 0
    [(images,)] = duckdb.sql(f"select count(*) from '{tmp_path}/m/images/*.parquet'").fetchall()
    assert images == 2  # the third is the first again
    capsys.readouterr()
    pq.write_table(pa.table({"url": ["http://x/a.jpg"]}), tmp_path / "urls.parquet")
    assert main(["memorize", str(tmp_path / "urls.parquet"), "--memory", str(tmp_path / "m2"),
                 "--image_column", "url"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--image_column url holds text in " in err
    assert err.strip().endswith("not base64 images (its first: 'http://x/a.jpg')")


def test_a_default_named_text_column_says_how_to_read_it_as_base64(tmp_path):
    pq.write_table(pa.table({"image": [B64], "url": ["u0"]}), tmp_path / "a.parquet")
    [reject] = read_shard(Shard(0, str(tmp_path / "a.parquet"), "parquet"), ReaderConfig())
    assert reject.error_type == "no_image_column"
    assert "; text is read as base64 images when named: --image_column image;" in reject.message


def test_memorize_of_a_default_named_base64_column_says_to_name_it(tmp_path, capsys):
    pq.write_table(pa.table({"image": [B64]}), tmp_path / "a.parquet")
    assert main(["memorize", str(tmp_path / "a.parquet"), "--memory", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "text is read as base64 images when named: --image_column image" in err
    assert "fetch the images first" not in err  # they are there
