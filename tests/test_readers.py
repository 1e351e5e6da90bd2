"""Shard discovery and readers: grouping, captions, damage, Parquet, folders."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import webdataset.tariterators as wds_tar
from PIL import Image

from memgen.outputs import MARKER
from memgen.readers import ReaderConfig, read_shard
from memgen.readers.keys import Keys
from memgen.records import Record, Reject, Shard
from memgen.shards import NoInputError, discover, input_folder_holding, shard_kind, split_source
from shardkit import encode, jpeg, make_image, sample, write_parquet, write_tar

CONFIG = ReaderConfig()


def read(uri: str, config: ReaderConfig = CONFIG) -> list:
    return list(read_shard(Shard(0, uri, shard_kind(uri)), config))


def test_tar_groups_members_by_key_like_webdataset(tmp_path):
    samples = [sample(f"s{i:03d}", jpeg(i), caption=f"caption {i}", url=f"http://x/{i}") for i in range(5)]
    samples.append(("dir/sub.key", {"png": jpeg(9), "txt": b"dotted dir key"}))
    path = write_tar(tmp_path / "a.tar", samples)
    items = read(str(path))
    assert all(isinstance(i, Record) for i in items)
    assert [i.ordinal for i in items] == list(range(6))
    # the webdataset library's own grouping is the reference
    with open(path, "rb") as f:
        ref = list(wds_tar.group_by_keys(wds_tar.tar_file_expander([{"stream": f, "url": str(path)}])))
    assert [i.source.split("#", 1)[1] for i in items] == [s["__key__"] for s in ref]
    assert all(i.source == str(path) + i.locator for i in items)  # what fingerprints shuffle
    assert [i.data for i in items] == [next(v for k, v in s.items() if k.endswith(("jpg", "png")))
                                       for s in ref]
    assert items[2].caption == "caption 2" and items[2].url == "http://x/2"
    assert '"key": "s002"' in items[2].metadata


def test_a_tar_whose_members_lie_apart_from_their_keys_says_so_once(tmp_path, caplog):
    """A folder tarred as it lies on disk (`tar czf f.tgz folder`, directory order) puts a.txt
    far from a.jpg: each becomes a sample of its own (webdataset's grouping), the captions
    `no_image` rejects; the first read says how to pack it, the re-read says nothing."""
    path = tmp_path / "apart.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)), ("a.txt", b"cap a"), ("b.txt", b"cap b"),
                           ("c.jpg", jpeg(3)), ("c.txt", b"cap c")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard = Shard(0, str(path), "tar")
    with caplog.at_level(logging.WARNING, logger="memgen.readers"):
        items = list(read_shard(shard, CONFIG, first_read=True))
        assert list(read_shard(shard, CONFIG)) == items
    assert [i.error_type for i in items if isinstance(i, Reject)] == ["no_image", "no_image"]
    assert items[-1].caption == "cap c"  # next to its image: whole
    assert caplog.messages == [f"{path}: 2 samples' members lie apart from the others of their key (KEY.txt "
                               "not next to KEY.jpg), each read as a sample of its own, as webdataset reads "
                               "them: pack the tar with `tar --sort=name`"]


def test_metadata_that_is_not_json_is_kept_as_a_json_string(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("bad", {"jpg": jpeg(1), "json": b"{not json"}),
                                         ("list", {"jpg": jpeg(2), "json": b"[1, 2]"})])
    bad, listed = read(str(path))
    assert json.loads(bad.metadata) == "{not json" and bad.url is None
    assert json.loads(listed.metadata) == [1, 2] and listed.url is None


def test_an_http_shard_kind_is_read_from_its_path_else_from_the_whole_url():
    from memgen.shards import compression

    assert shard_kind("https://h/shard-000.tar?X-Amz-Signature=abc&X-Amz-Expires=60") == "tar"  # signed
    assert compression("https://h/s.tar.gz?sig=1") == "gzip"
    assert shard_kind("https://h/p.parquet?a=b") == "parquet"
    assert shard_kind("https://h/download?file=shard-000.tar") == "tar"  # the name in the query
    assert shard_kind("https://h/img.jpg?w=300") == "file"


def test_a_suffix_that_is_a_picture_only_sometimes_is_the_image_only_when_no_other_is(tmp_path):
    """A lidar sample's .pcd point cloud (Pillow's PhotoCD suffix) came before its .png: the
    sample became a not_an_image reject and an extra_image_member one. A sample memgen wrote
    of a PhotoCD or SPIDER image has that member only, and it is its image."""
    cloud = b"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\n"
    path = write_tar(tmp_path / "a.tar", [("lidar", {"json": b"{}", "pcd": cloud, "png": jpeg(1)}),
                                         ("photocd", {"pcd": jpeg(2), "txt": b"sampled"})])
    lidar, photocd = read(str(path))
    assert isinstance(lidar, Record) and lidar.data == jpeg(1)
    assert isinstance(photocd, Record) and photocd.data == jpeg(2) and photocd.caption == "sampled"


def test_sample_without_image_is_rejected_with_its_bytes(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("only_text", {"txt": b"hello"}), sample("ok", jpeg(1))])
    items = read(str(path))
    assert isinstance(items[0], Reject) and items[0].error_type == "no_image"
    assert items[0].data == b"hello" and items[0].source.endswith("#only_text")
    assert isinstance(items[1], Record)
    path = write_tar(tmp_path / "b.tar", [("video", {"mp4": b"v" * 5000})])  # over --max_bytes: its head read
    (item,) = read(str(path), ReaderConfig(max_bytes=1000, reject_data_cap=10))
    assert (item.error_type, item.n_bytes, item.data) == ("no_image", 5000, b"v" * 10)  # not the head's size


@pytest.mark.parametrize("name", ["a.tar.bz2", "a.tbz2", "a.tar.xz", "a.txz"])
def test_bzip2_and_xz_tars_are_read_as_tar_reads_them(tmp_path, name):
    """A folder walk skipped them, and given by name each was one not_an_image reject."""
    write_tar(tmp_path / name, [sample(f"s{i}", jpeg(i), f"caption {i}") for i in range(3)])
    assert discover([str(tmp_path)]) == [Shard.of(0, str(tmp_path / name), "tar")]
    items = read(str(tmp_path / name))
    assert [(r.data, r.caption) for r in items] == [(jpeg(i), f"caption {i}") for i in range(3)]


@pytest.mark.parametrize("name", ["a.tar", "a.tar.gz", "a.tar.bz2", "a.tar.xz"])
def test_truncated_shard_keeps_records_before_the_damage(tmp_path, name):
    path = write_tar(tmp_path / name, [sample(f"s{i}", jpeg(i, quality=95)) for i in range(6)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    items = read(str(path))
    records = [i for i in items if isinstance(i, Record)]
    rejects = [i for i in items if isinstance(i, Reject)]
    # bzip2 decodes whole blocks of up to 900 kB: a cut in this shard's only block yields nothing
    assert (0 if name.endswith("bz2") else 1) <= len(records) < 6
    assert [r.data for r in records] == [jpeg(i, quality=95) for i in range(len(records))]
    assert len(rejects) == 1 and rejects[0].error_type == "corrupt_shard" and rejects[0].stage == "read"


def test_garbage_tar_and_missing_shard_are_rejects(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive" * 100)
    (item,) = read(str(bad))
    assert isinstance(item, Reject) and item.error_type == "corrupt_shard"
    (item,) = read(str(tmp_path / "missing.tar"))
    assert isinstance(item, Reject) and (item.stage, item.error_type) == ("open", "missing")


def test_oversized_member_is_rejected_unread(tmp_path):
    big = jpeg(1, quality=100)
    path = write_tar(tmp_path / "a.tar", [sample("big", big), sample("small", b"x" * 10)])
    items = read(str(path), ReaderConfig(max_bytes=len(big) - 1, reject_data_cap=16))
    assert items[0].error_type == "too_large" and items[0].n_bytes == len(big)
    assert items[0].data == big[:16]
    assert isinstance(items[1], Record)


def test_parquet_reader_columns_struct_and_nulls(tmp_path):
    rows = [{"key": f"k{i}", "image": jpeg(i), "caption": f"c{i}", "url": f"u{i}", "width": 10}
            for i in range(3)]
    rows.append({"key": "k3", "image": None, "caption": None, "url": None})
    items = read(str(write_parquet(tmp_path / "a.parquet", rows)))
    assert [i.source.rsplit("#", 1)[1] for i in items] == ["k0", "k1", "k2", "k3"]
    assert [i.locator for i in items[:3]] == ["#k0", "#k1", "#k2"]
    assert items[1].data == jpeg(1) and items[1].caption == "c1" and items[1].url == "u1"
    assert (items[3].stage, items[3].error_type, items[3].message) == ("read", "empty", "jpg is null")
    # Hugging Face style: image is a struct {bytes, path}; no key column -> row numbers
    hf = [{"bytes": jpeg(5), "path": "a.jpg"}, {"bytes": None, "path": "b.jpg"}]  # b: a file beside it
    table = pa.table({"image": pa.array(hf), "text": ["t", "u"]})
    pq.write_table(table, tmp_path / "hf.parquet")
    item, only_named = read(str(tmp_path / "hf.parquet"), ReaderConfig(caption_column="text"))
    assert item.data == jpeg(5) and item.caption == "t" and item.source.endswith("#000000000")
    assert (only_named.stage, only_named.error_type) == ("read", "missing")  # no b.jpg beside it
    assert only_named.message.startswith("image.path 'b.jpg': FileNotFoundError")


def test_a_tables_caption_is_its_caption_column_else_its_text_column(tmp_path):
    """Hugging Face datasets name a caption `text` (diffusers' training scripts read it): their
    images had no caption unless --caption_column text was given."""
    pq.write_table(pa.table({"jpg": [jpeg(0)], "text": ["a cat"]}), tmp_path / "hf.parquet")
    both = pa.table({"jpg": [jpeg(0)], "text": ["ocr"], "caption": ["a cat"]})
    pq.write_table(both, tmp_path / "both.parquet")
    assert [i.caption for i in read(str(tmp_path / "hf.parquet"))] == ["a cat"]
    assert [i.caption for i in read(str(tmp_path / "both.parquet"))] == ["a cat"]
    named = ReaderConfig(caption_column="text")
    assert [i.caption for i in read(str(tmp_path / "both.parquet"), named)] == ["ocr"]


def test_a_null_hugging_face_image_struct_is_a_null_image_whatever_its_children_hold(tmp_path):
    """A null struct {bytes, path} is a null image: the row's "empty" reject with its url. Parquet
    keeps no child value under a null struct (its levels cannot), but children declared not
    null are read back as b"" and "" there: read through field(), a record of zero bytes,
    rejected at fingerprint without the row's url."""
    typ = pa.struct([pa.field("bytes", pa.binary(), nullable=False),
                     pa.field("path", pa.string(), nullable=False)])
    for children in (typ, pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])):
        values = [pa.array([jpeg(1), jpeg(2), jpeg(3)]), pa.array(["a", "b", "c"])]
        null_row = pa.array([False, True, False])
        images = pa.StructArray.from_arrays(values, fields=list(children), mask=null_row)
        assert images.field("bytes")[1].as_py() == jpeg(2)  # in memory, the null row's child holds bytes
        path = tmp_path / "hf.parquet"
        pq.write_table(pa.table({"image": images, "url": ["u0", "u1", "u2"]}), path)
        back = pq.read_table(path).column("image").chunk(0)
        assert back.null_count == 1 and back[1].as_py() is None  # the struct's nullness survives
        # ... its children's values do not: nothing, or b"" when they are declared not null
        assert back.field("bytes")[1].as_py() == (b"" if children == typ else None)
        first, null, last = read(str(path))
        assert (first.data, last.data) == (jpeg(1), jpeg(3))
        assert (null.ordinal, null.stage, null.error_type, null.message) == (1, "read", "empty",
                                                                            "image is null (url 'u1')")


def test_parquet_rows_without_image_say_why_the_crawl_failed(tmp_path):
    """img2dataset's Parquet output keeps the rows it could not download, their jpg null: the
    reject is all that is left of the record, so it keeps the url and the crawler's error."""
    pq.write_table(pa.table({
        "jpg": [jpeg(1), None, None], "key": ["000000000", "000000001", "000000002"],
        "url": ["http://x/0.jpg", "http://x/1.jpg", None],
        "status": ["success", "failed_to_download", "failed_to_resize"],
        "error_message": [None, "HTTP Error 404: Not Found", "image file is truncated"]}),
        tmp_path / "00000.parquet")
    kept, failed, unresized = read(str(tmp_path / "00000.parquet"))
    assert isinstance(kept, Record) and kept.url == "http://x/0.jpg"
    assert (failed.error_type, failed.message) == (
        "empty", "jpg is null (status 'failed_to_download', error_message 'HTTP Error 404: Not Found', "
                 "url 'http://x/1.jpg')")
    assert unresized.message == (
        "jpg is null (status 'failed_to_resize', error_message 'image file is truncated')")


