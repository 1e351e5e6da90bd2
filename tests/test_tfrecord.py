"""TFRecord files of tf.train.Example records: img2dataset's `tfrecord` output and TensorFlow
datasets' shards. Written by the `tfrecord` package (its own example_pb2 and CRC-32C), an
independent writer: TensorFlow itself is too large to install for tests."""

from __future__ import annotations

import gzip
import json
import logging
import struct
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tfrecord
from PIL import Image

from memgen.pipelines.cli import main
from memgen.readers import PER_ROW, ReaderConfig, read_other_set, read_shard
from memgen.records import Record, Reject, Shard
from memgen.shards import compression, discover, shard_kind, split_source
from shardkit import encode, jpeg, make_image, read_as_reference

CONFIG = ReaderConfig()


def write_examples(path: Path, examples: list[dict]) -> Path:
    """examples: {name: (value, "byte" | "int" | "float")}, as the tfrecord package takes them."""
    writer = tfrecord.TFRecordWriter(str(path))
    for example in examples:
        writer.write(example)
    writer.close()
    return path


def write_records(path: Path, records: list[bytes]) -> Path:
    """Records framed as TFRecord frames them (the tfrecord package's CRC), whatever they hold."""
    with open(path, "wb") as f:
        for record in records:
            length = struct.pack("<Q", len(record))
            f.write(length + tfrecord.TFRecordWriter.masked_crc(length) + record
                    + tfrecord.TFRecordWriter.masked_crc(record))
    return path


def img2dataset_example(i: int, caption: str) -> dict:
    """A sample as img2dataset's TFRecordSampleWriter writes it: key, the image under its
    encode format, txt, then each metadata field by its Python type."""
    return {"key": (f"{i:09d}".encode(), "byte"), "jpg": (jpeg(i), "byte"), "txt": (caption.encode(), "byte"),
            "url": (f"http://site/{i}.jpg".encode(), "byte"), "caption": (caption.encode(), "byte"),
            "width": (160, "int"), "height": (120, "int"), "status": (b"success", "byte"),
            "sha256": (b"ab" * 32, "byte")}


def read(path: Path, config: ReaderConfig = CONFIG) -> list:
    return list(read_shard(Shard(0, str(path), shard_kind(str(path))), config))


