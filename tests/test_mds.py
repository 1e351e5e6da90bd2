"""MosaicML Streaming's MDS shards, written by its own MDSWriter (the reference), read as a
table's rows are: the same columns, lists of images, rejects."""

from __future__ import annotations

import base64
import io
import json
import tracemalloc
from decimal import Decimal
from pathlib import Path

import brotli
import duckdb
import numpy as np
import pytest
from PIL import Image

from memgen.brotlistream import BrotliReader
from memgen.mdsfile import mds_shard
from memgen.pipelines.cli import main
from memgen.readers import PER_ROW, ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from memgen.shards import discover, shard_kind
from shardkit import encode, jpeg, make_image, write_mds

CONFIG = ReaderConfig()


def read(path: Path, config: ReaderConfig = CONFIG) -> list:
    return list(read_shard(Shard(0, str(path), shard_kind(str(path))), config))


def laion_rows(n: int) -> list[dict]:
    """Rows as MosaicML's diffusion repo converts LAION into MDS: img2dataset's fields, the
    image bytes under `jpg`."""
    return [{"jpg": jpeg(i), "caption": f"photo {i}", "url": f"https://site/{i}.jpg", "key": f"{i:09d}",
             "width": 160, "similarity": 0.25 + i / 8} for i in range(n)]


LAION = {"jpg": "bytes", "caption": "str", "url": "str", "key": "str", "width": "int32",
         "similarity": "float64"}


@pytest.mark.parametrize("compression", [None, "zstd", "gz", "bz2", "br", "snappy"])
def test_a_folder_of_mds_shards_is_read_sample_by_sample(tmp_path, compression):
    """Shards cut by size_limit, compressed whole or not; index.json is no shard."""
    out = write_mds(tmp_path / "mds", LAION, laion_rows(5), compression=compression, size_limit=12_000)
    shards = discover([str(out)])
    suffix = "" if compression is None else f".{compression}"
    assert [Path(s.uri).name for s in shards] == [f"shard.0000{n}.mds{suffix}" for n in range(len(shards))]
    assert len(shards) > 1 and {s.kind for s in shards} == {"mds"}
    items = [item for shard in shards for item in read_shard(shard, CONFIG)]
    assert [(i.data, i.caption, i.url, i.source.split("#")[1]) for i in items] == [
        (jpeg(i), f"photo {i}", f"https://site/{i}.jpg", f"{i:09d}") for i in range(5)]
    assert json.loads(items[2].metadata) == {"caption": "photo 2", "key": "000000002",
                                             "similarity": 0.5, "url": "https://site/2.jpg", "width": 160}
    second = list(read_shard(shards[1], CONFIG))
    assert [i.ordinal for i in second] == list(range(len(second)))  # a sample's place in its shard


def test_each_encoding_is_read_as_its_value(tmp_path):
    """jpeg and png columns are their images' bytes as stored; pil (raw pixels) becomes a PNG of
    the same pixels; numbers, text, json and ndarrays are metadata, a float32 as its shortest text;
    a pickled column is never unpickled and, binary, no metadata."""
    image = make_image(3, (40, 30))
    columns = {"image": "jpeg", "label": "int", "score": "float32", "tag": "str_int", "ratio": "str_float",
               "price": "str_decimal", "info": "json", "emb": "ndarray:float32:3", "mask": "ndarray",
               "counts": "uint16", "obj": "pkl"}
    row = {"image": jpeg(3), "label": 7, "score": np.float32(0.1), "tag": 42, "ratio": 0.5,
           "price": Decimal("1.10"), "info": {"a": [1, 2], "b": None},
           "emb": np.array([0.1, 0.2, 0.3], np.float32), "mask": np.arange(6, dtype=np.uint8).reshape(2, 3),
           "counts": np.uint16(9), "obj": {"pickled": True}}
    out = write_mds(tmp_path / "mds", columns, [row])
    [record] = read(out / "shard.00000.mds")
    assert record.data == jpeg(3)
    assert json.loads(record.metadata) == {
        "label": 7, "score": 0.1, "tag": 42, "ratio": 0.5, "price": "1.10", "info": {"a": [1, 2], "b": None},
        "emb": [0.1, 0.2, 0.3], "mask": [[0, 1, 2], [3, 4, 5]], "counts": 9}
    for encoding in ("pil", "png"):
        out = write_mds(tmp_path / encoding, {"image": encoding}, [{"image": image}])
        [record] = read(out / "shard.00000.mds")
        decoded = Image.open(io.BytesIO(record.data))
        assert decoded.format == "PNG" and np.array_equal(np.asarray(decoded), np.asarray(image))