def test_a_shard_without_its_suffix_is_said_to_be_one(tmp_path):
    """A shard whose kind its name does not say, read as a file (shard-000000; a Hive table's
    000000_0 over http(s), where its first bytes are not asked before the run): "Pillow cannot
    identify an image format" (or too_large) said nothing of what they are."""
    pq.write_table(pa.table({"jpg": [jpeg(1), jpeg(2)]}), tmp_path / "000000_0")
    write_tar(tmp_path / "shard-000000", [sample("a", jpeg(1))])
    for name, said in (("000000_0", "Parquet data in a file whose name does not end in .parquet"),
                       ("shard-000000", "tar data in a file whose name does not end in .tar")):
        for config in (CONFIG, ReaderConfig(max_bytes=1000)):
            (item,) = read(str(tmp_path / name), config)
            assert (item.stage, item.error_type) == ("read", "not_an_image")
            assert item.message == f"{said}, which is read as one image: rename it to read its records"
            assert item.n_bytes == (tmp_path / name).stat().st_size


def test_a_hive_tables_files_named_without_a_suffix_are_read_as_their_first_bytes_say(tmp_path):
    """Hive writes a table's files as 000000_0 (000000_0_copy_1 on an insert again): a folder
    walk skipped them, and named, each was a reject that said to rename it."""
    table = tmp_path / "table" / "dt=2024-01-01"
    table.mkdir(parents=True)
    pq.write_table(pa.table({"jpg": [jpeg(1), jpeg(2)], "caption": ["a", "b"]}), table / "000000_0")
    pq.write_table(pa.table({"jpg": [jpeg(3)], "caption": ["c"]}), table / "000000_0_copy_1")
    (table / "000001_0").write_bytes(b"")  # an empty file Hive left: read as one, not a failed listing
    shards = discover([str(tmp_path / "table")])
    assert [(s.uri.rsplit("/", 1)[1], s.kind) for s in shards] == [
        ("000000_0", "parquet"), ("000000_0_copy_1", "parquet"), ("000001_0", "file")]
    records = [item for shard in shards[:2] for item in read_shard(shard, CONFIG)]
    assert [(r.data, r.caption, json.loads(r.metadata)["dt"]) for r in records] == [
        (jpeg(1), "a", "2024-01-01"), (jpeg(2), "b", "2024-01-01"), (jpeg(3), "c", "2024-01-01")]
    (empty,) = read_shard(shards[2], CONFIG)
    assert empty.data == b""  # the fingerprint's `empty` reject


def test_parquet_suffixes(tmp_path):
    """fastparquet and dask name their files .parq: a folder walk skipped them ("neither
    shards nor images") and, named, each was a not_an_image reject."""
    for name in ("a.parquet", "b.PQ", "c.parq"):
        pq.write_table(pa.table({"jpg": [jpeg(len(name))]}), tmp_path / name)
    shards = discover([str(tmp_path)])
    assert [(s.uri.rsplit("/", 1)[1], s.kind) for s in shards] == [
        ("a.parquet", "parquet"), ("b.PQ", "parquet"), ("c.parq", "parquet")]
    assert isinstance(read(str(tmp_path / "c.parq"))[0], Record)
    assert split_source(f"{tmp_path}/c.parq#k") == (f"{tmp_path}/c.parq", "k")


def test_parquet_without_image_column_is_a_reject(tmp_path):
    pq.write_table(pa.table({"url": ["a"]}), tmp_path / "meta.parquet")
    (item,) = read(str(tmp_path / "meta.parquet"))
    assert isinstance(item, Reject) and item.error_type == "no_image_column"


def test_discover_braces_globs_folders_and_memory_fs(tmp_path):
    for i in range(3):
        write_tar(tmp_path / f"{i:05d}.tar", [sample("a", jpeg(i))])
    (tmp_path / "photos" / "deep").mkdir(parents=True)
    (tmp_path / "photos" / "deep" / "x.jpg").write_bytes(jpeg(7))
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    shards = discover([str(tmp_path / "{00000..00001}.tar"), str(tmp_path / "photos")])
    assert [(s.uri.rsplit("/", 1)[1], s.kind) for s in shards] == [
        ("00000.tar", "tar"), ("00001.tar", "tar"), ("x.jpg", "file")]
    assert [s.index for s in shards] == [0, 1, 2]
    assert len(discover([str(tmp_path / "*.tar")])) == 3
    (tmp_path / "pics {a,b}").mkdir()  # a name with braces that exists as written is itself
    write_tar(tmp_path / "pics {a,b}" / "p.tar", [sample("p", jpeg(8))])
    braced = tmp_path / "pics {a,b}"
    assert [s.uri for s in discover([str(braced)])] == [str(braced / "p.tar")]
    spelt = [str(tmp_path / "00000.tar"), f"file://{tmp_path}/00000.tar", f"file://{tmp_path}/*0.tar"]
    assert [s.uri for s in discover(spelt)] == [str(tmp_path / "00000.tar")]  # read once, not twice
    half = write_tar(tmp_path / "sh}ard.tar", [sample("h", jpeg(9))])  # a brace that pairs with none
    assert [s.uri for s in discover([str(half)])] == [str(half)]
    with fsspec.open("memory://bucket/shards/0.tar", "wb") as f:
        f.write(write_tar(tmp_path / "m.tar", [sample("m", jpeg(3))]).read_bytes())
    (shard,) = discover(["memory://bucket/shards/*.tar"])
    assert shard.uri.startswith("memory://") and shard.uri.endswith("bucket/shards/0.tar")
    assert isinstance(read(shard.uri)[0], Record)


def test_an_img2dataset_folder_is_its_tars_and_the_sidecars_are_said_to_be_skipped(tmp_path, caplog):
    """img2dataset's webdataset output: NNNNN.tar, NNNNN.parquet (the tar's metadata: url,
    caption, status; no images) and NNNNN_stats.json. The parquets were read as shards (one
    no_image_column reject each), and through a glob the stats files as images."""
    out = tmp_path / "out"
    out.mkdir()
    for i in range(2):
        write_tar(out / f"{i:05d}.tar", [sample(f"{i:05d}0001", jpeg(i))])
        pq.write_table(pa.table({"url": ["http://x"], "caption": ["c"], "status": ["success"]}),
                       out / f"{i:05d}.parquet")
        (out / f"{i:05d}_stats.json").write_text("{}")
    write_parquet(out / "laion.parquet", [{"key": "k", "image": jpeg(9)}])  # a Parquet shard of its own
    expected = [("00000.tar", "tar"), ("00001.tar", "tar"), ("laion.parquet", "parquet")]
    for given in (str(out), str(out / "*")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="memgen.shards"):
            assert [(s.uri.rsplit("/", 1)[1], s.kind) for s in discover([given])] == expected
        assert caplog.messages == [f"{given}: skipped 4 files that are neither shards nor images"
                                   " (.json 2, parquet beside its tar, TFRecord or folder 2)"]
    files = tmp_path / "files"  # img2dataset's "files" output: 00000/ of images beside 00000.parquet
    (files / "00000").mkdir(parents=True)
    (files / "00000" / "000000001.jpg").write_bytes(jpeg(1))
    pq.write_table(pa.table({"url": ["http://x"]}), files / "00000.parquet")
    assert [s.uri.rsplit("/", 1)[1] for s in discover([str(files)])] == ["000000001.jpg"]
    # a glob that matches the Parquet but not the folder (or tar) beside it still skips it
    for given in (str(files / "0000?.*"), str(out / "0000?.p*")):
        with pytest.raises(NoInputError):
            discover([given])
    (files / "train").mkdir()  # a dataset's own train.parquet beside train/: both are read
    (files / "train" / "x.jpg").write_bytes(jpeg(3))
    write_parquet(files / "train.parquet", [{"key": "k", "image": jpeg(4)}])
    assert [s.uri.rsplit("/", 1)[1] for s in discover([str(files)])] == ["000000001.jpg", "train.parquet",
                                                                          "x.jpg"]
    (tmp_path / "hashed").mkdir()  # files named by hash, no suffix: a glob of them means them
    for name in ("ab12", "cd34"):
        (tmp_path / "hashed" / name).write_bytes(jpeg(2))
    assert len(discover([str(tmp_path / "hashed" / "*")])) == 2


def test_a_folder_of_files_without_a_suffix_says_how_to_read_them(tmp_path, caplog):
    """Images named by hash, as some crawlers save them: the folder's walk skips them, and
    "no input matched" said nothing of the glob that reads them."""
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    for name in ("ab12", "cd34"):
        (hashed / name).write_bytes(jpeg(2))
    with caplog.at_level(logging.WARNING, logger="memgen.shards"), pytest.raises(NoInputError):
        discover([str(hashed)])
    glob = f"{hashed}/*"
    assert caplog.messages == [f"{hashed}: skipped 2 files that are neither shards nor images (no suffix 2);"
                               " a glob that matches only files without a suffix reads them as images:"
                               f" '{glob}'"]
    assert len(discover([glob])) == 2
    (hashed / "a.jpg").write_bytes(jpeg(3))  # a glob that matches an image too: no way to say
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        assert len(discover([glob])) == 1
    assert caplog.messages == [f"{glob}: skipped 2 files that are neither shards nor images (no suffix 2)"]


def test_a_memgen_output_in_a_folder_is_read_as_its_images_only(tmp_path, caplog):
    """A sample's folder memorized took its contact sheet for one of its images (and its
    index, a memory's duplicates and rejects, for shards without images)."""
    out = tmp_path / "data" / "s"
    (out / "images").mkdir(parents=True)
    (out / MARKER).write_text("sample 0123")
    write_tar(out / "images" / "sample-000000.tar", [sample("k", jpeg(1))])
    (out / "contact_sheet.jpg").write_bytes(jpeg(2))
    pq.write_table(pa.table({"image_id": ["x"]}), out / "index.parquet")
    (tmp_path / "data" / "photo.jpg").write_bytes(jpeg(3))
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        assert [s.uri.rsplit("/", 1)[1] for s in discover([str(tmp_path / "data")])] == [
            "photo.jpg", "sample-000000.tar"]
    assert caplog.messages == [f"{out} is the output of a memgen run: only its images/ is read"]


def test_links_to_folders_are_followed_and_never_round_a_loop(tmp_path, caplog):
    """A day's folder linked into the crawl was skipped without a word (a glob followed it);
    following every link, a link to `..` read the whole tree above, round and round (29,161
    shards from a folder of one image)."""
    (tmp_path / "other").mkdir()
    write_tar(tmp_path / "other" / "o.tar", [sample("o", jpeg(2))])
    (tmp_path / "elsewhere" / "day2").mkdir(parents=True)
    write_tar(tmp_path / "elsewhere" / "day2" / "b.tar", [sample("b", jpeg(3))])
    (tmp_path / "in").mkdir()
    write_tar(tmp_path / "in" / "a.tar", [sample("a", jpeg(1))])
    (tmp_path / "in" / "loop").symlink_to("..")
    (tmp_path / "in" / "self").symlink_to(".")
    (tmp_path / "in" / "day2").symlink_to(tmp_path / "elsewhere" / "day2")
    (tmp_path / "in" / "day2-again").symlink_to(tmp_path / "elsewhere" / "day2")  # once: the first name
    (tmp_path / "in" / "o.tar").symlink_to(tmp_path / "other" / "o.tar")
    given = str(tmp_path / "in")
    for spelt in (given, f"{given}/*"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="memgen.shards"):
            found = [s.uri[len(given) + 1:] for s in discover([spelt])]
        assert found == ["a.tar", "day2-again/b.tar", "o.tar"]
        assert caplog.messages == [f"{spelt}: skipped 2 links to folders above them, which would be read"
                                   f" round and round: {given}/loop, {given}/self"]


