"""Hugging Face ImageFolder: metadata.jsonl / .csv / .parquet beside a folder of images."""

from __future__ import annotations

import datetime
import decimal
import gc
import json
import pickle
import tracemalloc
import zipfile

import datasets
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import memgen.imagefolder as meta
from memgen.pipelines.cli import main
from memgen.readers import ReaderConfig, read_shard
from memgen.shards import discover, listing_digest
from shardkit import jpeg

ROWS = [{"file_name": "a.jpg", "text": "a tabby on a mat", "score": 0.9},
        {"file_name": "sub/b.jpg", "text": "a cat, asleep", "score": 0.5},
        {"file_name": "./sub/deep/c.png", "text": "c", "score": 0.25}]


def imagefolder(root, kind: str, rows: list[dict] = ROWS) -> None:
    """train/ with its images and one metadata file of `kind`, as `datasets` documents it."""
    train = root / "train"
    for n, row in enumerate(rows):
        (train / row["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (train / row["file_name"]).write_bytes(jpeg(n))
    if kind == "jsonl":
        (train / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "csv":
        (train / "metadata.csv").write_text("file_name,text,score\n" + "".join(
            f'{r["file_name"]},"{r["text"]}",{r["score"]}\n' for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), train / "metadata.parquet")


def records(root) -> dict[str, tuple]:
    """{path below train/: (caption, metadata)} of what memgen reads from the folder."""
    shards = discover([str(root)])
    items = [item for shard in shards for item in read_shard(shard, ReaderConfig())]
    return {item.source.split("/train/", 1)[1]: (item.caption, json.loads(item.metadata or "null"))
            for item in items}


def reference(root) -> dict[str, tuple]:
    """The same as `datasets` loads the folder (its `imagefolder` builder)."""
    loaded = datasets.load_dataset("imagefolder", data_dir=str(root), split="train",
                                   cache_dir=str(root.parent / "hf-cache"))
    loaded = loaded.cast_column("image", datasets.Image(decode=False))
    return {row["image"]["path"].split("/train/", 1)[1]: (row["text"], {k: row[k] for k in ("text", "score")})
            for row in loaded}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_each_image_gets_its_row_as_datasets_gives_it(tmp_path, kind):
    imagefolder(tmp_path / "data", kind)
    got = records(tmp_path / "data")
    assert got == reference(tmp_path / "data")
    assert set(got) == {"a.jpg", "sub/b.jpg", "sub/deep/c.png"}  # the metadata file is no shard


def test_an_images_own_caption_and_json_say_more_and_rows_it_lacks_are_no_loss(tmp_path, caplog):
    imagefolder(tmp_path / "data", "jsonl")
    train = tmp_path / "data" / "train"
    (train / "a.txt").write_text("its own caption")
    (train / "a.json").write_text('{"score": 1.0, "url": "http://x/a.jpg"}')
    (train / "unlisted.jpg").write_bytes(jpeg(9))  # a row of none
    with open(train / "metadata.jsonl", "a") as f:
        f.write("not json\n" + json.dumps({"text": "no file_name"}) + "\n")
    got = records(tmp_path / "data")
    own = {"score": 1.0, "url": "http://x/a.jpg", "text": "a tabby on a mat"}  # its .json's score wins
    assert got["a.jpg"] == ("its own caption", own)
    assert got["unlisted.jpg"] == (None, None)
    assert any("2 of its 5 rows name no image" in m for m in caplog.messages)


def test_the_nearest_metadata_file_up_an_images_folders_describes_it(tmp_path):
    imagefolder(tmp_path / "data", "jsonl")
    sub = tmp_path / "data" / "train" / "sub"
    (sub / "metadata.csv").write_text('file_name,text\nb.jpg,"nearer"\n')
    got = records(tmp_path / "data")
    assert got["sub/b.jpg"][0] == "nearer" and got["sub/deep/c.png"][0] is None  # sub's file names no c.png
    assert got["a.jpg"][0] == "a tabby on a mat"


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_dates_and_decimals_of_a_metadata_file_are_text(tmp_path, kind):
    """A CSV's 2024-01-02 is read as a date (typed as datasets reads it), a Parquet's decimal
    as a Decimal: neither is JSON, and the reader failed (TypeError), the shard lost."""
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    (train / "a.jpg").write_bytes(jpeg(1))
    if kind == "csv":
        (train / "metadata.csv").write_text("file_name,taken,price\na.jpg,2024-01-02,1.50\n")
        expected = {"taken": "2024-01-02", "price": 1.5}
    else:
        pq.write_table(pa.table({"file_name": ["a.jpg"], "taken": pa.array([datetime.date(2024, 1, 2)]),
                                 "price": pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2))}),
                       train / "metadata.parquet")
        expected = {"taken": "2024-01-02", "price": "1.50"}
    assert records(tmp_path / "data") == {"a.jpg": (None, expected)}


def test_a_changed_metadata_file_changes_the_listing(tmp_path):
    imagefolder(tmp_path / "data", "jsonl")
    before = listing_digest(discover([str(tmp_path / "data")]))
    (tmp_path / "data" / "train" / "metadata.jsonl").write_text(json.dumps(ROWS[0] | {"text": "new"}) + "\n")
    assert listing_digest(discover([str(tmp_path / "data")])) != before


def test_a_zipped_imagefolder(tmp_path):
    imagefolder(tmp_path / "data", "jsonl")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
        for path in sorted((tmp_path / "data").rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tmp_path / "data"))
    shards = discover([str(tmp_path / "data.zip")])
    got = {item.source.split("#train/", 1)[1]: item.caption for item in read_shard(shards[0], ReaderConfig())}
    assert got == {"a.jpg": "a tabby on a mat", "sub/b.jpg": "a cat, asleep", "sub/deep/c.png": "c"}