def test_img2dataset_tfrecord_output_is_read_as_its_tar_output(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    write_examples(out / "00000.tfrecord", [img2dataset_example(i, f"cat {i}") for i in range(3)])
    pq.write_table(pa.table({"url": ["http://site/0.jpg"]}), out / "00000.parquet")  # its metadata beside
    (out / "00000_stats.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        [shard] = discover([str(out)])
    assert (shard.uri, shard.kind) == (str(out / "00000.tfrecord"), "tfrecord")
    assert caplog.messages == [f"{out}: skipped 2 files that are neither shards nor images"
                               " (.json 1, parquet beside its tar, TFRecord or folder 1)"]  # not "its tar"
    items = read(out / "00000.tfrecord")
    assert [(i.data, i.caption, i.url, i.ordinal) for i in items] == [
        (jpeg(i), f"cat {i}", f"http://site/{i}.jpg", i * PER_ROW) for i in range(3)]
    assert items[1].source == f"{out / '00000.tfrecord'}#000000001"
    assert json.loads(items[1].metadata) == {
        "key": "000000001", "txt": "cat 1", "url": "http://site/1.jpg", "caption": "cat 1", "width": 160,
        "height": 120, "status": "success", "sha256": "ab" * 32}
    assert read(out / "00000.tfrecord") == items  # the re-read that writes the images finds them again


@pytest.mark.parametrize("name", ["flowers-train.tfrecord-00000-of-00002", "shard.tfrecord.gz"])
def test_tensorflow_datasets_shards_and_gzip_files(tmp_path, name):
    """TFDS names shards after their place; TensorFlow's GZIP option compresses the whole file."""
    examples = [{"image/encoded": (jpeg(i), "byte"), "image/class/label": (i % 2, "int"),
                 "image/filename": (f"{i}.jpg".encode(), "byte"), "score": ([0.1, 0.25], "float")}
                for i in range(2)]
    path = write_examples(tmp_path / "plain.tfrecord", examples)
    if name.endswith(".gz"):
        (tmp_path / name).write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        assert compression(str(tmp_path / name)) == "gzip"
    else:
        path.rename(tmp_path / name)
    path = tmp_path / name
    assert shard_kind(str(path)) == "tfrecord" and [s.uri for s in discover([str(tmp_path)])] == [str(path)]
    first, second = read(path)
    assert (first.data, second.data, first.caption, first.url) == (jpeg(0), jpeg(1), None, None)
    assert second.source == f"{path}#1.jpg"  # no key feature: its image/filename
    assert json.loads(second.metadata) == {"image/class/label": 1, "image/filename": "1.jpg",
                                           "score": [0.1, 0.25]}


def test_examples_without_a_usable_image_are_rejects_and_several_are_records(tmp_path):
    big = jpeg(9, quality=100)
    path = write_examples(tmp_path / "mixed.tfrecord", [
        {"key": (b"none", "byte"), "label": (3, "int")},
        {"key": (b"empty", "byte"), "jpg": ([], "byte")},
        {"key": (b"pixels", "byte"), "image": ([1, 2, 3], "int")},
        {"key": (b"two", "byte"), "jpg": ([jpeg(1), jpeg(2)], "byte")},
        {"key": (b"big", "byte"), "jpg": (big, "byte")},
        {"key": (b"fine", "byte"), "jpg": (jpeg(3), "byte")},
    ])
    items = read(path, ReaderConfig(max_bytes=len(big) - 1))
    said = {i.source.rsplit("#", 1)[1]: i for i in items}
    # an Example too large to read is named by its place: its key is inside it
    assert list(said) == ["none", "empty", "pixels", "two/0", "two/1", "000000004", "fine"]
    assert said["none"].error_type == "no_image" and "label" in said["none"].message
    assert said["empty"].error_type == "empty"
    assert said["pixels"].error_type == "no_image" and "integers" in said["pixels"].message
    assert [said[k].data for k in ("two/0", "two/1", "fine")] == [jpeg(1), jpeg(2), jpeg(3)]
    assert [said[k].ordinal for k in ("two/0", "two/1")] == [3 * PER_ROW, 3 * PER_ROW + 1]
    assert said["000000004"].error_type == "too_large" and said["000000004"].ordinal == 4 * PER_ROW
    assert "label" in said["none"].message and "--image_column" not in said["none"].message  # no bytes
    config = ReaderConfig(image_column="image")  # named: an Example without it says so, as a Parquet does
    named = [i.error_type for i in read(path, config)][:3]
    assert named == ["no_image_column", "no_image_column", "no_image"]


def test_an_image_under_a_name_not_guessed_is_read_when_named_and_said_when_not(tmp_path):
    """TensorFlow's TFRecord tutorial names the image `image_raw`: unnamed, each Example is a
    reject that names the flag and the features holding bytes."""
    path = write_examples(tmp_path / "tutorial.tfrecord", [
        {"image_raw": (jpeg(i), "byte"), "mask": (b"\xff\x00", "byte"), "label": (i, "int"),
         "name": (b"cat", "byte")} for i in range(2)])
    first, _ = read(path)
    assert first.error_type == "no_image"
    assert "binary features image_raw, mask: name the image one with --image_column" in first.message
    named = read(path, ReaderConfig(image_column="image_raw"))
    assert [(r.data, json.loads(r.metadata)) for r in named] == [
        (jpeg(i), {"label": i, "name": "cat"}) for i in range(2)]  # a binary mask is not metadata


def test_the_image_guessed_is_the_first_default_name_holding_bytes(tmp_path):
    """`image` of integers (a shape, pixels) beside `image/encoded`: every Example was a reject."""
    path = write_examples(tmp_path / "both.tfrecord", [
        {"image": ([120, 160, 3], "int"), "image/encoded": (jpeg(0), "byte")},
        {"image": ([1, 2], "int")}])
    record, pixels = read(path)
    assert record.data == jpeg(0) and json.loads(record.metadata) == {"image": [120, 160, 3]}
    assert pixels.error_type == "no_image" and "its image feature holds 2 integers" in pixels.message


def test_a_reference_tfrecord_lacking_the_memorys_image_feature_is_read_by_the_default_names(tmp_path):
    """A memory made with --image_column image_raw read img2dataset's TFRecords (`jpg`) as
    evaluate's --reference: every Example a reject, none compared. A
    split named as the memory's data is still read by the memory's feature."""
    write_examples(tmp_path / "img2dataset.tfrecord", [img2dataset_example(1, "c")])
    write_examples(tmp_path / "split.tfrecord", [{"image_raw": (jpeg(2), "byte"), "jpg": (jpeg(3), "byte")}])
    other, split = discover([str(tmp_path / "img2dataset.tfrecord"), str(tmp_path / "split.tfrecord")])
    reader = ReaderConfig(image_column="image_raw")
    for shard, data in ((other, jpeg(1)), (split, jpeg(2))):
        assert read_as_reference(shard, reader) == ([data], [data])


def test_a_reference_whose_first_records_are_no_examples_is_read_by_the_default_names(tmp_path):
    """Only a first no_image_column reject turned the fallback on: the Examples after a first
    record that is no Example were rejects too, none compared."""
    junk = b"\xff\xfe not an Example, not an image"
    path = write_records(tmp_path / "junk_first.tfrecord",
                         [junk, tfrecord.TFRecordWriter.serialize_tf_example({"jpg": (jpeg(1), "byte")})])
    shard, = discover([str(path)])
    reader = ReaderConfig(image_column="image_raw")
    junk_first, image = read_other_set(shard, reader)
    assert (junk_first.error_type, image.data) == ("not_an_example", jpeg(1))  # the reject said still, once
    assert read_as_reference(shard, reader)[1] == [jpeg(1)]  # report.html's figure alike


def test_a_record_that_is_no_example_is_a_reject_and_the_records_after_it_are_read(tmp_path):
    """Its framing checks, so the file goes on: it ended the shard, the records after it uncounted."""
    example = tfrecord.TFRecordWriter.serialize_tf_example
    junk = b"\xff\xfe not an Example, not an image"
    path = write_records(tmp_path / "raw.tfrecord", [example({"jpg": (jpeg(0), "byte")}), junk,
                                                     example({"jpg": (jpeg(2), "byte")})])
    first, raw, last = read(path)
    assert (first.data, last.data, last.ordinal) == (jpeg(0), jpeg(2), 2 * PER_ROW)
    assert (raw.error_type, raw.ordinal, raw.n_bytes, raw.data) == ("not_an_example", PER_ROW, len(junk),
                                                                    junk)  # its bytes, to see what it is
    assert raw.source == f"{path}#000000001" and "record 1 is no tf.train.Example" in raw.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_a_record_of_an_images_bytes_is_that_image(tmp_path, fmt):
    """tf.io.TFRecordWriter(path).write(open("a.jpg", "rb").read()) writes a record of the image
    alone, no Example: each was a not_an_example reject."""
    image = encode(make_image(5), fmt)
    path = write_records(tmp_path / "images.tfrecord", [image, jpeg(1)])
    first, second = read(path)
    assert (first.data, first.ordinal, first.source, first.caption) == (image, 0, f"{path}#000000000", None)
    assert (second.data, second.ordinal) == (jpeg(1), PER_ROW)
    assert first.metadata is None  # none, as an image file's without NAME.json (was "{}")


def test_an_example_over_max_bytes_keeps_its_head_as_a_tars_member_does(tmp_path):
    """Its reject kept no bytes to see what it was."""
    big = tfrecord.TFRecordWriter.serialize_tf_example({"jpg": (jpeg(0) * 20, "byte")})
    path = write_records(tmp_path / "big.tfrecord", [big, jpeg(1)])
    reject, after = read(path, ReaderConfig(max_bytes=len(big) - 1, reject_data_cap=100))
    assert (reject.error_type, reject.n_bytes, reject.data) == ("too_large", len(big), big[:100])
    assert after.data == jpeg(1)  # the rest of the big one skipped, its sum with it


def test_a_hive_partition_is_in_the_metadata_of_examples_and_image_records(tmp_path):
    """A table's `lang=en/` folder: as a tar's samples and a Parquet's rows have it."""
    (tmp_path / "table" / "lang=en").mkdir(parents=True)
    write_records(tmp_path / "table" / "lang=en" / "part.tfrecord", [
        tfrecord.TFRecordWriter.serialize_tf_example({"jpg": (jpeg(0), "byte"), "lang": (b"fr", "byte")}),
        jpeg(1)])
    shard, = discover([str(tmp_path / "table")])
    example, image = read_shard(shard, CONFIG)
    assert [json.loads(r.metadata) for r in (example, image)] == [{"lang": "en"}] * 2  # the partition wins


def write_clips(path: Path, clips: list[tuple[dict, dict]]) -> Path:
    """SequenceExamples (context, feature lists), as the tfrecord package writes them."""
    writer = tfrecord.TFRecordWriter(str(path))
    for context, lists in clips:
        writer.write(context, lists)
    writer.close()
    return path


def media_sequence(media_id: str, frames: list[bytes], label: str = "cat") -> tuple[dict, dict]:
    """A video clip as MediaPipe's MediaSequence stores it: the clip's fields in the context,
    a frame a step of `image/encoded`, its time in `image/timestamp` (microseconds), and an
    audio stream's steps, as many or not as the frames."""
    return ({"clip/media_id": (media_id.encode(), "byte"), "clip/label/string": (label.encode(), "byte")},
            {"image/encoded": (frames, "byte"),
             "image/timestamp": ([n * 40_000 for n in range(len(frames))], "int"),
             "audio/feature/floats": ([[0.5, 0.25]] * (len(frames) + 3), "float")})


def test_a_video_clips_frames_are_records_each_with_its_steps_fields(tmp_path):
    """A SequenceExample's frames (MediaPipe MediaSequence, DeepMind's video datasets) were
    one no_image reject a clip: its context alone was read."""
    path = write_clips(tmp_path / "clips.tfrecord", [media_sequence("v1", [jpeg(1), jpeg(2), jpeg(3)], "dog"),
                                                     media_sequence("v2", [jpeg(4)])])
    items = read(path)
    assert [(i.data, i.source, i.ordinal) for i in items] == [  # keyed by MediaSequence's clip/media_id
        (jpeg(1), f"{path}#v1/0", 0), (jpeg(2), f"{path}#v1/1", 1),
        (jpeg(3), f"{path}#v1/2", 2), (jpeg(4), f"{path}#v2", PER_ROW)]
    assert [json.loads(i.metadata) for i in items] == [  # audio's steps are another stream's: left out
        {"clip/media_id": "v1", "clip/label/string": "dog", "image/timestamp": 0},
        {"clip/media_id": "v1", "clip/label/string": "dog", "image/timestamp": 40_000},
        {"clip/media_id": "v1", "clip/label/string": "dog", "image/timestamp": 80_000},
        {"clip/media_id": "v2", "clip/label/string": "cat", "image/timestamp": 0}]
    assert read(path, ReaderConfig(key_column="clip/label/string"))[2].source == f"{path}#dog/2"


def test_frames_under_a_name_not_guessed_are_read_when_named_and_said_when_not(tmp_path):
    path = write_clips(tmp_path / "video.tfrecord", [
        ({"key": (b"clip", "byte")}, {"frames": ([jpeg(1), jpeg(2)], "byte"), "t": ([0, 1], "int")}),
        ({"key": (b"poster", "byte"), "jpg": (jpeg(3), "byte")}, {"frames": ([jpeg(4)], "byte")})])
    clip, poster = read(path)
    assert clip.error_type == "no_image" and clip.source.endswith("#clip")
    assert clip.message == (
        "no image feature (jpg, image, img, png, webp, image_bytes, bytes, image/encoded); binary features "
        "frames: name the image one with --image_column; a tf.train.SequenceExample; its context's features: "
        "key; its feature lists: frames, t")
    assert (poster.data, poster.source) == (jpeg(3), f"{path}#poster")  # its context's image
    named = read(path, ReaderConfig(image_column="frames"))
    assert [(i.data, i.source, json.loads(i.metadata)) for i in named] == [
        (jpeg(1), f"{path}#clip/0", {"key": "clip", "t": 0}),
        (jpeg(2), f"{path}#clip/1", {"key": "clip", "t": 1}),
        (jpeg(4), f"{path}#poster", {"key": "poster"})]  # its context's jpg is no text: left out


def test_a_frame_step_without_a_value_keeps_its_place_as_an_empty_image(tmp_path):
    path = write_clips(tmp_path / "gap.tfrecord", [
        ({}, {"image/encoded": ([[jpeg(1)], [], [jpeg(2), jpeg(3)]], "byte"), "n": ([0, 1, 2], "int")})])
    items = read(path)
    assert [(i.data, i.source.rsplit("#")[1], json.loads(i.metadata)) for i in items] == [
        (jpeg(1), "000000000/0", {"n": 0}), (b"", "000000000/1", {"n": 1}),
        (jpeg(2), "000000000/2", {"n": 2}), (jpeg(3), "000000000/3", {"n": 2})]


def test_memorize_dedups_a_clips_frames_and_refuses_frames_it_cannot_name(tmp_path, capsys):
    """Consecutive frames of a clip differ by a little: near duplicates of the first."""
    still = make_image(7, (320, 240))
    frames = [encode(Image.eval(still, lambda v, d=d: min(255, v + d)), quality=90 - d) for d in range(4)]
    path = write_clips(tmp_path / "clips.tfrecord",
                       [media_sequence("v1", frames), media_sequence("v2", [jpeg(9)])])
    assert main(["memorize", str(path), "--memory", str(tmp_path / "m")]) == 0
    kept = duckdb.sql(f"select source from '{tmp_path}/m/images/*.parquet' order by source").fetchall()
    assert kept == [(f"{path}#v1/0",), (f"{path}#v2",)]
    near = duckdb.sql(f"select source, kind from '{tmp_path}/m/duplicates/*.parquet' order by 1").fetchall()
    assert near == [(f"{path}#v1/{n}", "near") for n in (1, 2, 3)]
    clip = ({"key": (b"c", "byte")}, {"frames": ([jpeg(1)], "byte")})
    unnamed = write_clips(tmp_path / "video.tfrecord", [clip])
    assert main(["memorize", str(unnamed), "--memory", str(tmp_path / "m2")]) == 2
    assert "binary features frames: name the image one with --image_column" in capsys.readouterr().err
    assert main(["memorize", str(unnamed), "--memory", str(tmp_path / "m2"), "--image_column", "frame"]) == 2
    assert capsys.readouterr().err.endswith(
        f"--image_column frame: no such column in {unnamed} (its features: key; its feature lists: frames)\n")
    assert main(["memorize", str(unnamed), "--memory", str(tmp_path / "m2"), "--image_column", "frames"]) == 0


def test_a_tfrecord_read_as_a_file_is_said_to_be_one(tmp_path):
    """A TFRecord whose kind its name does not say, read as a file (over http(s), where its
    first bytes are not asked before the run): "Pillow cannot identify" said nothing of what
    it is."""
    path = write_examples(tmp_path / "train-00000-of-01024", [img2dataset_example(0, "c")])
    for config in (CONFIG, ReaderConfig(max_bytes=100)):
        (item,) = read(path, config)
        assert (item.error_type, item.n_bytes) == ("not_an_image", path.stat().st_size)
        assert item.message == ("TFRecord data in a file whose name does not end in .tfrecord, which is read "
                                "as one image: rename it to read its records")
    assert read(path.rename(tmp_path / "train-00000-of-01024.tfrecord"))[0].data == jpeg(0)


def test_tensorflows_imagenet_shards_named_without_a_suffix_are_read(tmp_path, capsys):
    """TensorFlow's ImageNet TFRecords are train-00000-of-01024 (its TPU tutorials' too): each
    was one image that Pillow could not identify, then a reject that said to rename it; in
    a folder they were skipped. Their first bytes say what they are."""
    data = tmp_path / "imagenet"
    data.mkdir()
    for n in range(2):
        write_examples(data / f"train-0000{n}-of-00002", [
            {"image/encoded": (jpeg(10 * n + i), "byte"), "image/class/label": (i, "int")} for i in range(3)])
    (data / "photo-1-of-2").write_bytes(jpeg(7))  # a name alike, an image: read as one
    shards = discover([str(data)])
    assert [(s.uri.rsplit("/", 1)[1], s.kind) for s in shards] == [
        ("photo-1-of-2", "file"), ("train-00000-of-00002", "tfrecord"), ("train-00001-of-00002", "tfrecord")]
    second = list(read_shard(shards[2], CONFIG))[1]
    assert second.data == jpeg(11) and split_source(second.source) == (shards[2].uri, "000000001")
    memory = tmp_path / "m"
    assert main(["memorize", str(data), "--memory", str(memory)]) == 0
    [(images,)] = duckdb.sql(f"select count(*) from '{memory}/images/*.parquet'").fetchall()
    assert images == 7


def test_damage_ends_the_shard_after_the_records_before_it(tmp_path):
    path = write_examples(tmp_path / "d.tfrecord", [img2dataset_example(i, "c") for i in range(3)])
    whole = path.read_bytes()
    second = whole.index(jpeg(1)) + 100
    path.write_bytes(whole[:second] + bytes([whole[second] ^ 0xFF]) + whole[second + 1:])
    first, damaged = read(path)
    assert isinstance(first, Record) and first.data == jpeg(0)
    assert (damaged.error_type, damaged.ordinal) == ("corrupt_shard", PER_ROW)
    assert "record 1: the checksum of its data does not match" in damaged.message
    path.write_bytes(whole[:-50])  # cut short
    *kept, cut = read(path)
    assert len(kept) == 2 and (cut.error_type, cut.ordinal) == ("corrupt_shard", 2 * PER_ROW)
    assert "the file ends inside record 2" in cut.message
    (tmp_path / "junk.tfrecord").write_bytes(b"not a TFRecord file at all" * 4)
    [junk] = read(tmp_path / "junk.tfrecord")
    assert isinstance(junk, Reject) and junk.error_type == "corrupt_shard"
    assert "not a TFRecord file" in junk.message


def test_memorize_img2dataset_tfrecord_shards(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    for shard in range(2):  # the same three images in both shards: exact duplicates
        write_examples(out / f"{shard:05d}.tfrecord", [img2dataset_example(i, f"cat {i}") for i in range(3)])
        pq.write_table(pa.table({"url": ["x"]}), out / f"{shard:05d}.parquet")
    with caplog.at_level(logging.WARNING):
        assert main(["memorize", str(out), "--memory", str(tmp_path / "m")]) == 0
    images = duckdb.sql(f"select caption, url from '{tmp_path}/m/images/*.parquet' order by url").fetchall()
    assert images == [(f"cat {i}", f"http://site/{i}.jpg") for i in range(3)]
    [(copies,)] = duckdb.sql(f"select count(*) from '{tmp_path}/m/duplicates/*.parquet'").fetchall()
    assert copies == 3


def test_an_image_feature_memorize_cannot_read_is_refused_before_the_run(tmp_path, capsys):
    """As a Parquet's image column is: the run ended with every record a reject, an empty memory."""
    path = write_examples(tmp_path / "tutorial.tfrecord", [
        {"image_raw": (jpeg(i), "byte"), "mask": (b"\xff\x00", "byte"), "label": (i, "int"),
         "url": (f"http://site/{i}.jpg".encode(), "byte")} for i in range(2)])
    memory = str(tmp_path / "m")
    for flags, said in (
            ([], f"{path}: no image feature (jpg, image, img, png, webp, image_bytes, bytes, image/encoded); "
                 "binary features image_raw, mask: name the image one with --image_column; its features: "
                 "image_raw, label, mask, url"),
            (["--image_column", "photo"],
             f"--image_column photo: no such column in {path} (its features: image_raw, label, mask, url)"),
            (["--image_column", "label"], f"--image_column label holds numbers in {path}, not image bytes"),
            # text (its records all not_an_image rejects) was not refused, as a Parquet's text column is
            (["--image_column", "url"],
             f"--image_column url holds text in {path}, not image bytes (its first: 'http://site/0.jpg')")):
        assert main(["memorize", str(path), "--memory", memory, *flags]) == 2
        err = capsys.readouterr().err
        assert err == f"memgen memorize: error: {said}\n", err
    assert not (tmp_path / "m").exists()
    assert main(["memorize", str(path), "--memory", memory, "--image_column", "image_raw"]) == 0


def test_a_key_that_is_another_examples_image_locator_gets_a_source_of_its_own(tmp_path):
    """An Example `a` of two images is a/0 and a/1: one keyed "a/1" before it, or "b/0" after an
    Example `b`, had the same source as one of them."""
    path = write_examples(tmp_path / "keys.tfrecord", [
        {"key": (b"a/1", "byte"), "jpg": (jpeg(0), "byte")},
        {"key": (b"a", "byte"), "jpg": ([jpeg(1), jpeg(2)], "byte")},
        {"key": (b"b", "byte"), "jpg": ([jpeg(3), jpeg(4)], "byte")},
        {"key": (b"b/0", "byte"), "jpg": (jpeg(5), "byte")}])
    items = read(path)
    assert [i.source.rsplit("#", 1)[1] for i in items] == ["a/1", "a~2/0", "a~2/1", "b/0", "b/1", "b/0~2"]
    assert [i.data for i in items] == [jpeg(n) for n in range(6)] and read(path) == items


def test_an_example_past_per_row_images_has_its_reject_in_an_ordinal_of_its_own(tmp_path):
    """The too_many_images reject took the ordinal of the Example's last image read (as in a
    Parquet list row: the same reject, written once for both)."""
    values = [bytes([n % 251]) for n in range(PER_ROW + 1)]
    path = write_examples(tmp_path / "many.tfrecord", [{"key": (b"big", "byte"), "jpg": (values, "byte")},
                                                        {"key": (b"next", "byte"), "jpg": (jpeg(1), "byte")}])
    items = read(path)
    assert len({i.ordinal for i in items}) == len(items) == PER_ROW + 1
    reject, after = items[-2:]
    assert (reject.error_type, reject.ordinal, reject.source) == ("too_many_images", PER_ROW - 1,
                                                                  f"{path}#big/{PER_ROW - 1}")
    assert f"{PER_ROW + 1} images in its jpg feature" in reject.message
    assert [i.data for i in items[:-2]] == values[: PER_ROW - 1]
    assert (after.data, after.ordinal) == (jpeg(1), PER_ROW)