def test_a_folder_reached_by_a_link_too_is_read_once_under_its_own_name(tmp_path, caplog):
    """Following links, the first name in order won: a hidden `.latest -> day` took the day's
    real folder (and, hidden, its files were then left out), `current -> day1` named the
    memory's sources after tonight's link, and a folder given beside its link was read twice."""
    crawl = tmp_path / "crawl"
    for day, i in (("2024-05-31", 1), ("2024-06-01", 2)):
        (crawl / "data" / day).mkdir(parents=True)
        (crawl / "data" / day / f"img{i}.jpg").write_bytes(jpeg(i))
    (crawl / ".latest").symlink_to("data/2024-06-01")
    (crawl / "current").symlink_to("data/2024-05-31")
    days = (("2024-05-31", 1), ("2024-06-01", 2))
    expected = [str(crawl / "data" / day / f"img{i}.jpg") for day, i in days]
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        for inputs in ([str(crawl)], [str(crawl / "data" / "2024-05-31"), str(crawl)], [f"{crawl}/**"]):
            assert [s.uri for s in discover(inputs)] == expected, inputs
    assert not [m for m in caplog.messages if "links" in m]


def test_a_folder_that_cannot_be_listed_is_an_error_not_skipped(tmp_path):
    """fsspec's find skips a folder it cannot list: its records were lost, exit 0 (and a glob
    in one said "no input matched")."""
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root, and no setpriv (util-linux) to drop the right to read any folder")
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_tar(tmp_path / "in" / "a.tar", [sample("a", jpeg(1))])
    write_tar(tmp_path / "in" / "sub" / "b.tar", [sample("b", jpeg(2))])
    if os.geteuid() == 0:  # nobody's files, read without root's right to read any
        for path in (tmp_path / "in", *(tmp_path / "in").rglob("*")):
            os.chown(path, 65534, 65534)
    as_user = (["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"] if os.geteuid() == 0
               else [])

    def discovered(given: str) -> str:
        code = (f"from memgen.shards import discover, NoInputError\ntry:\n    print(discover([{given!r}]))\n"
                "except NoInputError as e:\n    print('error:', e)")
        return subprocess.run([*as_user, sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()

    (tmp_path / "in" / "sub").chmod(0)
    try:
        assert discovered(str(tmp_path / "in")) == f"error: {tmp_path / 'in' / 'sub'} cannot be listed: " \
                                                   "Permission denied"
        (tmp_path / "in" / "sub").chmod(0o755)
        (tmp_path / "in").chmod(0)
        assert discovered(str(tmp_path / "in" / "*.tar")) == f"error: {tmp_path / 'in'} cannot be listed: " \
                                                             "Permission denied"
    finally:
        (tmp_path / "in").chmod(0o755)
        (tmp_path / "in" / "sub").chmod(0o755)
    assert "b.tar" in discovered(str(tmp_path / "in"))


def test_an_img2dataset_folder_named_file_by_file_is_its_tars(tmp_path, caplog):
    """`memgen memorize out/*` expanded by the shell: NNNNN.parquet and NNNNN_stats.json named
    beside NNNNN.tar were read (a no_image_column and a not_an_image reject each), where the
    folder and the quoted glob skip them."""
    out = tmp_path / "out"
    out.mkdir()
    for i in range(2):
        write_tar(out / f"{i:05d}.tar", [sample(f"{i:05d}0001", jpeg(i))])
        pq.write_table(pa.table({"url": ["http://x"], "status": ["success"]}), out / f"{i:05d}.parquet")
        (out / f"{i:05d}_stats.json").write_text("{}")
    (out / "00007.parquet").write_bytes(b"")  # no tar of its number: read as it is
    named = sorted(str(p) for p in out.iterdir())
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        shards = discover(named)
    assert [s.uri.rsplit("/", 1)[1] for s in shards] == ["00000.tar", "00001.tar", "00007.parquet"]
    assert caplog.messages == ["files named: skipped 4 of img2dataset's metadata beside its shards"
                               " (00000.parquet, 00000_stats.json, ...)"]


def test_images_in_folders_take_their_caption_and_metadata_files(tmp_path, caplog):
    """img2dataset's "files" output and training folders: a.jpg with a.txt (caption) and
    a.json (metadata, url). They were skipped: every image came without caption or url."""
    folder = tmp_path / "files" / "00000"
    folder.mkdir(parents=True)
    (folder / "000000001.jpg").write_bytes(jpeg(1))
    (folder / "000000001.txt").write_bytes(b"a cat on a mat")
    (folder / "000000001.json").write_text('{"url": "http://x/1.jpg", "width": 160}')
    (folder / "000000002.png").write_bytes(encode(make_image(2), "PNG"))
    (folder / "000000002.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "000000003.jpg").write_bytes(jpeg(3))  # none
    (folder / "notes.txt").write_text("not beside an image")
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        shards = discover([str(tmp_path / "files"), str(folder / "000000003.jpg")])
    assert [s.sidecars for s in shards] == [(".txt", ".json"), (".txt",), ()]
    assert caplog.messages == [f"{tmp_path / 'files'}: skipped 1 files that are neither shards nor images"
                               " (.txt 1)"]
    records = [read_shard(s, CONFIG) for s in shards]
    (one,), (two,), (three,) = records
    assert (one.caption, one.url, json.loads(one.metadata)) == (
        "a cat on a mat", "http://x/1.jpg", {"url": "http://x/1.jpg", "width": 160})
    assert (two.caption, two.url, two.metadata) == ("café", None, None)
    assert (three.caption, three.url, three.metadata) == (None, None, None)
    assert discover([str(folder / "000000001.jpg"), str(folder)])[0].sidecars == (".txt", ".json")


def test_files_named_one_by_one_take_their_captions_and_metadata_as_their_folder_gives_them(tmp_path):
    """`memgen memorize photos/*` (the shell expands the glob): a.txt, a.json and metadata.jsonl
    named beside a.jpg and b.jpg were each read as an image (a not_an_image reject), and the
    images lost their captions, so a folder and the list of its files made other memories."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg(1))
    (folder / "a.txt").write_bytes(b"a cat")
    (folder / "a.json").write_text('{"url": "http://x/a.jpg"}')
    (folder / "sub" / "b.jpg").write_bytes(jpeg(2))
    (folder / "sub" / "metadata.jsonl").write_text('{"file_name": "b.jpg", "text": "a dog"}\n')
    (folder / "notes.txt").write_text("beside no image")  # named, it is read as it is
    named = sorted(str(p) for p in folder.rglob("*") if p.is_file())

    def listed(shards: list[Shard]) -> dict[str, tuple]:
        return {s.uri: (s.kind, s.sidecars, s.folder_metadata) for s in shards}

    by_name = listed(discover(named[::-1]))
    assert by_name.pop(str(folder / "notes.txt")) == ("file", (), None)
    assert by_name == listed(discover([str(folder)]))
    (a,), (b,) = (list(read_shard(s, CONFIG)) for s in discover(named) if s.uri.endswith("jpg"))
    assert (a.caption, a.url, b.caption) == ("a cat", "http://x/a.jpg", "a dog")
    # named beside the folder that holds it: a caption, not also an image of its own
    assert listed(discover([str(folder / "a.txt"), str(folder)])) == listed(discover([str(folder)]))


def test_caption_and_metadata_files_written_in_upper_case_are_taken(tmp_path, caplog):
    """IMG_0001.JPG with IMG_0001.TXT (cameras, old Windows tools): the caption was skipped."""
    (tmp_path / "IMG_0001.JPG").write_bytes(jpeg(1))
    (tmp_path / "IMG_0001.TXT").write_bytes(b"a cat")
    (tmp_path / "IMG_0001.JSON").write_text('{"url": "http://x/1.jpg"}')
    (tmp_path / "b.jpg").write_bytes(jpeg(2))
    (tmp_path / "b.txt").write_bytes(b"lower")
    (tmp_path / "b.TXT").write_bytes(b"upper")  # both: the one in lower case
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        upper, lower = discover([str(tmp_path), str(tmp_path / "IMG_0001.JPG")])
    assert (upper.sidecars, lower.sidecars) == ((".TXT", ".JSON"), (".txt",))
    (one,), (two,) = read_shard(upper, CONFIG), read_shard(lower, CONFIG)
    assert (one.caption, one.url, two.caption) == ("a cat", "http://x/1.jpg", "lower")
    assert caplog.messages == [f"{tmp_path}: skipped 1 files that are neither shards nor images (.txt 1)"]


def test_discover_nothing_matched_is_an_error(tmp_path):
    with pytest.raises(NoInputError):
        discover([str(tmp_path / "nothing-*.tar"), str(tmp_path / "missing.tar")])
    # one existing input: the missing explicit one becomes a shard (and a reject later)
    write_tar(tmp_path / "ok.tar", [sample("a", jpeg(1))])
    assert len(discover([str(tmp_path / "ok.tar"), str(tmp_path / "missing.tar")])) == 2


def test_single_file_shard(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(io.BytesIO(jpeg(2)).getvalue())
    (item,) = read(str(path))
    assert isinstance(item, Record) and item.source == str(path) and item.data == jpeg(2)
    assert item.locator == ""


def test_parquet_image_column_must_hold_bytes(tmp_path):
    # a default name holding paths is passed over for the next default that holds bytes
    pq.write_table(pa.table({"image": ["/x/y.jpg"], "image_bytes": [jpeg(1)]}), tmp_path / "a.parquet")
    (item,) = read(str(tmp_path / "a.parquet"))
    assert isinstance(item, Record) and item.data == jpeg(1)
    pq.write_table(pa.table({"bytes": [12345], "url": ["u"]}), tmp_path / "sizes.parquet")
    (item,) = read(str(tmp_path / "sizes.parquet"))
    assert item.error_type == "no_image_column" and "'bytes' holds int64, not image bytes" in item.message
    (item,) = read(str(tmp_path / "a.parquet"), ReaderConfig(image_column="image"))  # named: base64
    assert (item.error_type, item.message) == ("not_base64",
                                               "image holds text that is not base64: '/x/y.jpg'")
    table = pa.Table.from_arrays([pa.array([jpeg(1)]), pa.array(["a"]), pa.array(["b"])], ["jpg", "x", "x"])
    pq.write_table(table, tmp_path / "twice.parquet")
    (item,) = read(str(tmp_path / "twice.parquet"))
    assert item.error_type == "duplicate_columns" and "['x']" in item.message


def test_parquet_image_column_under_another_name(tmp_path):
    """`datasets` keeps an Image feature under any name; other names are the user's to give,
    and the reject says which columns hold bytes and which flag names one."""
    hf_image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    image = pa.array([{"bytes": jpeg(1), "path": None}], hf_image)
    features = {"photo": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"}}
    table = pa.table({"photo": image, "label": [3]}).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, tmp_path / "hf.parquet")
    (item,) = read(str(tmp_path / "hf.parquet"))
    assert isinstance(item, Record) and item.data == jpeg(1) and json.loads(item.metadata) == {"label": 3}
    pq.write_table(table.replace_schema_metadata({"huggingface": "{not json"}), tmp_path / "bad.parquet")
    (item,) = read(str(tmp_path / "bad.parquet"))
    assert item.error_type == "no_image_column"
    assert "['photo'] hold bytes: name the image one with --image_column" in item.message
    pq.write_table(pa.table({"image_data": [jpeg(1)], "JPG": [jpeg(2)], "image": ["a.jpg"]}),
                   tmp_path / "a.parquet")
    (item,) = read(str(tmp_path / "a.parquet"))
    assert item.message.startswith(
        "no image column among ['jpg', 'image', 'img', 'png', 'webp', 'image_bytes', 'bytes'] ('image' holds "
        "string, not image bytes); ['image_data', 'JPG'] hold bytes: name the image one with --image_column; "
        "columns are ")
    # declared an Image under a default name: named once in the reject, not twice
    declared = {"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}})}
    pq.write_table(pa.table({"image": [7]}).replace_schema_metadata(declared), tmp_path / "int.parquet")
    (item,) = read(str(tmp_path / "int.parquet"))
    assert item.message.startswith("no image column among ['jpg', 'image', 'img', 'png', 'webp', "
                                   "'image_bytes', 'bytes'] ('image' holds int64, not image bytes); "
                                   "columns are ")
    (item,) = read(str(tmp_path / "a.parquet"), ReaderConfig(image_column="JPG"))
    assert item.data == jpeg(2)


def test_parquet_metadata_is_strict_json_and_keys_are_unique(tmp_path):
    table = pa.table({
        "jpg": [jpeg(1), jpeg(2), jpeg(3)],
        "key": ["0", "0", None],
        "score": [float("nan"), float("inf"), 1.5],
        "info": [{"w": 1, "tags": ["a"]}, None, {"w": 3, "tags": []}],
        "thumb": [b"\x00\x01", b"", None],  # binary: not text, left out of metadata
        "thumbs": [[b"\xff\xd8"], [], None],  # ... and so is binary inside a list (it was its repr)
        "crop": [{"box": [1, 2], "png": b"\x89P"}, None, None],  # ... or a struct
        "caption": [b"caf\xc3\xa9", None, b"x"],
    })
    pq.write_table(table, tmp_path / "a.parquet")
    items = read(str(tmp_path / "a.parquet"))
    assert [i.locator for i in items] == ["#0", "#0~2", "#000000002"]
    metadata = [json.loads(i.metadata, parse_constant=pytest.fail) for i in items]  # NaN is not JSON
    assert [m["score"] for m in metadata] == [None, None, 1.5]
    assert metadata[0]["info"] == {"w": 1, "tags": ["a"]}
    assert not {"thumb", "thumbs", "crop"} & set(metadata[0])
    assert [i.caption for i in items] == ["café", None, "x"]


@pytest.mark.parametrize("kind", ["binary_view", "dictionary"])
def test_parquet_binary_view_and_dictionary_image_columns(tmp_path, kind):
    images = pa.array([jpeg(1), jpeg(2), jpeg(1)], pa.binary_view() if kind == "binary_view" else pa.binary())
    pq.write_table(pa.table({"jpg": images.dictionary_encode() if kind == "dictionary" else images}),
                   tmp_path / "v.parquet")
    assert [item.data for item in read(str(tmp_path / "v.parquet"))] == [jpeg(1), jpeg(2), jpeg(1)]


def test_columns_named_by_flag_are_checked_against_the_first_parquet_shard(tmp_path):
    from memgen.readers import named_columns

    def named_columns_missing(shards, config):
        found = named_columns(shards, config)
        return found.missing, found.shard

    write_tar(tmp_path / "a.tar", [sample("a", jpeg(1))])
    pq.write_table(pa.table({"JPG": [jpeg(1)], "TEXT": ["c"]}), tmp_path / "b.parquet")
    shards = discover([str(tmp_path)])
    assert named_columns_missing(shards, ReaderConfig()) == ([], "")  # nothing named: the defaults
    assert named_columns_missing(shards, ReaderConfig(image_column="JPG", caption_column="TEXT")) == (
        [], f"{tmp_path}/b.parquet (its columns: JPG, TEXT)")
    assert named_columns_missing(shards, ReaderConfig(image_column="jpg", url_column="URL")) == (
        ["--image_column jpg", "--url_column URL"], f"{tmp_path}/b.parquet (its columns: JPG, TEXT)")
    assert named_columns_missing(shards[:1], ReaderConfig(image_column="jpg")) == ([], "")  # no Parquet


def test_damaged_parquet_row_group_loses_only_its_rows(tmp_path):
    path = tmp_path / "a.parquet"
    keys = ["k0", "k1", "k2", "k3", "row_group_1", "k5"]  # a key named as the damaged group's reject
    pq.write_table(pa.table({"jpg": [jpeg(i) for i in range(6)], "key": keys}), path, row_group_size=2)
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    data = bytearray(path.read_bytes())
    start = min(o for o in (column.dictionary_page_offset, column.data_page_offset) if o is not None)
    data[start:start + 16] = b"\xff" * 16  # the first page header of its image column
    path.write_bytes(bytes(data))
    items = read(str(path))
    assert [i.locator for i in items if isinstance(i, Record)] == ["#k0", "#k1", "#row_group_1~2", "#k5"]
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert reject.error_type == "corrupt_shard" and reject.source.endswith("#row_group_1")
    assert reject.message.startswith("rows 2-3 of row group 1")
    assert [i.ordinal for i in items] == [0, 1, 2, 4, 5]  # rows: the group's reject at its first lost one


def test_captions_that_are_not_utf8_keep_their_characters(tmp_path):
    path = write_tar(tmp_path / "a.tar", [
        ("latin", {"jpg": jpeg(1), "txt": "café chât".encode("latin-1")}),
        ("windows", {"jpg": jpeg(2), "txt": "“quoted” – dash".encode("cp1252")}),
        ("odd", {"jpg": jpeg(3), "txt": b"\x81\xe9"}),  # 0x81 is not cp1252: latin-1's
        ("utf8", {"jpg": jpeg(4), "txt": "café".encode()}),
        ("cut", {"jpg": jpeg(5), "txt": "東京タワー café".encode()[:-1]}),  # UTF-8 cut mid-character
        ("notepad", {"jpg": jpeg(6), "txt": "a grey café 🐈".encode("utf-16")}),  # with its BOM
        ("utf32", {"jpg": jpeg(7), "txt": "chat".encode("utf-32")}),
    ])
    assert [r.caption for r in read(str(path))] == [
        "café chât", "“quoted” – dash", "\x81é", "café", "東京タワー caf\ufffd", "a grey café 🐈", "chat"]


def test_parquet_strings_that_are_not_utf8_keep_their_rows(tmp_path):
    """Lax writers store latin-1 in string columns: Arrow's strict decoding made the whole
    row group one corrupt_shard reject (LAION row groups hold thousands of images)."""
    raw = pa.array([b"ok", "caf\xe9".encode("latin-1"), None], pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # not validated, as they write it
    path = tmp_path / "lax.parquet"
    tags = pa.ListArray.from_arrays([0, 1, 3, 3], text)  # [ok], [café, None], []
    pq.write_table(pa.table({"jpg": [jpeg(i) for i in range(3)], "caption": text,
                             "tag": text.dictionary_encode(), "tags": tags,
                             "about": pa.StructArray.from_arrays([text], ["title"])}), path)
    items = read(str(path))
    assert all(isinstance(i, Record) for i in items)
    assert [i.caption for i in items] == ["ok", "caf\xe9", None]
    assert [json.loads(i.metadata)["tag"] for i in items] == ["ok", "caf\xe9", None]
    assert [json.loads(i.metadata)["tags"] for i in items] == [["ok"], ["caf\xe9", None], []]
    assert [json.loads(i.metadata)["about"] for i in items] == [{"title": t} for t in ("ok", "caf\xe9", None)]


def test_parquet_strings_that_are_not_utf8_in_maps_and_image_paths_keep_their_rows(tmp_path):
    """A map of EXIF tags, a fixed-size list or a Hugging Face image's path in latin-1 made the
    whole row group one corrupt_shard reject, its images with it."""
    raw = pa.array([b"ok", "caf\xe9".encode("latin-1")], pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # not validated, as they write it
    exif = pa.MapArray.from_arrays([0, 1, 2], pa.array(["Make", "Model"]), text)
    pairs = pa.FixedSizeListArray.from_arrays(pa.concat_arrays([text, text]).take([0, 2, 1, 3]), 2)
    pq.write_table(pa.table({"jpg": [jpeg(1), jpeg(2)], "exif": exif, "pair": pairs}),
                   tmp_path / "map.parquet")
    items = read(str(tmp_path / "map.parquet"))
    assert all(isinstance(i, Record) for i in items)
    assert [json.loads(i.metadata) for i in items] == [
        {"exif": [["Make", "ok"]], "pair": ["ok", "ok"]},
        {"exif": [["Model", "caf\xe9"]], "pair": ["caf\xe9", "caf\xe9"]}]
    image = pa.StructArray.from_arrays([pa.array([jpeg(1), None]), text], ["bytes", "path"])
    pq.write_table(pa.table({"image": image}), tmp_path / "hf.parquet")
    kept, only_named = read(str(tmp_path / "hf.parquet"))
    assert isinstance(kept, Record) and kept.data == jpeg(1)
    assert only_named.error_type == "missing" and "'caf\xe9'" in only_named.message


def test_parquet_nanosecond_times_keep_their_rows(tmp_path):
    """Python's datetimes hold microseconds: pyarrow raised on a nanosecond value (without
    pandas installed), and the row group was a corrupt_shard reject, its images with it.
    Spark's INT96 timestamps and pandas' are read as nanoseconds."""
    stamp = 1_700_000_000_123_456_789
    pq.write_table(pa.table({
        "jpg": [jpeg(1), jpeg(2)], "fetched": pa.array([stamp, None], pa.timestamp("ns")),
        "utc": pa.array([stamp, stamp], pa.timestamp("ns", tz="UTC")),
        "took": pa.array([[5], []], pa.list_(pa.duration("ns"))), "caption": ["a", "b"]}),
        tmp_path / "a.parquet")
    items = read(str(tmp_path / "a.parquet"))
    assert all(isinstance(i, Record) for i in items) and [i.caption for i in items] == ["a", "b"]
    assert [json.loads(i.metadata) for i in items] == [
        {"fetched": "2023-11-14 22:13:20.123456789", "utc": "2023-11-14 22:13:20.123456789Z", "took": ["5"],
         "caption": "a"},
        {"fetched": None, "utc": "2023-11-14 22:13:20.123456789Z", "took": [], "caption": "b"}]
    pq.write_table(pa.table({"jpg": [jpeg(1)], "fetched": pa.array([stamp], pa.timestamp("ns"))}),
                   tmp_path / "spark.parquet", use_deprecated_int96_timestamps=True)
    (item,) = read(str(tmp_path / "spark.parquet"))
    assert json.loads(item.metadata) == {"fetched": "2023-11-14 22:13:20.123456789"}


def test_parquet_nanosecond_times_are_text_of_one_form_whatever_their_batch(tmp_path):
    """pyarrow gives a nanosecond time without nanoseconds as a datetime: a column's times were
    "2023-11-14 22:13:20+00:00" in a batch of such rows and "...20.000000001Z" in the next."""
    stamps = [1_700_000_000_000_000_000] * 64 + [1_700_000_000_000_000_001] * 64
    pq.write_table(pa.table({"jpg": [b"%d" % i for i in range(128)], "caption": ["c"] * 128,
                             "t": pa.array(stamps, pa.timestamp("ns", tz="UTC"))}), tmp_path / "a.parquet")
    texts = pa.array(stamps, pa.timestamp("ns", tz="UTC")).cast(pa.string()).to_pylist()
    items = read(str(tmp_path / "a.parquet"))
    assert [json.loads(i.metadata)["t"] for i in items] == texts and {i.caption for i in items} == {"c"}


def test_parquet_times_beyond_pythons_keep_their_rows(tmp_path):
    """Epoch milliseconds written with a unit of seconds (year 55,000), a date32 of 10**9 days:
    pyarrow raised OverflowError, which no reader caught and the run failed. The column's
    dates and times in that row are text; the other rows and columns as they are anywhere."""
    millis = 1_700_000_000_123
    pq.write_table(pa.table({
        "jpg": [jpeg(1), jpeg(2)], "seen": pa.array([millis, 0], pa.timestamp("s")),
        "day": pa.array([[10**9], None], pa.list_(pa.date32())), "n": [1, 2]}), tmp_path / "a.parquet")
    items = read(str(tmp_path / "a.parquet"))
    assert [i.data for i in items] == [jpeg(1), jpeg(2)] and all(isinstance(i, Record) for i in items)
    first, second = (json.loads(i.metadata) for i in items)
    assert isinstance(first["seen"], str) and isinstance(first["day"][0], str) and first["n"] == 1
    # the other row reads as it does in a batch without the year 55,000 (one form a time)
    pq.write_table(pa.table({"jpg": [jpeg(2)], "seen": pa.array([0], pa.timestamp("s")),
                             "day": pa.array([None], pa.list_(pa.date32())), "n": [2]}),
                   tmp_path / "b.parquet")
    (alone,) = read(str(tmp_path / "b.parquet"))
    assert second == json.loads(alone.metadata) == {"seen": "1970-01-01 00:00:00", "day": None, "n": 2}


def test_a_time_beyond_pythons_makes_text_of_its_own_cell_only(tmp_path):
    """A time of year 55,000 in one row made its whole batch's times Arrow's text: the same
    time was '2023-11-14 22:13:20.123000+00:00' in one batch and '2023-11-14 22:13:20.123Z' in
    the next, as a row beside it had one or not."""
    millis = 1_700_000_000_123
    stamps = pa.array([millis, millis, millis * 1000], pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"jpg": [jpeg(i) for i in range(3)], "t": stamps}), tmp_path / "a.parquet",
                   row_group_size=1)  # the first row alone in its batch
    pq.write_table(pa.table({"jpg": [jpeg(i) for i in range(3)], "t": stamps}), tmp_path / "b.parquet")
    alone, *_ = (json.loads(i.metadata)["t"] for i in read(str(tmp_path / "a.parquet")))
    beside, same, far = (json.loads(i.metadata)["t"] for i in read(str(tmp_path / "b.parquet")))
    assert alone == beside == same and far == stamps[2:].cast(pa.string())[0].as_py()


def test_an_image_column_of_nulls_only_is_not_refused(tmp_path):
    """pandas writes an all-None column as type null: another shard may hold the images."""
    from memgen.readers import named_columns

    def image_column_holds(shards, config):
        return named_columns(shards, config).image_holds

    pq.write_table(pa.table({"image": pa.nulls(2), "caption": ["a", "b"]}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"image": ["http://x/1.jpg"], "caption": ["c"]}), tmp_path / "1.parquet")
    shards = discover([str(tmp_path)])
    assert image_column_holds(shards[:1], ReaderConfig(image_column="image")) is None
    assert image_column_holds(shards[1:], ReaderConfig(image_column="image")).startswith("text in ")
    # and its rows are records without an image, as null cells are: not one reject for the shard
    # (the shard's records counted as one), nor a run refused for its other columns of bytes
    pq.write_table(pa.table({"image": pa.nulls(2), "thumb": [b"\xff\xd8", None], "url": ["u0", "u1"]}),
                   tmp_path / "2.parquet")
    assert named_columns(discover([str(tmp_path / "2.parquet")]), ReaderConfig()).unnamed_images is None
    assert [(i.error_type, i.message) for i in read(str(tmp_path / "2.parquet"))] == [
        ("empty", "image is null (url 'u0')"), ("empty", "image is null (url 'u1')")]


def test_json_escapes_of_half_an_emoji_become_whole_characters(tmp_path):
    """A crawler cut an emoji in two: JSON's "\\ud83d" is a lone surrogate, which no UTF-8
    writer takes; the run ended with a traceback writing the url (or re-written metadata)."""
    path = write_tar(tmp_path / "a.tar", [
        ("cut", {"jpg": jpeg(1), "json": b'{"url": "http://x/\\ud83d.jpg"}'}),
        ("nan", {"jpg": jpeg(2), "json": b'{"url": "http://x/2", "title": "\\udc00", "score": NaN}'}),
        ("whole", {"jpg": jpeg(3), "json": b'{"url": "http://x/\\ud83d\\ude00"}'}),
        ("title", {"jpg": jpeg(4), "json": b'{"url": "http://x/4", "title": "half \\ud83d emoji"}'}),
    ])
    cut, nan, whole, title = read(str(path))
    assert cut.url == "http://x/\ufffd.jpg" and whole.url == "http://x/\U0001f600"
    assert json.loads(nan.metadata) == {"url": "http://x/2", "title": "\ufffd", "score": None}
    # kept as it came, the escape made DuckDB's metadata::JSON fail ("no low surrogate")
    assert title.metadata == '{"url": "http://x/4", "title": "half \ufffd emoji"}'
    for record in (cut, nan, whole, title):
        record.metadata.encode(), record.url.encode()  # what the Parquet writer does


def test_tar_sidecars_of_dotted_keys_and_repeated_keys(tmp_path):
    path = write_tar(tmp_path / "a.tgz", [
        ("img.v2", {"jpg": jpeg(1), "txt": b"\xef\xbb\xbfdotted",
                    "json": b'{"url": "http://x/1", "score": NaN}'}),
        ("b", {"jpg": jpeg(2), "json": b'{"url": {"host": "x"}}'}),
        ("img", {"jpg": jpeg(3)}),  # the key "img" again, further on: webdataset gives it twice
    ])
    first, second, third = read(str(path))
    assert first.caption == "dotted" and first.url == "http://x/1"
    assert json.loads(first.metadata, parse_constant=pytest.fail) == {"url": "http://x/1", "score": None}
    assert second.url == '{"host": "x"}'
    assert (first.locator, third.locator) == ("#img", "#img~2")
    # two dotted images (a stereo pair): each with the sidecars named like it, wherever they are
    path = write_tar(tmp_path / "b.tar", [("0001", {"left.jpg": jpeg(1), "right.txt": b"right",
                                                     "left.txt": b"left", "right.jpg": jpeg(2),
                                                     "json": b'{"url": "http://x/pair"}', "cls": b"7"})])
    left, right = read(str(path))
    assert [(r.data, r.caption, r.locator) for r in (left, right)] == [
        (jpeg(1), "left", "#0001.left.jpg"), (jpeg(2), "right", "#0001.right.jpg")]  # the second was a reject
    assert [(r.url, json.loads(r.metadata)) for r in (left, right)] == [
        ("http://x/pair", {"url": "http://x/pair", "cls": "7"})] * 2  # the sample's, but no other's caption


def test_photos_with_dotted_names_in_a_tar_are_an_image_each(tmp_path):
    """A tar of Kaggle's cat.1.jpg, cat.2.jpg: webdataset makes them one sample `cat`, and all
    but its first image were extra_image_member rejects (12,499 of Kaggle's 12,500 cats)."""
    path = write_tar(tmp_path / "cats.tar", [("cat", {"1.jpg": jpeg(1), "1.txt": b"one", "2.jpg": jpeg(2),
                                                      "3.jpg": jpeg(3), "3.txt": b"three"})])
    items = read(str(path))
    assert [(r.data, r.caption, r.source, r.ordinal) for r in items] == [
        (jpeg(1), "one", f"{path}#cat.1.jpg", 0), (jpeg(2), None, f"{path}#cat.2.jpg", 1),  # not cat.1's
        (jpeg(3), "three", f"{path}#cat.3.jpg", 2)]
    assert all(r.metadata is None for r in items)  # a caption of another image is not metadata either


def test_too_large_file_reports_its_size(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg(1, quality=100))
    (item,) = read(str(path), ReaderConfig(max_bytes=100, reject_data_cap=10))
    assert item.error_type == "too_large" and item.n_bytes == path.stat().st_size and len(item.data) == 10


def test_a_glob_leaves_hidden_files_out_as_a_folder_does_unless_it_names_them(tmp_path):
    """`hid/*` read hid/.thumbs/*.jpg into the memory and made macOS ._x.jpg files rejects,
    where `hid` (a folder) and a shell's glob leave them out."""
    for name in ("pics/a.jpg", "pics/._a.jpg", ".thumbs/t.jpg", "b.jpg", ".c.jpg"):
        (tmp_path / "hid" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hid" / name).write_bytes(jpeg(len(name)))

    def names(pattern: str) -> list[str]:
        return [s.uri.split("/hid/", 1)[1] for s in discover([str(tmp_path / "hid" / pattern)])]

    assert names("*") == names("**") == ["b.jpg", "pics/a.jpg"]
    assert names("pics/*.jpg") == ["pics/a.jpg"]
    assert names(".*") == [".c.jpg", ".thumbs/t.jpg"]  # asked for by name
    assert names(".thumbs/*") == [".thumbs/t.jpg"]
    assert [s.uri.split("/hid/", 1)[1] for s in discover([str(tmp_path / "hid")])] == ["b.jpg", "pics/a.jpg"]


def test_discover_takes_names_as_they_are(tmp_path):
    (tmp_path / "pics [2020]").mkdir()
    (tmp_path / "pics [2020]" / "a.jpg").write_bytes(jpeg(1))
    (tmp_path / "pics [2020]" / ".cache").mkdir()
    (tmp_path / "pics [2020]" / ".cache" / "thumb.jpg").write_bytes(jpeg(2))
    (shard,) = discover([str(tmp_path / "pics [2020]")])  # a glob character in an existing name
    assert shard.uri.endswith("pics [2020]/a.jpg")  # hidden folders are not walked
    assert len(discover([str(tmp_path / "pics [2020]" / "a.jpg"),
                         str(tmp_path / "pics [2020]" / ".." / "pics [2020]" / "a.jpg")])) == 1
    # and an output beside it is not inside it: the glob `pics [2020]` matches `pics 2`
    assert input_folder_holding(str(tmp_path / "pics 2" / "m"), [str(tmp_path / "pics [2020]")]) is None
    inside = str(tmp_path / "pics [2020]" / "m")
    assert input_folder_holding(inside, [str(tmp_path / "pics [2020]")]) == str(tmp_path / "pics [2020]")


def test_split_source_finds_the_shard_in_names_with_hashes():
    assert split_source("/d/a#b.jpg") == ("/d/a#b.jpg", "")
    assert split_source("s3://b/t#1.tar#key#2") == ("s3://b/t#1.tar", "key#2")
    assert split_source("/d/x.PARQUET#000000003") == ("/d/x.PARQUET", "000000003")


def test_file_name_that_is_not_utf8(tmp_path):
    name = bytes(tmp_path / "caf") + b"\xe9.jpg"
    with open(name, "wb") as f:
        f.write(jpeg(1))
    (shard,) = discover([str(tmp_path)])
    assert shard.uri == str(tmp_path / "caf\\xe9.jpg") and shard.uri.encode()  # printable, valid UTF-8
    (item,) = read_shard(shard, CONFIG)
    assert isinstance(item, Record) and item.data == jpeg(1) and item.source == shard.uri


def test_an_extension_that_comes_again_under_the_same_key_starts_another_sample(tmp_path):
    """k.jpg k.txt k.jpg k.txt: the first image was kept with the second one's caption and
    URL, and the first caption was in no table. Two samples, the second "k~2", as a key that
    comes again further on (webdataset stops there: "duplicate file name")."""
    path = write_tar(tmp_path / "a.tar", [sample("k", jpeg(1), "first", "http://x/1"),
                                         sample("k", jpeg(2), "second", "http://x/2")])
    first, second = read(str(path))
    assert (first.data, first.caption, first.url, first.locator) == (jpeg(1), "first", "http://x/1", "#k")
    assert (second.data, second.caption, second.url) == (jpeg(2), "second", "http://x/2")
    assert second.locator == "#k~2"
    # another image of the key between: an extra image of the first sample, never its caption's
    path = write_tar(tmp_path / "b.tar", [sample("k", jpeg(1), "red"),
                                         ("k", {"png": jpeg(2), "txt": b"blue"})])
    kept, extra, captioned = read(str(path))
    assert [(r.data, r.caption, r.locator) for r in (kept, extra)] == [
        (jpeg(1), "red", "#k.jpg"), (jpeg(2), "red", "#k.png")]  # the sample's image too, never blue's
    assert (captioned.error_type, captioned.data, captioned.source) == ("no_image", b"blue", f"{path}#k~2")


def test_a_linked_member_makes_its_sample_a_reject_that_says_so(tmp_path):
    """GNU tar stores a second name of one file as a hard link: its record was in no table
    and its caption a no_image reject."""
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        for name, data, link in (("a.jpg", jpeg(1), None), ("b.jpg", b"", tarfile.LNKTYPE),
                                 ("b.txt", b"caption of b", None), ("c.jpg", b"", tarfile.SYMTYPE)):
            info = tarfile.TarInfo(name)
            if link is None:
                info.size = len(data)
            else:
                info.type, info.linkname = link, "a.jpg"
            tar.addfile(info, io.BytesIO(data) if link is None else None)
    a, b, c = read(str(path))
    assert isinstance(a, Record) and a.data == jpeg(1)
    assert (b.error_type, b.source, b.stage) == ("link_member", f"{path}#b", "read")
    assert b.message.startswith("b.jpg is a link to a.jpg")
    assert c.message.startswith("c.jpg is a link to a.jpg")


def test_a_linked_image_of_a_pair_is_a_reject_of_its_own_beside_the_other(tmp_path):
    """left.jpg and a right.jpg that is a hard link: the whole sample was one link_member reject."""
    path = tmp_path / "pairs.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("p.left.jpg")
        info.size = len(jpeg(1))
        tar.addfile(info, io.BytesIO(jpeg(1)))
        info = tarfile.TarInfo("p.right.jpg")
        info.type, info.linkname = tarfile.LNKTYPE, "p.left.jpg"
        tar.addfile(info)
    left, right = read(str(path))
    assert (left.data, left.locator) == (jpeg(1), "#p.left.jpg")
    assert (right.error_type, right.source) == ("link_member", f"{path}#p.right.jpg")


def test_a_linked_caption_is_a_reject_of_its_own_beside_its_image_record(tmp_path):
    """A sample whose caption or metadata was a link lost its regular image: the whole sample
    was one link_member reject."""
    path = tmp_path / "captions.tar"
    with tarfile.open(path, "w") as tar:
        for name, data, link in (("a.jpg", jpeg(1), None), ("a.txt", b"shared caption", None),
                                 ("b.jpg", jpeg(2), None), ("b.txt", b"", "a.txt"), ("b.json", b"", "a.txt"),
                                 ("c.txt", b"", "a.txt"), ("COPYING", b"", "a.txt")):
            info = tarfile.TarInfo(name)
            if link is None:
                info.size = len(data)
            else:
                info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info, io.BytesIO(data) if link is None else None)
    a, b, b_txt, b_json, c_txt, copying = read(str(path))
    assert (a.data, a.caption) == (jpeg(1), "shared caption")
    assert isinstance(b, Record) and (b.data, b.caption, b.source) == (jpeg(2), None, f"{path}#b")
    assert [(r.error_type, r.source) for r in (b_txt, b_json, c_txt)] == [
        ("link_member", f"{path}#b.txt"), ("link_member", f"{path}#b.json"), ("link_member", f"{path}#c.txt")]
    assert b_json.message.startswith("b.json is a link to a.txt")
    assert (copying.error_type, copying.source) == ("link_member", f"{path}#COPYING")  # no suffix: no "."


def test_device_and_pipe_members_make_their_samples_not_a_file_rejects(tmp_path):
    """They were skipped as directories are: a sample of one was in no table, and a pipe's
    caption became a no_image reject."""
    path = tmp_path / "special.tar"
    with tarfile.open(path, "w") as tar:
        for name, kind in (("a.jpg", None), ("pipe.jpg", tarfile.FIFOTYPE), ("pipe.txt", None),
                           ("dev.jpg", tarfile.CHRTYPE), ("blk.png", tarfile.BLKTYPE)):
            info = tarfile.TarInfo(name)
            data = jpeg(1) if name == "a.jpg" else b"caption"
            if kind is None:
                info.size = len(data)
            else:
                info.type = kind
            tar.addfile(info, io.BytesIO(data) if kind is None else None)
    a, pipe, dev, blk = read(str(path))
    assert isinstance(a, Record) and a.data == jpeg(1)
    assert [(r.stage, r.error_type, r.source) for r in (pipe, dev, blk)] == [
        ("read", "not_a_file", f"{path}#{key}") for key in ("pipe", "dev", "blk")]
    assert pipe.message == "pipe.jpg is a named pipe, not a regular file"
    assert (dev.message, blk.message) == ("dev.jpg is a character device, not a regular file",
                                          "blk.png is a block device, not a regular file")


def test_a_caption_or_metadata_larger_than_max_bytes_rejects_its_record(tmp_path):
    """It was kept cut to its head (the URL of a cut .json lost, the rest of it a JSON string)."""
    big = max(len(jpeg(i)) for i in range(1, 4)) + 100
    big_json = json.dumps({"blob": "x" * big, "url": "http://x/m.jpg"}).encode()
    path = write_tar(tmp_path / "a.tar", [("m", {"jpg": jpeg(1), "json": big_json}),
                                         ("n", {"jpg": jpeg(2), "txt": b"c" * big}),
                                         sample("ok", jpeg(3), "fits")])
    config = ReaderConfig(max_bytes=big - 1, reject_data_cap=50)
    m, n, ok = read(str(path), config)
    assert (m.error_type, m.n_bytes, m.data) == ("too_large", len(jpeg(1)), jpeg(1)[:50])
    assert m.message == f"its .json member is {len(big_json)} bytes > max_bytes {config.max_bytes}"
    assert n.error_type == "too_large" and f".txt member is {big} bytes" in n.message
    assert isinstance(ok, Record) and ok.caption == "fits"


def test_a_folder_images_caption_or_metadata_larger_than_max_bytes_rejects_its_record(tmp_path):
    """As a tar's member does: it was kept cut to 1 MiB, with no reject."""
    big = len(jpeg(1)) + 100
    (tmp_path / "m.jpg").write_bytes(jpeg(1))
    (tmp_path / "m.json").write_text(json.dumps({"blob": "x" * big, "url": "http://x/m.jpg"}))
    (tmp_path / "ok.jpg").write_bytes(jpeg(2))
    (tmp_path / "ok.txt").write_text("fits")
    config = ReaderConfig(max_bytes=big - 1, reject_data_cap=50)
    m, ok = (item for shard in discover([str(tmp_path)]) for item in read_shard(shard, config))
    assert (m.stage, m.error_type, m.n_bytes, m.data) == ("read", "too_large", len(jpeg(1)), jpeg(1)[:50])
    size = (tmp_path / "m.json").stat().st_size
    assert m.message == f"its .json file is {size} bytes > max_bytes {config.max_bytes}"
    assert isinstance(ok, Record) and ok.caption == "fits"


def test_a_binary_caption_column_is_decoded_as_a_tars_text(tmp_path):
    path = tmp_path / "b.parquet"
    caption = pa.array([b"caf\xe9 \x93cat\x94"], pa.binary())  # Windows-1252, as a tar's .txt may be
    pq.write_table(pa.table({"jpg": [jpeg(1)], "caption": caption}), path)
    (item,) = read(str(path))
    assert item.caption == "café “cat”"


def test_a_named_pipe_is_a_reject_not_a_read_that_never_ends(tmp_path):
    import threading

    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "photo.jpg").write_bytes(jpeg(1))
    (tmp_path / "piped.jpg").write_bytes(jpeg(2))
    os.mkfifo(tmp_path / "piped.txt")  # a caption that is a pipe: its image's read never ended
    shards = discover([str(tmp_path)])
    items: list = []
    reading = threading.Thread(target=lambda: items.extend(
        item for shard in shards for item in read_shard(shard, CONFIG)), daemon=True)
    reading.start()
    reading.join(60)
    assert not reading.is_alive(), "the read of a named pipe waited for a writer"
    photo, pipe, piped = items
    assert (pipe.stage, pipe.error_type) == ("open", "not_a_file") and "a named pipe" in pipe.message
    assert (piped.stage, piped.error_type, piped.data) == ("open", "not_a_file", jpeg(2))
    assert piped.message == "its .txt file is a named pipe, not a regular file"
    assert isinstance(photo, Record)


def test_local_names_with_a_double_colon_are_read_as_they_are(tmp_path):
    """fsspec.open reads "::" as a chain of filesystems: every image, tar and Parquet file in a
    folder named crawl::2024 was a `missing` reject, and its caption was lost."""
    folder = tmp_path / "crawl::2024"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(1))
    (folder / "a.txt").write_bytes(b"a caption")
    write_tar(folder / "t.tar", [sample("k", jpeg(2), "k caption")])
    write_parquet(folder / "p.parquet", [{"key": "r", "image": jpeg(3), "caption": "r caption"}])
    items = [item for shard in discover([str(tmp_path)]) for item in read_shard(shard, CONFIG)]
    assert [shard.uri for shard in discover([str(folder), f"{folder}/t.tar"])] == [  # named: no match
        str(folder / name) for name in ("a.jpg", "p.parquet", "t.tar")]
    assert [(type(i).__name__, i.source, i.caption) for i in items] == [
        ("Record", str(folder / "a.jpg"), "a caption"),
        ("Record", str(folder / "p.parquet#r"), "r caption"),
        ("Record", str(folder / "t.tar#k"), "k caption")]


class CountedSet(set):
    """A set that counts its membership tests: how many names Keys tried."""

    lookups = 0

    def __contains__(self, name: object) -> bool:
        self.lookups += 1
        return super().__contains__(name)


def test_a_key_repeated_many_times_is_numbered_without_searching_from_the_start():
    """Each repeat of a key searched k~2, k~3, ... from the start: a Parquet shard whose key
    column repeats one value 16,000 times took 25 s a read (and each shard is read twice)."""
    keys = Keys()
    keys.seen = seen = CountedSet({"k~3"})  # a literal k~3 key came first: its repeat goes on to k~4
    names = [keys("k") for _ in range(1000)]
    assert names[:4] == ["k", "k~2", "k~4", "k~5"] and names[-1] == "k~1001"
    assert seen.lookups < 3 * len(names)  # searching from the start: ~500,000


def test_a_samples_other_text_members_are_kept_in_its_metadata_by_extension(tmp_path):
    """A webdataset sample's `.cls` label (ImageNet-style shards) was in no table: a Parquet
    shard's other columns are kept in metadata, a tar's other members were dropped."""
    npy = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}\x00\x00\x80\x3f"
    path = write_tar(tmp_path / "labels.tar", [
        ("a", {"jpg": jpeg(1), "cls": b"281\n", "json": b'{"url": "http://x/a.jpg"}'}),
        ("b", {"jpg": jpeg(2), "cls": b"7", "npy": npy}),  # binary: not kept
        ("c", {"jpg": jpeg(3), "id": b"c-1", "json": b'[1, 2]'}),  # metadata that is not an object
        ("d", {"jpg": jpeg(4), "cls": b"9", "json": b'{"cls": 3}'}),  # the .json's own value stays
        ("e", {"jpg": jpeg(5), "txt": b"only a caption", "json": b'{"url": "http://x/e.jpg"}'}),
        ("f", {"jpg": jpeg(6), "url": b"http://x/f.jpg\n"})])  # its url as a member of its own
    a, b, c, d, e, f = read(str(path))
    assert (f.url, json.loads(f.metadata)) == ("http://x/f.jpg", {"url": "http://x/f.jpg"})
    assert (json.loads(a.metadata), a.url) == ({"url": "http://x/a.jpg", "cls": "281"}, "http://x/a.jpg")
    assert json.loads(b.metadata) == {"cls": "7"}
    assert json.loads(c.metadata) == {"json": [1, 2], "id": "c-1"}
    assert json.loads(d.metadata) == {"cls": 3}
    assert (e.metadata, e.caption) == ('{"url": "http://x/e.jpg"}', "only a caption")  # as written