def test_memorize_an_imagefolder(tmp_path):
    imagefolder(tmp_path / "data", "csv")
    assert main(["memorize", str(tmp_path / "data"), "--memory", str(tmp_path / "m")]) == 0
    captions = duckdb.sql(f"select caption from '{tmp_path}/m/images/*.parquet' order by caption").fetchall()
    assert captions == [("a cat, asleep",), ("a tabby on a mat",), ("c",)]


def metadata_lines(n: int) -> bytes:
    """A diffusers-style metadata.jsonl of n rows: a file_name, a caption, two numbers."""
    return "\n".join(json.dumps({"file_name": f"train/{i:08d}.jpg", "text": f"a photo of a cat number {i} "
                                 "sitting on a mat in the sun", "width": 512, "aesthetic": 5.5})
                     for i in range(n)).encode()


def test_a_metadata_files_rows_are_held_in_little_more_than_its_bytes():
    """100,000 rows (13.8 MB) held as a dict took 61 MB; held as the file's bytes and an index
    of the names, 15 MB (benchmarks/README.md, section 11)."""
    meta.named_rows("warm/metadata.jsonl", metadata_lines(10))  # imports, pyarrow's first calls
    gc.collect()
    tracemalloc.start()
    try:
        data, arrow = metadata_lines(100_000), pa.total_allocated_bytes()
        rows = meta.named_rows("m/metadata.jsonl", data)
        size = len(data)
        del data
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - arrow
    finally:
        tracemalloc.stop()
    assert len(rows) == 100_000
    assert meta.row_in(rows, "m/metadata.jsonl", "m/train/00099999.jpg")["width"] == 512
    assert held <= size + 4_000_000, f"{held} bytes held for a file of {size}"  # 1.6 MB of index


AWKWARD = b"\n".join([
    b'{"file_name": "a.jpg", "text": "first"}',
    b'{"file_name": "./a.jpg", "text": "again"}',  # a name again: the first row is its row
    b'{"file_name": "sub//b.jpg", "text": "b", "n": [1, {"x": null}]}',
    b"   ",  # blank
    b'{"file_name": "c.jpg", "text": "c"}'])


@pytest.mark.parametrize("data", [AWKWARD, AWKWARD + b"\nnot json", AWKWARD.replace(b"\n", b"\r\n")],
                         ids=["pyarrow", "not-json", "crlf"])
