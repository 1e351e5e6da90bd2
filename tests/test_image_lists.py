"""Parquet rows holding several images (`datasets`' List(Image()), a list of binary)."""

from __future__ import annotations

import json

import datasets
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memgen.pipelines.cli import main
from memgen.readers import PER_ROW, ReaderConfig, read_shard
from memgen.readers.columns import _hf_images
from memgen.records import Record, Reject, Shard
from shardkit import jpeg

CONFIG = ReaderConfig()
ROWS = {  # a conversation's pictures per row, as multi-image datasets (the_cauldron) keep them
    "images": [[jpeg(1), jpeg(2)], [], None, [jpeg(3), None, jpeg(1)]],
    "text": ["two pictures", "none", "null", "one again"],
}


def hf_lists(path, rows: dict = ROWS) -> str:
    """The Parquet `datasets` itself writes for a List(Image()) column (the reference)."""
    images = [None if row is None else [None if b is None else {"bytes": b, "path": None} for b in row]
              for row in rows["images"]]
    features = datasets.Features({"images": datasets.List(datasets.Image()),
                                  "text": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict({"images": images, "text": rows["text"]}, features=features)
    dataset.to_parquet(str(path))
    return str(path)


def read(path: str, config: ReaderConfig = CONFIG) -> list:
    return list(read_shard(Shard(0, path, "parquet"), config))


def test_each_image_of_a_rows_list_is_a_record_of_its_own(tmp_path):
    path = hf_lists(tmp_path / "train.parquet")
    items = read(path)
    # datasets' own reading of its file: each row's image bytes, in order
    undecoded = datasets.List(datasets.Image(decode=False))
    reference = datasets.Dataset.from_parquet(path).cast_column("images", undecoded)
    expected = [(row, n, image["bytes"]) for row, images in enumerate(reference["images"])
                for n, image in enumerate(images or []) if image is not None]
    records = [item for item in items if isinstance(item, Record)]
    assert [(r.ordinal // PER_ROW, r.ordinal % PER_ROW, r.data) for r in records] == expected
    assert [r.locator for r in records] == ["#000000000/0", "#000000000/1", "#000000003/0", "#000000003/2"]
    assert [json.loads(r.metadata)["text"] for r in records] == ["two pictures"] * 2 + ["one again"] * 2
    rejects = {r.source.split("#")[1]: (r.error_type, r.message) for r in items if isinstance(r, Reject)}
    assert rejects == {"000000001": ("empty", "images is an empty list"),
                       "000000002": ("empty", "images is null"),
                       "000000003/1": ("empty", "images[1] is null")}
    assert len({i.ordinal for i in items}) == len(items) and read(path) == items  # stable on a re-read


def test_a_list_of_binary_named_by_image_column(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"photos": pa.array([[jpeg(1)], [jpeg(2), jpeg(3)]], pa.list_(pa.binary())),
                             "url": ["u0", "u1"]}), path)
    [no_column] = read(str(path))  # not a default name, no `datasets` metadata: said, with the flag
    assert no_column.error_type == "no_image_column" and "['photos'] hold bytes" in no_column.message
    items = read(str(path), ReaderConfig(image_column="photos"))
    assert [(i.data, i.url) for i in items] == [(jpeg(1), "u0"), (jpeg(2), "u1"), (jpeg(3), "u1")]


@pytest.mark.parametrize("feature", [{"_type": "Sequence", "feature": {"_type": "Image"}},  # datasets 2-3
                                     {"_type": "List", "feature": {"_type": "Image"}},  # datasets 4-
                                     [{"_type": "Image"}]])  # a list literal, as older ones wrote it
def test_every_form_datasets_declares_a_list_of_images_in(feature):
    schema = pa.schema([("pictures", pa.list_(pa.binary()))]).with_metadata(
        {"huggingface": json.dumps({"info": {"features": {"pictures": feature}}})})
    assert _hf_images(schema) == ["pictures"]


def test_a_list_of_lists_is_not_images():
    schema = pa.schema([("nested", pa.list_(pa.list_(pa.binary())))]).with_metadata(
        {"huggingface": json.dumps({"info": {"features": {"nested": [[{"_type": "Image"}]]}}})})
    assert _hf_images(schema) == []


def test_memorize_a_dataset_of_image_lists(tmp_path):
    path = hf_lists(tmp_path / "train.parquet")
    assert main(["memorize", path, "--memory", str(tmp_path / "m")]) == 0
    memory = tmp_path / "m"
    images = duckdb.sql(f"select source from '{memory}/images/*.parquet' order by source").fetchall()
    [(duplicate, of)] = duckdb.sql(f"select d.source, i.source from '{memory}/duplicates/*.parquet' d "
                                   f"join '{memory}/images/*.parquet' i using (image_id)").fetchall()
    assert [s.split("#")[1] for (s,) in images] == ["000000000/0", "000000000/1", "000000003/0"]
    assert (duplicate.split("#")[1], of.split("#")[1]) == ("000000003/2", "000000000/0")  # jpeg(1) again
    [(rejects,)] = duckdb.sql(f"select count(*) from '{memory}/rejects/*.parquet'").fetchall()
    assert rejects == 3


def test_a_key_that_is_another_rows_image_locator_gets_a_source_of_its_own(tmp_path):
    """A row `a` of two images is a/0 and a/1: a row keyed "a/1" before it, or "b/0" after a row
    `b`, had the same source as one of them (empty lists are rejects keyed by the row's key)."""
    path = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"key": ["a/1", "a", "b", "b/0"],
                             "images": pa.array([[], [jpeg(1), jpeg(2)], [jpeg(3), jpeg(4)], []],
                                                pa.list_(pa.binary()))}), path)
    items = read(str(path), ReaderConfig(image_column="images"))
    assert [i.source.split("#")[1] for i in items] == ["a/1", "a~2/0", "a~2/1", "b/0", "b/1", "b/0~2"]
    assert [type(i).__name__ for i in items] == ["Reject", "Record", "Record", "Record", "Record", "Reject"]
    assert read(str(path), ReaderConfig(image_column="images")) == items  # the same sources on a re-read


def test_a_row_past_per_row_images_has_its_reject_in_an_ordinal_of_its_own(tmp_path):
    """The too_many_images reject took the ordinal of the row's last image read: materialize,
    which finds rejects by (shard, ordinal), kept one of the two. A row of PER_ROW fits whole."""
    path = tmp_path / "many.parquet"
    images = [[bytes([n % 251]) for n in range(size)] for size in (PER_ROW + 1, PER_ROW)]
    pq.write_table(pa.table({"key": ["big", "full"], "images": pa.array(images, pa.list_(pa.binary()))}),
                   path)
    items = read(str(path), ReaderConfig(image_column="images"))
    assert len({i.ordinal for i in items}) == len(items) == 2 * PER_ROW
    [reject] = [i for i in items if isinstance(i, Reject)]
    assert (reject.error_type, reject.ordinal, reject.source) == ("too_many_images", PER_ROW - 1,
                                                                  f"{path}#big/{PER_ROW - 1}")
    assert f"{PER_ROW + 1} images in the row's images" in reject.message
    records = [i for i in items if isinstance(i, Record)]
    assert [r.data for r in records] == images[0][: PER_ROW - 1] + images[1]
    assert len({i.source for i in items}) == len(items)