def test_a_tar_cut_after_a_member_keeps_what_it_holds_and_says_it_was_cut(tmp_path):
    """Cut at a header (a full disk cuts at 4 KiB), its later samples were lost without a
    word: 2 records, 0 rejects."""
    whole = write_tar(tmp_path / "whole.tar", [sample(f"k{i}", jpeg(i), f"caption {i}") for i in range(3)])
    data = whole.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:data.index(b"k1.txt") // 512 * 512])  # at k1.txt's header
    k0, k1, reject = read(str(cut))
    assert (k0.caption, k1.data, k1.caption) == ("caption 0", jpeg(1), None)
    assert (reject.stage, reject.error_type, reject.source) == ("read", "corrupt_shard", str(cut))
    assert reject.message.startswith("TarDamage: no end-of-archive marker: cut short after a member")


def test_metadata_merged_with_text_members_stays_json_for_numbers_too_large_for_a_float(tmp_path):
    """A .json number too large for a float (1e400) is read as inf: merged with a `.cls` label
    and written again, the metadata held `Infinity`, which JSON has not (JSON.parse, jq fail)."""
    path = write_tar(tmp_path / "huge.tar", [("a", {"jpg": jpeg(1), "cls": b"3", "json": b'{"w": 1e400}'})])
    (a,) = read(str(path))
    assert json.loads(a.metadata, parse_constant=lambda name: pytest.fail(name)) == {"w": None, "cls": "3"}