@pytest.mark.parametrize("hashed", ["own", "all-collide"])
def test_each_name_finds_its_first_row_whatever_the_names_hashes(data, hashed, monkeypatch):
    """Read by pyarrow or (a line it refuses) by Python; a hash that names share (all of them
    here) gives each name its own row all the same, and none to a name that has none."""
    if hashed == "all-collide":
        monkeypatch.setattr(meta, "_name_hash", lambda name: 7)
    rows = meta.named_rows("m/metadata.jsonl", data)
    assert len(rows) == 3
    assert meta.row_in(rows, "m/metadata.jsonl", "m/a.jpg") == {"text": "first"}
    assert meta.row_in(rows, "m/metadata.jsonl", "m/sub/b.jpg") == {"text": "b", "n": [1, {"x": None}]}
    assert meta.row_in(rows, "m/metadata.jsonl", "m/c.jpg") == {"text": "c"}
    assert meta.row_in(rows, "m/metadata.jsonl", "m/d.jpg") is None


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_rows_sent_to_another_process_find_their_names_by_its_hashes(kind, monkeypatch):
    """str's hash is salted a process: rows pickled (to another worker) index their names anew."""
    if kind == "jsonl":
        data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    elif kind == "csv":
        data = ("file_name,text,score\n" + "".join(f'{r["file_name"]},"{r["text"]}",{r["score"]}\n'
                                                   for r in ROWS)).encode()
    else:
        table, out = pa.Table.from_pylist([r | {"thumb": b"\xff\xd8"} for r in ROWS]), pa.BufferOutputStream()
        pq.write_table(table, out)
        data = out.getvalue().to_pybytes()
    sent = pickle.dumps(meta.named_rows(f"m/metadata.{kind}", data))
    monkeypatch.setattr(meta, "_name_hash", lambda name: hash(name) ^ 0x5DEECE66D)  # another salt
    rows = pickle.loads(sent)
    name = f"m/metadata.{kind}"
    assert meta.row_in(rows, name, "m/sub/deep/c.png") == {"text": "c", "score": 0.25}
    assert meta.row_in(rows, name, "m/a.jpg") == {"text": "a tabby on a mat", "score": 0.9}


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_a_metadata_file_that_cannot_be_read_is_said_alike_loose_or_zipped(tmp_path, zipped, caplog):
    """Its images are read without its rows, and a warning says why (a zip's member was left
    out silently)."""
    imagefolder(tmp_path / "data", "jsonl")
    train = tmp_path / "data" / "train"
    (train / "metadata.jsonl").unlink()
    (train / "metadata.parquet").write_bytes(b"PAR1 not a table")
    root = tmp_path / "data"
    if zipped:
        with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root))
        root = tmp_path / "data.zip"
    shards = discover([str(root)])
    items = [item for shard in shards for item in read_shard(shard, ReaderConfig(), first_read=True)]
    assert len(items) == 3 and all(item.caption is None for item in items)
    assert [item for shard in shards for item in read_shard(shard, ReaderConfig())] == items  # a re-read
    said = [m for m in caplog.messages if "metadata.parquet: not read (" in m]
    assert len(said) == 1 and "read without its fields" in said[0]  # once, not again by the re-read


def test_a_zipped_metadata_file_over_max_bytes_is_said_once(tmp_path, capsys):
    """It was left out without a word (a loose one is read whole)."""
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as archive:
        archive.writestr("train/a.jpg", jpeg(1))
        archive.writestr("train/b.jpg", jpeg(2))
        row = json.dumps({"file_name": "a.jpg", "text": "x" * 5000}) + "\n"
        archive.writestr("train/metadata.jsonl", row)
    assert main(["memorize", str(tmp_path / "d.zip"), "--memory", str(tmp_path / "m"),
                 "--max_bytes", "4000"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "not read (" in line]
    assert said == [f"{tmp_path / 'd.zip'}#train/metadata.jsonl: not read ({len(row)} bytes > max_bytes "
                    "4000); the images it names are read without its fields"]
