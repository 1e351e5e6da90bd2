"""Arrow IPC shards: Hugging Face `datasets`' save_to_disk and cache files (the stream format),
and Feather v2 / Arrow IPC files (the file format), written by `datasets` and by pyarrow's
own writers, read as a Parquet's rows are."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import duckdb
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from memgen.pipelines.cli import main
from memgen.readers import PER_ROW, ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from memgen.shards import discover, shard_kind
from shardkit import jpeg, make_image

CONFIG = ReaderConfig()
TABLE = pa.table({"key": [f"k{i}" for i in range(5)], "jpg": [jpeg(i) for i in range(5)],
                  "caption": [f"photo {i}" for i in range(5)], "width": [160] * 5})


def read(path: Path, config: ReaderConfig = CONFIG) -> list:
    return list(read_shard(Shard(0, str(path), shard_kind(str(path))), config))


def write_stream(path: Path, table: pa.Table, rows_a_batch: int = 2) -> Path:
    with pa.ipc.new_stream(path, table.schema) as writer:
        writer.write_table(table, max_chunksize=rows_a_batch)
    return path


def test_a_datasets_save_to_disk_folder_is_read_as_its_parquet_would_be(tmp_path, caplog):
    """`datasets` keeps an Image as {bytes, path} and its ClassLabel as an integer; the folder's
    state.json and dataset_info.json are no shards."""
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["cat", "dog"])})
    rows = {"image": [make_image(i) for i in range(4)], "text": [f"a photo {i}" for i in range(4)],
            "label": [0, 1, 0, 1]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "same.parquet"))
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        [shard] = discover([str(tmp_path / "saved")])
    assert (Path(shard.uri).name, shard.kind) == ("data-00000-of-00001.arrow", "arrow")
    assert caplog.messages == [
        f"{tmp_path / 'saved'}: skipped 2 files that are neither shards nor images (.json 2)"]
    items = read(Path(shard.uri))
    as_parquet = read(tmp_path / "same.parquet")
    assert [(i.data, i.ordinal, i.metadata) for i in items] == [
        (i.data, i.ordinal, i.metadata) for i in as_parquet]
    assert len(items) == 4 and all(isinstance(i, Record) for i in items)
    assert json.loads(items[1].metadata) == {"label": 1, "text": "a photo 1"}
    assert items[1].caption == "a photo 1"  # `text`, as datasets names a caption
    assert items[1].source == f"{shard.uri}#000000001"


@pytest.mark.parametrize("write", ["stream", "file", "feather_lz4", "feather_zstd"])
def test_pyarrows_streams_and_files_are_read_with_their_columns(tmp_path, write):
    """The file format (Feather v2, compressed buffers too) is read front to back as the stream it holds."""
    path = tmp_path / ("t.arrows" if write == "stream" else "t.feather")
    if write == "stream":
        write_stream(path, TABLE)
    elif write == "file":
        with pa.ipc.new_file(path, TABLE.schema) as writer:
            writer.write_table(TABLE, max_chunksize=2)
    else:
        feather.write_feather(TABLE, path, compression=write.removeprefix("feather_"), chunksize=2)
    items = read(path, ReaderConfig(key_column="key"))
    assert [(i.data, i.caption, i.source, i.ordinal) for i in items] == [
        (jpeg(i), f"photo {i}", f"{path}#k{i}", i) for i in range(5)]
    assert json.loads(items[0].metadata) == {"caption": "photo 0", "key": "k0", "width": 160}


def test_a_row_of_a_list_of_images_is_a_record_an_image(tmp_path):
    table = pa.table({"images": [[jpeg(1), jpeg(2)], [], [jpeg(3)]]})
    items = read(write_stream(tmp_path / "lists.arrow", table), ReaderConfig(image_column="images"))
    assert [(type(i), i.source.split("#")[1], i.ordinal) for i in items] == [
        (Record, "000000000/0", 0), (Record, "000000000/1", 1), (Reject, "000000001", PER_ROW),
        (Record, "000000002/0", 2 * PER_ROW)]
    assert items[2].error_type == "empty"


@pytest.mark.parametrize("cut", ["between_batches", "inside_a_batch"])
def test_a_stream_cut_short_ends_with_a_reject_after_the_rows_before_the_cut(tmp_path, cut):
    """pyarrow reads a stream cut between two batches as a shorter stream: its missing
    end-of-stream marker says it was cut."""
    data = write_stream(tmp_path / "whole.arrow", TABLE).read_bytes()
    whole = read(tmp_path / "whole.arrow")
    assert len(whole) == 5
    end = len(data) - 8 if cut == "between_batches" else len(data) - 100
    (tmp_path / "cut.arrow").write_bytes(data[:end])
    *records, damage = read(tmp_path / "cut.arrow")
    assert [r.data for r in records] == [jpeg(i) for i in range(len(records))]
    assert len(records) == (5 if cut == "between_batches" else 4)
    assert (damage.error_type, damage.source, damage.ordinal) == (
        "corrupt_shard", str(tmp_path / "cut.arrow"), len(records))
    assert damage.message.startswith(f"rows from {len(records)} on: ")
    if cut == "between_batches":
        assert "ends without its end-of-stream marker" in damage.message


def test_a_file_cut_after_its_stream_loses_nothing_and_other_bytes_are_a_reject(tmp_path):
    """The file format's footer (a schema and an index) follows the stream's end: a file cut
    in its footer holds every row. Bytes that are no Arrow IPC are one corrupt_shard reject."""
    path = tmp_path / "t.feather"
    feather.write_feather(TABLE, path, compression="uncompressed")
    data = path.read_bytes()
    (tmp_path / "cut.feather").write_bytes(data[:-12])
    assert [i.data for i in read(tmp_path / "cut.feather")] == [jpeg(i) for i in range(5)]
    (tmp_path / "no.arrow").write_bytes(b"not arrow at all, but long enough to be read as a message" * 4)
    [reject] = read(tmp_path / "no.arrow")
    assert (reject.error_type, reject.ordinal) == ("corrupt_shard", 0)
    assert reject.message.startswith("no Arrow IPC stream, or a damaged one: ArrowInvalid: ")
    feather.write_feather(TABLE.drop_columns("jpg"), tmp_path / "v1.feather", version=1)
    [reject] = read(tmp_path / "v1.feather")
    assert (reject.error_type, reject.message) == ("corrupt_shard", (
        "ValueError: a Feather v1 file (written by pyarrow before 0.17), which holds no Arrow IPC stream: "
        "write it again as Feather v2 (pyarrow.feather.write_feather)"))


def test_an_arrow_file_named_without_a_suffix_is_read_by_its_magic_and_one_named_as_an_image_is_said(
        tmp_path):
    table_folder = tmp_path / "hive"
    table_folder.mkdir()
    feather.write_feather(TABLE, table_folder / "000000_0")
    [shard] = discover([str(table_folder)])
    assert shard.kind == "arrow" and len(list(read_shard(shard, CONFIG))) == 5
    feather.write_feather(TABLE, tmp_path / "photo.jpg")
    [reject] = read(tmp_path / "photo.jpg")
    assert reject.error_type == "not_an_image" and "name does not end in .arrow" in reject.message


def test_memorize_arrow_shards_and_refuse_an_image_column_they_lack(tmp_path, capsys):
    folder = tmp_path / "cache"
    folder.mkdir()
    for shard in range(2):  # the same rows twice: exact duplicates
        write_stream(folder / f"photos-train-0000{shard}-of-00002.arrow", TABLE)
    memory = tmp_path / "m"
    assert main(["memorize", str(folder), "--memory", str(memory), "--image_column", "image"]) == 2
    assert capsys.readouterr().err.startswith("memgen memorize: error: --image_column image: no such column")
    assert main(["memorize", str(folder), "--memory", str(memory)]) == 0
    kept = duckdb.sql(f"select caption from '{memory}/images/*.parquet' order by caption").fetchall()
    assert kept == [(f"photo {i}",) for i in range(5)]
    [(copies,)] = duckdb.sql(f"select count(*) from '{memory}/duplicates/*.parquet'").fetchall()
    assert copies == 5