def hf_parquet(path, images: list[dict], **columns) -> str:
    """A Parquet as `datasets` writes an Image column of files it did not embed: {bytes: null, path}."""
    hf_image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"image": {"_type": "Image"}} | {n: {"dtype": "string", "_type": "Value"} for n in columns}
    table = pa.table({"image": pa.array(images, hf_image), **columns}).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    with fsspec.open(str(path), "wb") as f:
        pq.write_table(table, f)
    return str(path)


def test_hugging_face_images_all_kept_as_files_are_read_whatever_type_their_null_bytes_got(tmp_path):
    """pyarrow types a `bytes` field no row holds as null (`Table.from_pylist` of images kept as
    files): the shard was one no_image_column reject, its images and rows lost in it."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(jpeg(1))
    (tmp_path / "img" / "b.jpg").write_bytes(jpeg(2))
    features = {"image": {"_type": "Image"}, "images": {"feature": {"_type": "Image"}, "_type": "Sequence"}}
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    single = pa.Table.from_pylist([{"image": {"bytes": None, "path": "img/a.jpg"}},
                                   {"image": {"bytes": None, "path": "img/gone.jpg"}}])
    listed = pa.Table.from_pylist([{"images": [{"bytes": None, "path": "img/a.jpg"},
                                               {"bytes": None, "path": "img/b.jpg"}]}])
    for name, table in (("single", single), ("listed", listed)):
        assert pa.types.is_null(table.schema.field(0).type.field("bytes").type if name == "single"
                                else table.schema.field(0).type.value_type.field("bytes").type)
        pq.write_table(table.replace_schema_metadata(metadata), tmp_path / f"{name}.parquet")
    a, gone = read(str(tmp_path / "single.parquet"))
    assert (a.data, gone.error_type) == (jpeg(1), "missing")
    assert [r.data for r in read(str(tmp_path / "listed.parquet"))] == [jpeg(1), jpeg(2)]


def test_a_hugging_face_image_that_names_its_file_is_read_from_beside_the_parquet(tmp_path):
    """`datasets` saved without embedding keeps bytes null and the file's path, relative to the
    dataset's folder or absolute: it was an empty reject ("which is not read"), every image lost."""
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "a b.jpg").write_bytes(jpeg(1))
    (tmp_path / "elsewhere.jpg").write_bytes(jpeg(2))
    (tmp_path / "up.jpg").write_bytes(jpeg(3))
    path = hf_parquet(tmp_path / "data" / "train.parquet", [
        {"bytes": None, "path": "img/a b.jpg"}, {"bytes": None, "path": str(tmp_path / "elsewhere.jpg")},
        {"bytes": None, "path": "../up.jpg"}, {"bytes": jpeg(4), "path": "img/embedded.jpg"},
        {"bytes": None, "path": "img/gone.jpg"}, {"bytes": None, "path": "img"}],
        url=["u0", "u1", "u2", "u3", "u4", "u5"], caption=["c0", "c1", "c2", "c3", "c4", "c5"])
    *records, gone, folder = read(path)
    assert [(r.data, r.caption, r.url) for r in records] == [
        (jpeg(1), "c0", "u0"), (jpeg(2), "c1", "u1"), (jpeg(3), "c2", "u2"), (jpeg(4), "c3", "u3")]
    # the key and source are the row's, as an embedded image's: a file's name changes nothing
    assert [(r.ordinal, r.source) for r in records] == [(i, f"{path}#{i:09d}") for i in range(4)]
    assert (gone.ordinal, gone.source) == (4, f"{path}#000000004")
    assert (gone.stage, gone.error_type) == ("read", "missing")
    assert gone.message.startswith("image.path 'img/gone.jpg': FileNotFoundError")
    assert gone.message.endswith("(url 'u4')")  # the reject is all that is left of the record
    # a folder is not worth a retry (unreadable is: a rerun over the memory would be refused)
    assert (folder.error_type, folder.source) == ("not_a_file", f"{path}#000000005")
    assert folder.message == "image.path 'img' is a folder, not a regular file (url 'u5')"