def test_a_str_column_named_the_image_is_base64(tmp_path):
    """As a Parquet's text column named --image_column."""
    rows = [{"b64": base64.b64encode(jpeg(i)).decode(), "key": f"k{i}"} for i in range(2)]
    out = write_mds(tmp_path / "mds", {"b64": "str", "key": "str"}, rows)
    items = read(out / "shard.00000.mds", ReaderConfig(image_column="b64"))
    assert [(i.data, i.source.split("#")[1]) for i in items] == [(jpeg(0), "k0"), (jpeg(1), "k1")]


@pytest.mark.parametrize("encoding", ["list[jpeg]", "list[pil]", "jpeg_array"])
def test_a_sample_of_a_list_of_images_is_a_record_an_image(tmp_path, encoding):
    images = [make_image(i, (32, 24)) for i in range(3)]
    as_written = [encode(image) for image in images]
    rows = [{"images": images[:2] if encoding != "jpeg_array" else as_written[:2], "key": "a"},
            {"images": images[2:] if encoding != "jpeg_array" else as_written[2:], "key": "b"}]
    out = write_mds(tmp_path / "mds", {"images": encoding, "key": "str"}, rows)
    items = read(out / "shard.00000.mds", ReaderConfig(image_column="images"))
    assert [(type(i), i.source.split("#")[1], i.ordinal) for i in items] == [
        (Record, "a/0", 0), (Record, "a/1", 1), (Record, "b/0", PER_ROW)]
    pixels = [np.asarray(Image.open(io.BytesIO(i.data)).convert("RGB")) for i in items]
    if encoding == "list[pil]":  # lossless
        assert all(np.array_equal(p, np.asarray(image)) for p, image in zip(pixels, images, strict=True))
    else:
        assert [Image.open(io.BytesIO(i.data)).format for i in items] == ["JPEG"] * 3


def test_a_shard_cut_short_ends_with_a_reject_after_the_samples_before_it(tmp_path):
    path = write_mds(tmp_path / "mds", LAION, laion_rows(4)) / "shard.00000.mds"
    data = path.read_bytes()
    (tmp_path / "cut.mds").write_bytes(data[:-100])
    *records, damage = read(tmp_path / "cut.mds")
    assert [r.data for r in records] == [jpeg(i) for i in range(3)]
    assert (damage.error_type, damage.ordinal) == ("corrupt_shard", 3)
    assert damage.source == str(tmp_path / "cut.mds")
    assert damage.message == "samples from 3 on: EOFError: the file ends inside sample 3: it was cut short"
    (tmp_path / "no.mds").write_bytes(b"\x02\x00\x00\x00" + b"not an MDS shard at all" * 4)
    [reject] = read(tmp_path / "no.mds")
    assert (reject.error_type, reject.ordinal) == ("corrupt_shard", 0)
    assert "no MDS shard" in reject.message


def test_a_sample_that_does_not_decode_or_is_too_large_is_a_reject_of_its_own(tmp_path):
    """The offsets frame each sample: the samples after a damaged one are read."""
    rows = laion_rows(3)
    rows[2]["jpg"] = encode(make_image(2, (640, 480)))
    path = write_mds(tmp_path / "mds", LAION, rows) / "shard.00000.mds"
    columns, samples = mds_shard(io.BytesIO(path.read_bytes()), CONFIG.max_bytes)
    first = next(samples)
    data = bytearray(path.read_bytes())
    at = data.index(b"photo 0")
    sizes = 4 * sum(column.size is None for column in columns)  # sample 0's sizes of its text and bytes
    data[at - sizes: at] = b"\xff" * sizes
    (tmp_path / "damaged.mds").write_bytes(bytes(data))
    items = read(tmp_path / "damaged.mds", ReaderConfig(max_bytes=first.size + 1000))
    assert [(type(i), i.ordinal) for i in items] == [(Reject, 0), (Record, 1), (Reject, 2)]
    assert (items[0].error_type, items[0].source.split("#")[1]) == ("corrupt_sample", "000000000")
    assert "runs past the sample's end" in items[0].message
    assert items[2].error_type == "too_large" and items[2].message.startswith("a sample of ")
    assert items[2].data and items[1].data == jpeg(1)