def test_a_hugging_face_image_file_over_max_bytes_or_a_pipe_is_a_reject_unread(tmp_path):
    import threading

    big = jpeg(1, quality=100)
    (tmp_path / "big.jpg").write_bytes(big)
    half = jpeg(2)[:len(jpeg(2)) // 2]
    (tmp_path / "half.jpg").write_bytes(half)  # a JPEG cut short after its header: the decode says so
    (tmp_path / "stub.jpg").write_bytes(jpeg(2)[:40])  # cut in its header: no image Pillow can tell
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it waits for a writer: the run never ended
    path = hf_parquet(tmp_path / "a.parquet", [{"bytes": None, "path": name}
                                               for name in ("big.jpg", "half.jpg", "stub.jpg", "pipe.jpg")])
    items: list = []
    config = ReaderConfig(max_bytes=len(big) - 1, reject_data_cap=16)
    reading = threading.Thread(target=lambda: items.extend(read(path, config)), daemon=True)
    reading.start()
    reading.join(60)
    assert not reading.is_alive(), "the read of a named pipe waited for a writer"
    too_large, half_read, stub, pipe = items
    assert (too_large.error_type, too_large.n_bytes, too_large.data) == ("too_large", len(big), None)
    assert too_large.message == (f"image.path 'big.jpg' is {len(big)} bytes > max_bytes {len(big) - 1} "
                                 "(its bytes are not kept: a path may name any file)")
    assert isinstance(half_read, Record) and half_read.data == half
    assert (stub.error_type, stub.n_bytes, stub.data) == ("not_an_image", 40, None)
    assert (pipe.stage, pipe.error_type) == ("read", "not_a_file")
    assert pipe.message == "image.path 'pipe.jpg' is a named pipe, not a regular file"


def test_a_hugging_face_path_to_a_file_that_is_no_image_copies_none_of_it(tmp_path):
    """A Parquet from elsewhere may name any file this machine reads (~/.ssh/id_rsa, ../.env):
    its bytes went on as a record and into the rejects table as a not_an_image reject's."""
    secret = b"-----BEGIN OPENSSH PRIVATE KEY----- not an image"
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "id_rsa").write_bytes(secret)
    (tmp_path / "data").mkdir()
    path = hf_parquet(tmp_path / "data" / "a.parquet", [
        {"bytes": None, "path": str(tmp_path / "home" / "id_rsa")},
        {"bytes": None, "path": "../home/id_rsa"}], url=["u0", "u1"])
    for reject in read(path):
        assert (reject.stage, reject.error_type, reject.n_bytes, reject.data) == (
            "read", "not_an_image", len(secret), None)
        assert "its bytes are not kept: a path may name any file" in reject.message
        assert reject.message.endswith("')") and "BEGIN" not in reject.message


def test_a_file_a_hugging_face_path_names_is_an_image_only_by_its_formats_signature():
    """Pillow opens formats without a signature (TGA: one random binary in 20,000 passed) and
    reads FITS headers from text: such a file went on as an image or, failing at the decode,
    kept its bytes as its reject's. The web's formats, told by their first bytes, pass."""
    from memgen.decode import identified

    assert identified(jpeg(1)) and identified(encode(make_image(1), "PNG")) and identified(
        encode(make_image(1), "WEBP"))
    tga = bytes([0, 0, 2]) + bytes(9) + b"\x10\x00\x10\x00\x18\x00" + bytes(16 * 16 * 3)
    assert Image.open(io.BytesIO(tga)).format == "TGA"  # what Pillow makes of it
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n"
    for data in (tga, b"SIMPLE  =" + b" " * 71, eps, b"x" * 10):
        assert not identified(data), data[:20]


def test_a_hugging_face_image_path_holding_a_nul_is_its_rows_reject_not_its_row_groups(tmp_path):
    """A path with a NUL byte (a damaged or hostile Parquet) cannot name a file: os.stat raised
    ValueError, which made the rest of the row group, its good images too, a corrupt_shard reject."""
    (tmp_path / "ok.jpg").write_bytes(jpeg(1))
    names = ("a\x00b.jpg", "ok.jpg")
    path = hf_parquet(tmp_path / "a.parquet", [{"bytes": None, "path": n} for n in names], url=["u0", "u1"])
    nul, ok = read(path)
    assert (nul.ordinal, nul.stage, nul.source) == (0, "read", f"{path}#000000000")
    assert (nul.error_type, nul.message) == (
        "empty", "image.path 'a\\x00b.jpg' is not read: a file name cannot hold a NUL byte (url 'u0')")
    assert isinstance(ok, Record) and (ok.data, ok.url) == (jpeg(1), "u1")


def test_a_remote_parquets_image_files_are_read_from_its_folder_never_from_the_workers_disk(tmp_path):
    """A relative path is read on the shard's own file system (its bucket); an absolute one,
    or one that leads out of the bucket, would read another place than the dataset's: rejects
    that say why. A URL is not downloaded (memgen is no crawler)."""
    local = tmp_path / "local.jpg"
    local.write_bytes(jpeg(9))
    with fsspec.open("memory://hfpath/data/img/0.jpg", "wb") as f:
        f.write(jpeg(1))
    with fsspec.open("memory://hfpath-other/x.jpg", "wb") as f:
        f.write(jpeg(2))
    path = hf_parquet("memory://hfpath/data/train.parquet", [
        {"bytes": None, "path": name} for name in ("img/0.jpg", str(local), "../../hfpath-other/x.jpg",
                                                   "https://example.com/x.jpg", "img/gone.jpg")],
        url=["u0", "u1", "u2", "u3", "u4"])
    kept, absolute, outside, url, gone = read(path)
    assert isinstance(kept, Record) and kept.data == jpeg(1) and kept.source == f"{path}#000000000"
    assert (absolute.error_type, absolute.message) == (
        "empty", f"image.path {str(local)!r} is not read: an absolute path is read only beside a local "
                 "Parquet, not one in a bucket (url 'u1')")
    assert (outside.error_type, outside.message) == (
        "empty", "image.path '../../hfpath-other/x.jpg' is not read: it leads out of the shard's bucket "
                 "'hfpath' (url 'u2')")
    assert (url.error_type, url.message) == (
        "empty", "image.path 'https://example.com/x.jpg' is not read: a URL is not downloaded "
                 "(img2dataset downloads them) (url 'u3')")
    assert (gone.error_type, gone.source) == ("missing", f"{path}#000000004")


def hive_table(tmp_path) -> dict[str, str]:
    """A Hive-partitioned table, its files named by pyarrow's (lang, year, x y); returns
    {file's first url: its path}."""
    files = {"u0": "data/lang=en/year=2023/part-0.parquet",
             "u1": "data/lang=__HIVE_DEFAULT_PARTITION__/year=2024/part-0.parquet",
             "u2": "data/lang=de/year=2023/x%20y=a%2Fb%3Dc/part-0.parquet"}
    for n, (url, name) in enumerate(files.items()):
        (tmp_path / name).parent.mkdir(parents=True)
        # a column named as a partition: the partition's value wins, as pyarrow.dataset reads it
        pq.write_table(pa.table({"jpg": [jpeg(n)], "url": [url], "lang": ["from the file"], "n": [n]}),
                       tmp_path / name)
    return {url: str(tmp_path / name) for url, name in files.items()}


def partitions_read(shards: list[Shard]) -> dict[str, dict]:
    """{url: its record's metadata} of each shard's one record."""
    records = [item for shard in shards for item in read_shard(shard, CONFIG)]
    assert all(isinstance(r, Record) for r in records)
    return {r.url: json.loads(r.metadata) for r in records}


def test_hive_partitions_below_the_input_folder_are_metadata_as_pyarrow_reads_them(tmp_path):
    """LAION-style tables are laid out as lang=en/year=2023/part-0.parquet: the folders' values
    were lost. They are the record's metadata, text, as pyarrow.dataset reads the folder."""
    hive_table(tmp_path)
    reference = ds.dataset(str(tmp_path / "data"), partitioning=ds.HivePartitioning.discover(
        infer_dictionary=False)).to_table().to_pylist()
    # pyarrow's numbers as text; a partition of other files only (`x y`) is null in its unified table
    expected = {row["url"]: {k: (v if v is None or k in ("url", "n") else str(v)) for k, v in row.items()
                             if k != "jpg" and (k != "x y" or v is not None)} for row in reference}
    assert expected["u2"]["x y"] == "a/b=c" and expected["u1"]["lang"] is None  # what pyarrow says
    for given in (str(tmp_path / "data"), str(tmp_path / "data" / "lang=*" / "**" / "*.parquet")):
        assert partitions_read(discover([given])) == expected
    # partitions above the folder given are not its table's (pyarrow.dataset leaves them too)
    below = partitions_read(discover([str(tmp_path / "data" / "lang=en")]))
    assert below == {"u0": {"url": "u0", "lang": "from the file", "n": 0, "year": "2023"}}


def test_hive_partitions_of_a_file_named_are_its_whole_paths_and_one_root_whatever_the_order(tmp_path):
    """A file named has no input folder: its path's key=value folders (as pyarrow reads a list
    of files). Listed by two inputs, a file takes the root leaving it more partitions, in
    either order (each runner reads the same metadata)."""
    files = hive_table(tmp_path)
    (named,) = discover([files["u0"]])
    assert named.partitions == (("lang", "en"), ("year", "2023"))
    assert partitions_read([named])["u0"] == {"url": "u0", "lang": "en", "n": 0, "year": "2023"}
    folder, sub = str(tmp_path / "data"), str(tmp_path / "data" / "lang=en")
    for inputs in ([sub, folder], [folder, sub], [folder, files["u0"]], [files["u0"], sub]):
        assert discover(inputs)[-1].partitions == named.partitions, inputs  # u0, lang=en: the last


def test_a_file_listed_with_other_hive_partitions_lists_otherwise(tmp_path):
    """A rerun over the same files whose partitions differ (listed from a folder above or
    below one) would write other metadata: its listing is not the same one."""
    from memgen.shards import listing_digest

    hive_table(tmp_path)
    below = str(tmp_path / "data" / "lang=en" / "year=2023")
    above = discover([str(tmp_path / "data" / "lang=en")])
    assert [s.uri for s in discover([below])] == [s.uri for s in above] and above[0].partitions
    assert listing_digest(discover([below])) != listing_digest(above)
    assert listing_digest(discover([below])) == listing_digest(discover([below]))