def test_a_compressed_shard_cut_short_ends_with_a_reject_after_its_samples(tmp_path):
    """A Brotli or zstd stream that ends before its end says so (each read as it arrives)."""
    for compression in ("br", "zstd"):
        out = write_mds(tmp_path / compression, LAION, laion_rows(4), compression=compression)
        path = out / f"shard.00000.mds.{compression}"
        cut = tmp_path / f"cut.mds.{compression}"
        cut.write_bytes(path.read_bytes()[:-200])
        *records, damage = read(cut)
        assert [r.data for r in records] == [jpeg(i) for i in range(len(records))] and len(records) < 4
        assert (damage.error_type, damage.ordinal) == ("corrupt_shard", len(records))
        assert "cut short" in damage.message or "ended inside a frame" in damage.message, damage.message


def test_a_brotli_stream_is_inflated_in_bounded_pieces():
    """256 MB of zeros compress to a few hundred bytes: read 1 MB of them, not the whole."""
    compressed = brotli.compress(bytes(256 << 20), quality=1)
    tracemalloc.start()
    try:
        reader = BrotliReader(io.BytesIO(compressed))
        assert reader.read(1 << 20) == bytes(1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    with pytest.raises(EOFError, match="cut short"):
        BrotliReader(io.BytesIO(compressed[:-4])).read()


def test_a_snappy_shard_cut_short_is_one_reject(tmp_path):
    """MDSWriter's Snappy is one block of the whole file, not a stream: decompressed whole, so
    a cut one loses every sample (said in one reject)."""
    out = write_mds(tmp_path / "mds", LAION, laion_rows(2), compression="snappy")
    cut = tmp_path / "cut.mds.snappy"
    cut.write_bytes((out / "shard.00000.mds.snappy").read_bytes()[:-50])
    [reject] = read(cut)
    assert (reject.error_type, reject.ordinal) == ("corrupt_shard", 0)
    assert "not a Snappy block, or a damaged or cut one" in reject.message


def test_memorize_mds_shards_and_refuse_an_image_column_they_lack(tmp_path, capsys):
    """The run's column checks read the first shard's declared columns, as a Parquet's schema."""
    for copy in ("a", "b"):  # the same rows twice: exact duplicates
        write_mds(tmp_path / "mds" / copy, LAION, laion_rows(5), compression="zstd")
    memory = tmp_path / "m"
    assert main(["memorize", str(tmp_path / "mds"), "--memory", str(memory), "--image_column", "image"]) == 2
    skipped, refused = capsys.readouterr().err.splitlines()  # the index.json files are skipped
    assert skipped == f"{tmp_path / 'mds'}: skipped 2 files that are neither shards nor images (.json 2)"
    assert refused.startswith("memgen memorize: error: --image_column image: no such column")
    assert main(["memorize", str(tmp_path / "mds"), "--memory", str(memory), "--image_column", "url"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(  # its first sample's, read before the run
        "memgen memorize: error: --image_column url holds text in ")
    assert main(["memorize", str(tmp_path / "mds"), "--memory", str(memory)]) == 0
    kept = duckdb.sql(f"select caption, url from '{memory}/images/*.parquet' order by caption").fetchall()
    assert kept == [(f"photo {i}", f"https://site/{i}.jpg") for i in range(5)]
    [(copies,)] = duckdb.sql(f"select count(*) from '{memory}/duplicates/*.parquet'").fetchall()
    assert copies == 5