def test_hive_partitions_of_remote_paths():
    from memgen.shards import hive_partitions
    # without a root: the folders after the scheme and bucket (or host), not a query's
    assert hive_partitions("s3://k=bucket/laion/lang=en/part=0%201/x.parquet", None) == {
        "lang": "en", "part": "0 1"}
    assert hive_partitions("https://h/d/lang=en/x.parquet?sig=a=b/c=d", None) == {"lang": "en"}
    assert hive_partitions("s3://b/t/a=1/a=2/x.parquet", "s3://b/t") == {"a": "2"}  # the lower folder's
    assert hive_partitions("s3://b/t/a=1/x.parquet", "s3://b/t/a=1") == {}
    assert hive_partitions("s3://b/t/=1/b=/x=y.parquet", "s3://b") == {"b": ""}  # no key: no partition


def test_hive_partitions_of_tar_samples_are_metadata_as_a_parquets_rows_have_them(tmp_path):
    """WebDataset tars laid out as lang=en/year=2023/00000.tar lost their folders' values
    (only Parquet rows had them). A sample has them as a Parquet row beside it does: a
    partition wins over a .json key or text member of its name; the sample's url stays its own."""
    folder = tmp_path / "data" / "lang=en" / "year=2023"
    folder.mkdir(parents=True)
    write_tar(folder / "00000.tar", [
        ("a", {"jpg": jpeg(1), "json": b'{"url": "http://x/a.jpg", "lang": "from the json", "w": 1e400}'}),
        ("b", {"jpg": jpeg(2), "cls": b"281", "year": b"1999"}),  # text members: the partition wins
        ("c", {"jpg": jpeg(3), "json": b"[1, 2]"}),  # not an object: under "json", as with text members
        ("d", {"jpg": jpeg(4), "json": b"{not json"}),
        ("e", {"jpg": jpeg(5)})])  # nothing else: the partitions alone
    pq.write_table(pa.table({"jpg": [jpeg(6)], "url": ["p"], "lang": ["file"]}), folder / "p.parquet")
    shards = discover([str(tmp_path / "data")])
    (tar,) = [s for s in shards if s.kind == "tar"]
    a, b, c, d, e = read_shard(tar, CONFIG)
    hive = {"lang": "en", "year": "2023"}
    assert (json.loads(a.metadata), a.url) == ({"url": "http://x/a.jpg", "w": None} | hive, "http://x/a.jpg")
    assert json.loads(b.metadata) == {"cls": "281"} | hive
    assert json.loads(c.metadata) == {"json": [1, 2]} | hive
    assert json.loads(d.metadata) == {"json": "{not json"} | hive
    assert json.loads(e.metadata) == hive
    (row,) = read_shard(next(s for s in shards if s.kind == "parquet"), CONFIG)
    assert {k: v for k, v in json.loads(row.metadata).items() if k in hive} == hive  # the same rule
    # listed from the partition folder itself: no partitions, the .json as written, byte for byte
    (below,) = [s for s in discover([str(folder)]) if s.kind == "tar"]
    assert [r.metadata for r in read_shard(below, CONFIG)] == [
        '{"url": "http://x/a.jpg", "lang": "from the json", "w": 1e400}', '{"cls": "281", "year": "1999"}',
        "[1, 2]", '"{not json"', None]


def test_a_deeply_nested_json_member_merged_with_partitions_or_text_members_is_kept(tmp_path):
    """A .json nested deeper than the merge recursed (json.loads parses twice as deep) raised
    RecursionError out of the reader, failing the run, where partitions or text members are
    added; it is kept as text under "json", as a .json too deep to parse is. Every depth up to
    where the first parse fails: the second, a few frames deeper, failed just before it."""
    deeps = ["[" * depth + "]" * depth for depth in range(500, 1001)]
    folder = tmp_path / "data" / "lang=en"
    folder.mkdir(parents=True)
    write_tar(folder / "00000.tar", [(f"a{i}", {"jpg": jpeg(1), "json": d.encode()})
                                     for i, d in enumerate(deeps)])
    write_tar(tmp_path / "plain.tar", [("b", {"jpg": jpeg(2), "json": deeps[0].encode(), "cls": b"7"})])
    (tar,) = discover([str(tmp_path / "data")])
    expected = [{"json": d, "lang": "en"} for d in deeps]
    assert [json.loads(r.metadata) for r in read_shard(tar, CONFIG)] == expected
    (b,) = read(str(tmp_path / "plain.tar"))
    assert json.loads(b.metadata) == {"json": deeps[0], "cls": "7"}


def test_a_json_member_deeper_than_the_limit_is_its_text_however_deep_the_callers_stack():
    """json.loads of a .json about 950 levels deep parsed or raised RecursionError as deep as
    its caller's stack was: kept as JSON or as text on one worker and the other. Brackets in
    strings are no nesting."""
    from memgen.readers.fields import MERGE_DEPTH, metadata_and_url

    deep = "[" * 950 + "]" * 950
    in_strings = json.dumps({"a": "[" * 300, "b": "{" * 300, "c": '\\"[[' * 100})

    def called(depth: int, text: str):
        return metadata_and_url(text) if depth == 0 else called(depth - 1, text)

    assert metadata_and_url(deep) == called(sys.getrecursionlimit() - 100, deep) == (json.dumps(deep), None)
    limit = "[" * MERGE_DEPTH + "]" * MERGE_DEPTH
    assert metadata_and_url(limit) == (limit, None)
    assert metadata_and_url(f"[{limit}]") == (json.dumps(f"[{limit}]"), None)
    assert json.loads(metadata_and_url(in_strings)[0]) == json.loads(in_strings)


def test_hive_partitions_of_image_files_are_metadata_over_their_json_file(tmp_path):
    """Folders of images (img2dataset's files output, training folders) under key=value
    folders: each image's metadata holds them, over its .json sidecar's keys of their name."""
    folder = tmp_path / "photos" / "source=flickr" / "day=2024-01-02"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg(1))
    (folder / "a.txt").write_bytes(b"a cat")
    (folder / "a.json").write_text('{"url": "http://x/a.jpg", "source": "camera", "width": 160}')
    (folder / "b.jpg").write_bytes(jpeg(2))  # no sidecars
    (folder / "c.jpg").write_bytes(jpeg(3))
    (folder / "c.json").write_text('["not", "an object"]')
    hive = {"source": "flickr", "day": "2024-01-02"}
    a, b, c = (item for shard in discover([str(tmp_path / "photos")]) for item in read_shard(shard, CONFIG))
    assert (a.caption, a.url, json.loads(a.metadata)) == (
        "a cat", "http://x/a.jpg", {"url": "http://x/a.jpg", "width": 160} | hive)
    assert json.loads(b.metadata) == hive
    assert json.loads(c.metadata) == {"json": ["not", "an object"]} | hive
    # a file named: every key=value folder of its path, as for a Parquet named
    (named,) = read_shard(discover([str(folder / "b.jpg")])[0], CONFIG)
    assert json.loads(named.metadata) == hive
    # listed from below the partitions: the sidecar as written, none for none
    a, b, c = (item for shard in discover([str(folder)]) for item in read_shard(shard, CONFIG))
    assert (a.metadata, b.metadata, c.metadata) == (
        '{"url": "http://x/a.jpg", "source": "camera", "width": 160}', None, '["not", "an object"]')


def test_hive_partitions_of_a_folder_name_that_is_not_utf8_are_text_a_parquet_string_takes(tmp_path):
    """A local folder `lang=\\xff` (latin-1 names copied from an old disk) gave the metadata a
    lone surrogate (Python's name for the byte): Arrow refused the string and the run failed."""
    folder = os.fsdecode(os.fsencode(tmp_path) + b"/t/lang=\xff")
    os.makedirs(folder)
    parquet = io.BytesIO()  # pyarrow takes no such name: written by Python
    pq.write_table(pa.table({"jpg": [jpeg(2)], "url": ["u"]}), parquet)
    for name, data in (("a.jpg", jpeg(1)), ("p.parquet", parquet.getvalue())):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    shards = discover([str(tmp_path / "t")])
    records = [r for shard in shards for r in read_shard(shard, CONFIG)]
    assert [json.loads(r.metadata)["lang"] for r in records] == ["\\xff", "\\xff"]  # as the uri shows it
    assert all("lang=\\xff/" in s.uri for s in shards)
    pa.array([r.metadata for r in records])  # UTF-8: what the memory's metadata column is written as


def test_a_hugging_face_path_that_is_not_utf8_names_the_file_of_its_bytes(tmp_path):
    """A file's name on Linux is bytes: a path stored as binary made read_shard raise TypeError
    (the run failed), and a latin-1 one in a string column, decoded by a guess, named no file (a
    missing reject). The file of the path's bytes is read; a message says the path as text."""
    name = "caf\xe9.jpg".encode("latin-1")
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
        f.write(jpeg(1))
    names = pa.array([name, b"img.jpg", "gone-\xe9.jpg".encode("latin-1")], pa.binary())
    (tmp_path / "img.jpg").write_bytes(jpeg(2))
    latin1 = pa.Array.from_buffers(pa.string(), len(names), names.buffers())  # unvalidated, as lax writers do
    for paths in (names, names.cast(pa.large_binary()), latin1, latin1.dictionary_encode()):
        images = pa.StructArray.from_arrays([pa.nulls(len(names), pa.binary()), paths], ["bytes", "path"])
        pq.write_table(pa.table({"image": images}), tmp_path / "a.parquet")
        cafe, img, gone = read(str(tmp_path / "a.parquet"))
        assert isinstance(cafe, Record) and cafe.data == jpeg(1), paths.type
        assert isinstance(img, Record) and img.data == jpeg(2)
        assert (gone.error_type, gone.source) == ("missing", f"{tmp_path / 'a.parquet'}#000000002")
        assert gone.message.startswith("image.path 'gone-\xe9.jpg': FileNotFoundError")
        gone.message.encode()  # Parquet text: no surrogate of the file's name


def _deeper_by_hand(text: str, limit: int) -> bool:
    """The nesting a JSON parser sees, a character at a time: brackets in strings aside."""
    depth, deepest, in_string, escaped = 0, 0, False, False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{]}":
            depth += 1 if char in "[{" else -1
            deepest = max(deepest, depth)
    return deepest > limit


def test_json_depth_is_counted_without_a_python_step_a_character():
    """_json_deeper_than runs on every .json with more brackets than the limit: a Segment
    Anything sample's (100 KB, 600 brackets) cost 30 times its json.loads, a Python step a
    character. Counted by the lines it runs, which a loop a character makes ~100,000; and it
    says what a parser would, unclosed strings and stray backslashes too."""
    import random

    from memgen.readers.fields import _json_deeper_than

    masks = [{"bbox": [1.5, 2.5], "point_coords": [[10.0, 20.0]], "segmentation": {"counts": "ab[" * 300}}
             for _ in range(100)]
    text = json.dumps({"annotations": masks})
    lines = 0

    def tracer(frame, event, arg):
        nonlocal lines
        if frame.f_code is _json_deeper_than.__code__:
            lines += event == "line"
            return tracer
        return None

    previous = sys.gettrace()  # a coverage run's, put back
    sys.settrace(tracer)
    try:
        deeper = _json_deeper_than(text, 200)
    finally:
        sys.settrace(previous)
    assert (deeper, _deeper_by_hand(text, 200)) == (False, False)
    assert lines < 20
    rng = random.Random(0)
    for _ in range(20000):
        s = "".join(rng.choice('[]{}"\\ a\n') for _ in range(rng.randrange(30)))
        for limit in range(4):
            assert _json_deeper_than(s, limit) == _deeper_by_hand(s, limit), (s, limit)


def test_a_rows_image_locators_are_kept_apart_from_other_keys():
    """Keys(key, n) takes KEY/0 .. KEY/n-1 too: a key given before or after that equals one is renamed."""
    keys = Keys()
    assert [keys("a/1"), keys("a", 2), keys("b", 3), keys("b/2"), keys("b/3"), keys("b", 1)] == [
        "a/1", "a~2", "b", "b/2~2", "b/3", "b~2"]
    assert [keys("c/01"), keys("c", 2), keys("d/5"), keys("d", 5), keys("d", 6)] == [  # c/01 is no c/N
        "c/01", "c", "d/5", "d", "d~2"]


def test_rows_of_images_under_a_repeated_key_are_numbered_without_searching_from_the_start():
    """As a repeated key: a row's KEY/N names are not tried one by one (a row holds up to 65,536)."""
    keys = Keys()
    keys.seen = seen = CountedSet()
    names = [keys("k", 1000) for _ in range(1000)]
    assert names[:3] == ["k", "k~2", "k~3"] and len(set(names)) == 1000
    assert seen.lookups < 3 * len(names)
