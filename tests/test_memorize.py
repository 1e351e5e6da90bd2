"""End to end: `memgen memorize` on generated shards of every kind, bad input included."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import fsspec.implementations.local
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from memgen import memory as memory_module
from memgen.memory import (
    manifests_held,
    memory_claim,
    open_table,
    prepare_output,
    read_manifest,
    write_manifest,
    write_rows,
)
from memgen.outputs import MARKER, OutputDirError
from memgen.pipelines.cli import main
from memgen.schema import table_schema
from shardkit import encode, jpeg, make_image, sample, valid_manifest, write_parquet, write_tar


def corpus(root: Path) -> tuple[list[str], dict[str, bytes]]:
    """Shards of every kind; returns the inputs and {source: bytes} of every usable record."""
    root.mkdir()
    originals = {i: jpeg(i) for i in range(12)}
    resized = encode(make_image(2).resize((80, 60)), "JPEG", quality=70)
    recompressed = jpeg(3, quality=40)
    shard0 = [sample(f"a{i}", originals[i], caption=f"photo {i}", url=f"http://a/{i}") for i in range(8)]
    shard0.append(("text_only", {"txt": b"no image here"}))
    write_tar(root / "00000.tar", shard0)
    write_tar(root / "00001.tar.gz", [
        sample("copy0", originals[0]), sample("copy1", originals[1]),
        sample("resized2", resized), sample("recompressed3", recompressed),
        sample("truncated", originals[4][:400]), sample("html", b"<html>404</html>"),
    ])
    write_parquet(root / "00002.parquet", [
        {"key": "p8", "image": originals[8], "caption": "eight"},
        {"key": "p9", "image": originals[9]},
        {"key": "copy4", "image": originals[4]},
        {"key": "null", "image": None},
    ])
    damaged = write_tar(root / "00003.tar", [sample(f"d{i}", jpeg(100 + i, quality=98)) for i in range(4)])
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    (root / "folder" / "sub").mkdir(parents=True)
    (root / "folder" / "sub" / "ten.png").write_bytes(encode(make_image(10), "PNG"))
    (root / "folder" / "five.jpg").write_bytes(originals[5])
    inputs = [str(root / "{00000,00003}.tar"), str(root / "00001.tar.gz"), str(root / "00002.parquet"),
              str(root / "folder"), str(root / "missing.tar")]
    return inputs, originals


def run(*args: str) -> int:
    return main(["memorize", *args])


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    root = tmp_path_factory.mktemp("memorize")
    inputs, _ = corpus(root / "shards")
    assert run(*inputs, "--memory", str(root / "memory"), "--threshold", "10") == 0
    return root


def rows(memory: Path, table: str) -> list[dict]:
    return open_table(str(memory), table).to_table().to_pylist()


def test_counts_add_up_and_every_record_lands_once(memory):
    mem = memory / "memory"
    manifest = valid_manifest(read_manifest(str(mem)))
    c = manifest["counts"]
    assert manifest["balanced"] and c["records_in"] == c["images"] + c["duplicates"] + c["rejects"]
    near = manifest["near_dedup"]
    assert near["threshold"] == 10 and near["components"]["converged"]
    assert near["components"]["finishing"] == {"links": 0, "labels": 0}  # converged: one worker joined none
    images, dups, rejects = rows(mem, "images"), rows(mem, "duplicates"), rows(mem, "rejects")
    assert (len(images), len(dups), len(rejects)) == (c["images"], c["duplicates"], c["rejects"])
    sources = [r["source"] for r in images + dups + rejects]
    assert len(sources) == len(set(sources)) == c["records_in"]
    # 12 distinct pictures + 4 damaged-shard records at most; exact copies of 0, 1, 4, 5
    assert c["duplicates_exact"] == 4
    assert c["duplicates_near"] >= 2  # resized 2 and recompressed 3
    assert sum(r["copies"] for r in images) == c["records_in"] - c["rejects"]
    reasons = c["rejects_by_reason"]
    for reason in ("no_image", "decode_error", "not_an_image", "empty", "corrupt_shard", "missing"):
        assert reasons.get(reason, 0) >= 1, reason
    assert c["rejects_by_stage"] == dict(sorted(Counter(r["stage"] for r in rejects).items()))
    assert set(c["rejects_by_stage"]) == {"open", "read", "fingerprint"}  # missing.tar, damage, html


def test_images_with_a_side_under_min_side_are_too_small_rejects(tmp_path):
    """A crawl's icons and 1x1 tracking pixels: rejects that say their size, told from the header,
    bytes kept as any fingerprint reject's; the setting is recorded, and the same command again
    finds its memory finished."""
    pixel, icon = encode(make_image(1, (1, 1)), "GIF"), encode(make_image(2, (32, 16)), "PNG")
    tall = encode(make_image(3, (20, 200)))  # 20 px wide: under 32 whatever its height
    shard = write_tar(tmp_path / "crawl.tar", [
        sample("pixel", pixel, ext="gif"), sample("icon", icon, ext="png"), sample("tall", tall),
        sample("photo", jpeg(4)), sample("edge", encode(make_image(5, (32, 32))))])
    memory = tmp_path / "m"
    assert run(str(shard), "--memory", str(memory), "--min_side", "32") == 0
    manifest = valid_manifest(read_manifest(str(memory)))
    assert manifest["options"]["fingerprint"]["min_side"] == 32
    assert manifest["counts"]["rejects_by_reason"] == {"too_small": 3}
    rejects = {r["source"].split("#")[1]: r for r in rows(memory, "rejects")}
    assert {k: (r["stage"], r["message"]) for k, r in rejects.items()} == {
        "pixel": ("fingerprint", "1x1: a side under --min_side 32"),
        "icon": ("fingerprint", "32x16: a side under --min_side 32"),
        "tall": ("fingerprint", "20x200: a side under --min_side 32")}
    assert rejects["icon"]["data"] == icon
    assert sorted(r["source"].split("#")[1] for r in rows(memory, "images")) == ["edge", "photo"]
    assert run(str(shard), "--memory", str(memory), "--min_side", "32") == 0  # finished: nothing to run
    assert run(str(shard), "--memory", str(tmp_path / "all")) == 0
    all_kept = valid_manifest(read_manifest(str(tmp_path / "all")))
    assert "min_side" not in all_kept["options"]["fingerprint"] and all_kept["counts"]["images"] == 5


def test_with_any_orientation_mirrored_and_turned_copies_are_near_duplicates(tmp_path, capsys):
    """A crawl's mirrored and rotated copies (re-encoded): near duplicates of the original with
    --orientations any, images of their own without; the setting is recorded only when not
    upright, and evaluate hashes a --reference as its memory did (a mirrored copy is contamination)."""
    photo = make_image(8, (320, 240))
    turned = {"mirror": photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
              "quarter": photo.transpose(Image.Transpose.ROTATE_90),
              "upside": photo.transpose(Image.Transpose.ROTATE_180)}
    copies = [sample(key, encode(image, quality=80)) for key, image in turned.items()]
    shard = write_tar(tmp_path / "crawl.tar", [sample("photo", encode(photo)), sample("other", jpeg(9)),
                                               *copies])
    assert run(str(shard), "--memory", str(tmp_path / "any"), "--orientations", "any") == 0
    manifest = valid_manifest(read_manifest(str(tmp_path / "any")))
    assert manifest["options"]["fingerprint"]["orientations"] == "any"
    assert sorted(r["source"].split("#")[1] for r in rows(tmp_path / "any", "images")) == ["other", "photo"]
    near = {r["source"].split("#")[1]: r["distance"] for r in rows(tmp_path / "any", "duplicates")}
    assert sorted(near) == sorted(turned) and max(near.values()) <= 4
    assert run(str(shard), "--memory", str(tmp_path / "upright")) == 0
    upright = valid_manifest(read_manifest(str(tmp_path / "upright")))
    assert "orientations" not in upright["options"]["fingerprint"] and upright["counts"]["images"] == 5
    mirrored = encode(photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
    write_tar(tmp_path / "ref.tar", [sample("mirrored", mirrored)])
    capsys.readouterr()
    assert main(["evaluate", "--memory", str(tmp_path / "any"), "--reference", str(tmp_path / "ref.tar"),
                 "--classifier", "caption", "--embedding", "false", "--out", str(tmp_path / "r")]) == 0
    assert ("contamination (reference vs memory): 100.0% (1 of 1 within 10 bits of a memory image in any "
            "orientation)") in capsys.readouterr().out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["copying"]["orientations"] == "any"
    assert "mirrored and turned copies count" in (tmp_path / "r" / "report.html").read_text()


def test_images_hold_the_original_bytes_and_metadata(memory):
    _, originals = corpus(memory / "again")
    images = {r["source"].rsplit("#", 1)[-1]: r for r in rows(memory / "memory", "images")}
    assert images["a0"]["image"] == originals[0] and images["a0"]["exact_copies"] == 2
    assert images["a0"]["caption"] == "photo 0" and images["a0"]["url"] == "http://a/0"
    assert images["p8"]["caption"] == "eight" and json.loads(images["p8"]["metadata"])["key"] == "p8"
    kept_2 = next(r for r in images.values() if r["image"] == originals[2])
    assert kept_2["copies"] == 2  # the original stands for its resized copy


def test_hive_partitions_are_kept_in_the_metadata(tmp_path):
    """A LAION-style table laid out as lang=xx/year=yyyy/ folders: each record's metadata holds
    its folders' values, as text, read back with DuckDB's JSON."""
    shards = tmp_path / "laion"
    for n, folder in enumerate(["lang=en/year=2023", "lang=de%20DE/year=__HIVE_DEFAULT_PARTITION__"]):
        (shards / folder).mkdir(parents=True)
        # a column named as a partition: the folder's value wins, as pyarrow.dataset and DuckDB read them
        pq.write_table(pa.table({"key": [f"k{n}"], "jpg": [jpeg(n)], "lang": ["file"]}),
                       shards / folder / "part-0.parquet")
    assert run(str(shards), "--memory", str(tmp_path / "memory")) == 0
    found = duckdb.sql(
        "SELECT regexp_extract(source, '#(.*)', 1), metadata::JSON->>'lang', metadata::JSON->>'year', "
        f"json_type(metadata::JSON, 'year') FROM read_parquet('{tmp_path / 'memory' / 'images'}/*.parquet') "
        "ORDER BY 1").fetchall()
    assert found == [("k0", "en", "2023", "VARCHAR"), ("k1", "de DE", None, "NULL")]


def test_hive_partitions_of_tars_and_image_folders_are_kept_in_the_metadata(tmp_path):
    """WebDataset tars and folders of images laid out in key=value folders: each record's
    metadata holds its folders' values as a Parquet row's does (over a .json key of the same
    name), read back with DuckDB's JSON; a record outside them keeps its .json as written."""
    shards = tmp_path / "crawl"
    for n, folder in enumerate(["lang=en/year=2023", "lang=de%20DE/year=__HIVE_DEFAULT_PARTITION__"]):
        (shards / folder).mkdir(parents=True)
        write_tar(shards / folder / "00000.tar",
                  [("t", {"jpg": jpeg(n), "json": b'{"lang": "file", "w": 1}'})])
        (shards / folder / "f.jpg").write_bytes(jpeg(10 + n))
        (shards / folder / "f.json").write_text('{"year": "file"}')
    write_tar(shards / "plain.tar", [("plain", {"jpg": jpeg(20), "json": b'{"lang": "file",  "w": 1}'})])
    assert run(str(shards), "--memory", str(tmp_path / "memory")) == 0
    found = duckdb.sql(
        "SELECT regexp_extract(source, 'crawl/(.*)', 1), metadata::JSON->>'lang', metadata::JSON->>'year', "
        "json_type(metadata::JSON, 'year'), metadata::JSON->>'w' "
        f"FROM read_parquet('{tmp_path / 'memory' / 'images'}/*.parquet') ORDER BY 1").fetchall()
    assert found == [("lang=de%20DE/year=__HIVE_DEFAULT_PARTITION__/00000.tar#t", "de DE", None, "NULL", "1"),
                     ("lang=de%20DE/year=__HIVE_DEFAULT_PARTITION__/f.jpg", "de DE", None, "NULL", None),
                     ("lang=en/year=2023/00000.tar#t", "en", "2023", "VARCHAR", "1"),
                     ("lang=en/year=2023/f.jpg", "en", "2023", "VARCHAR", None),
                     ("plain.tar#plain", "file", None, None, "1")]
    plain = duckdb.sql(f"SELECT metadata FROM read_parquet('{tmp_path / 'memory' / 'images'}/*.parquet') "
                       "WHERE source LIKE '%plain'").fetchall()
    assert plain == [('{"lang": "file",  "w": 1}',)]  # without partitions: as written, byte for byte


def test_rejects_keep_the_bytes_for_inspection(memory):
    rejects = {r["source"].rsplit("#", 1)[-1]: r for r in rows(memory / "memory", "rejects")}
    assert rejects["truncated"]["data"] == jpeg(4)[:400]
    assert rejects["html"]["data"] == b"<html>404</html>" and rejects["html"]["stage"] == "fingerprint"
    assert rejects["text_only"]["error_type"] == "no_image"


def test_duckdb_and_pyarrow_read_the_memory_directly(memory):
    mem = memory / "memory"
    images = f"read_parquet('{mem}/images/*.parquet')"
    n = duckdb.sql(f"select count(*) from {images}").fetchall()[0][0]
    assert n == read_manifest(str(mem))["counts"]["images"]
    # phash is an int64 so SQL can compute Hamming distances: no two kept images are near
    close = duckdb.sql(f"select count(*) from {images} a, {images} b where a.image_id < b.image_id "
                       "and bit_count(xor(a.phash, b.phash)) <= 10").fetchall()[0][0]
    assert close == 0
    assert ds.dataset(str(mem / "images"), format="parquet").count_rows() == n
    meta = pq.read_metadata(next((mem / "images").glob("*.parquet")))
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_row_groups_are_bounded_by_every_field_not_only_the_image(tmp_path, monkeypatch):
    # tiny images with 10 KB of metadata each: the buffer fills on the metadata
    monkeypatch.setattr(memory_module, "ROW_GROUP_BYTES", 1 << 20)
    rows = [{"image_id": f"{i:064x}", "phash": i, "dhash": i, "width": 1, "height": 1, "format": "JPEG",
             "n_bytes": 1, "image": b"x", "metadata": "m" * 10_000, "source": f"a.tar#{i}", "copies": 1,
             "exact_copies": 1} for i in range(500)]
    path = tmp_path / "part-000000.parquet"
    assert write_rows(str(path), "images", rows) == 500
    meta = pq.read_metadata(path)
    assert meta.num_rows == 500 and meta.num_row_groups >= 4
    # the rows of a few ids, in the part's order, from the row groups that hold them
    chosen = frozenset(rows[i]["image_id"] for i in (499, 3, 250))
    assert [r["source"] for r in memory_module.part_rows(str(path), ["image_id", "source"], chosen)] == [
        "a.tar#3", "a.tar#250", "a.tar#499"]
    assert len(list(memory_module.part_rows(str(path), ["image_id"]))) == 500
    assert not list(memory_module.part_rows(str(path), ["image_id"], frozenset({"none"})))


def test_a_table_without_rows_still_has_a_part_for_globs(tmp_path):
    # only unusable records: no image and no duplicate, and SQL over the globs still works
    shard = write_tar(tmp_path / "bad.tar", [("html", {"jpg": b"<html>404</html>"})])
    mem = tmp_path / "m"
    assert run(str(shard), "--memory", str(mem)) == 0
    counts = {t: duckdb.sql(f"select count(*) from read_parquet('{mem}/{t}/*.parquet')").fetchall()[0][0]
              for t in ("images", "duplicates", "rejects")}
    assert counts == {"images": 0, "duplicates": 0, "rejects": 1}
    assert pq.read_schema(mem / "images" / "part-000000.parquet").names == table_schema("images").names


def test_a_memory_missing_a_part_is_refused_not_read_short(memory, tmp_path, capsys):
    manifest = json.loads((memory / "memory" / "manifest.json").read_text())
    for table in ("images", "duplicates", "rejects"):  # the empty-table part counts too
        assert manifest["parts"][table] == len(list((memory / "memory" / table).glob("part-*.parquet")))
    damaged = tmp_path / "damaged"
    shutil.copytree(memory / "memory", damaged)
    lost = sorted((damaged / "images").glob("part-*.parquet"))[-1]
    lost.unlink()
    assert main(["sample", "--memory", str(damaged), "--n", "3", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert f"is damaged: its manifest counts {manifest['parts']['images']} images parts" in err


@pytest.mark.parametrize("damage, message", [
    ("garbage", "images/part-000000.parquet is not a readable Parquet file"),
    ("another_table", "images/part-000000.parquet is a copy of duplicates/part-"),
    ("rewritten", "images/part-000000.parquet lacks the images columns"),  # by another tool
    ("fewer_rows", "images rows, its parts hold"),  # as many parts, one of them not the one written
    ("retyped", "images/part-000000.parquet holds phash as uint64, not int64"),  # was a traceback
    ("duplicates", "is not a readable Parquet file"),  # sample passed it by: it reads images/ only
    ("another_part", "images/part-000000.parquet is a copy of images/part-0000"),  # its images read twice
    ("nulls", "images/part-000000.parquet holds 1 nulls in copies, which memgen writes"),  # DuckDB's
])
def test_a_memory_with_a_damaged_part_is_refused_before_it_is_read(memory, tmp_path, capsys, damage, message):
    damaged = tmp_path / "damaged"
    shutil.copytree(memory / "memory", damaged)
    part = damaged / "images" / "part-000000.parquet"
    commands = [["sample", "--n", "3"], ["evaluate", "--classifier", "caption"]]
    if damage == "duplicates":
        sorted((damaged / "duplicates").glob("part-*.parquet"))[0].write_bytes(b"PAR1 not really")
    elif damage == "retyped":  # "fixing" the sign of phash
        table = pq.read_table(part)
        column = table.schema.get_field_index("phash")
        pq.write_table(table.set_column(column, "phash", table["phash"].cast(pa.uint64(), safe=False)), part)
    elif damage == "garbage":
        part.write_bytes(b"PAR1 not really")
    elif damage == "another_table":
        shutil.copy(sorted((damaged / "duplicates").glob("part-*.parquet"))[0], part)
    elif damage == "rewritten":
        pq.write_table(pq.read_table(part).drop_columns(["phash"]).replace_schema_metadata(None), part)
    elif damage == "nulls":  # a tool that writes every column nullable, and a null in one
        table = pq.read_table(part)
        column = table.schema.get_field_index("copies")
        copies = pa.array([None, *table["copies"].to_pylist()[1:]], pa.int64())
        pq.write_table(table.set_column(column, pa.field("copies", pa.int64()), copies), part)
        commands.append(["sample", "--n", "3", "--weighted"])  # weighting by copies failed mid-run
    elif damage == "another_part":  # as many parts and, in the helper's case, as many rows
        shutil.copy(sorted((damaged / "images").glob("part-*.parquet"))[1], part)
    else:
        pq.write_table(pq.read_table(part).slice(1), part)
    for command in commands:
        out = tmp_path / f"{command[0]}-{damage}"
        assert main([command[0], "--memory", str(damaged), "--out", str(out), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err
        assert not out.exists()


@pytest.mark.parametrize("workers", [[], ["--direct_num_workers=2",
                                          "--direct_running_mode=multi_processing"]])
def test_a_memory_part_with_damaged_data_is_refused_in_one_line(memory, tmp_path, capsys, workers):
    """A part whose footer is whole but whose pages are not (overwritten, a bad sector) passes
    the checks before the run: sample and evaluate ended in Arrow's traceback ("Couldn't
    deserialize thrift"), exit 1, from a worker process too."""
    damaged = tmp_path / "damaged"
    shutil.copytree(memory / "memory", damaged)
    part = damaged / "images" / "part-000000.parquet"
    data = bytearray(part.read_bytes())
    data[4:1004] = bytes(b ^ 0x5A for b in data[4:1004])  # the first page's header, not the footer
    part.write_bytes(bytes(data))
    commands = [["sample", "--n", "3"], ["evaluate", "--classifier", "caption", "--embedding", "false"]]
    for command in commands if not workers else commands[:1]:  # a worker process: the same line
        out = tmp_path / command[0]
        assert main([command[0], "--memory", str(damaged), "--out", str(out), *command[1:], *workers]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"{damaged} is damaged: images/part-000000.parquet cannot be read (" in err
        assert not (out / "manifest.json").exists() and not (out / "report.json").exists()


@pytest.mark.parametrize("damage, message", [
    (b"{not json", "its manifest.json is not valid JSON"),
    (b"", "its manifest.json is not valid JSON"),
    (b"\xa7\x00\xff", "its manifest.json is not valid JSON"),
    (b"[1, 2]", "its manifest.json is not a JSON object"),
    ({"counts": None}, "has no usable counts"),
    ({"counts": {"duplicates": 3}}, "has no usable counts.images"),
    ({"options": {"threshold": "ten"}}, "has no usable options.threshold"),
    ({"options": {"fingerprint": {"max_pixels": -1}}}, "has no usable options.fingerprint.max_pixels"),
    ({"options": {"fingerprint": {"mode": "best"}}}, "has no usable options.fingerprint.mode"),
    ({"options": {"fingerprint": {"orientations": 8}}}, "has no usable options.fingerprint.orientations"),
    ({"schema_version": "1"}, "has no usable schema_version"),
    ({"schema_version": 99}, "was written by a newer memgen: its manifest.json has schema version 99"),
    ({"options": {"reader": {"bogus": 1}}}, "its manifest.json's options are not this memgen's"),
    ({"options": {"fingerprint": {"bogus": 1}}}, "its manifest.json's options are not this memgen's"),
])
def test_a_damaged_or_newer_manifest_is_refused_in_one_line(memory, tmp_path, capsys, damage, message):
    """A traceback (JSONDecodeError, KeyError, TypeError), or a newer schema read as this one."""
    damaged = tmp_path / "damaged"
    shutil.copytree(memory / "memory", damaged)
    manifest = damaged / "manifest.json"
    if isinstance(damage, dict):
        damage = json.dumps(json.loads(manifest.read_text()) | damage).encode()
    manifest.write_bytes(damage)
    commands = [["sample", "--n", "3"], ["evaluate", "--classifier", "caption", "--embedding=false"]]
    reader_only = b'"reader": {"bogus"' in damage
    if reader_only:  # sample reads no shard: a reader option it does not know is no matter to it
        assert main(["sample", "--memory", str(damaged), "--out", str(tmp_path / "s"), "--n", "3"]) == 0
        capsys.readouterr()
    for command in commands[reader_only:]:
        out = tmp_path / f"out-{command[0]}"
        assert main([command[0], "--memory", str(damaged), "--out", str(out), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
        assert not out.exists()


def test_a_part_rewritten_with_large_strings_as_polars_writes_them_is_read(memory, tmp_path):
    rewritten = tmp_path / "rewritten"
    shutil.copytree(memory / "memory", rewritten)
    part = rewritten / "images" / "part-000000.parquet"
    table = pq.read_table(part)
    large = pa.schema([f.with_type(pa.large_string()) if f.type == pa.string() else
                       f.with_type(pa.large_binary()) if f.type == pa.binary() else f for f in table.schema])
    pq.write_table(table.cast(large), part)
    out = tmp_path / "sample"
    assert main(["sample", "--memory", str(rewritten), "--n", "100", "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["images"] == read_manifest(
        str(rewritten))["counts"]["images"]


def test_no_run_writes_inside_another_runs_output(memory, tmp_path, capsys):
    """A sample in a memory's images/ broke every glob of it (pyarrow read its manifest.json as
    a part); one in another sample's images/ was counted as that sample's reference images."""
    mem = memory / "memory"
    sample_out = tmp_path / "sample"
    assert main(["sample", "--memory", str(mem), "--n", "3", "--out", str(sample_out)]) == 0
    capsys.readouterr()
    for command in (["sample", "--memory", str(mem), "--n", "3", "--out", str(mem / "images" / "s")],
                    ["sample", "--memory", str(mem), "--n", "3", "--out", str(sample_out / "images" / "s")],
                    ["evaluate", "--memory", str(mem), "--classifier", "caption", "--out",
                     str(mem / "rejects" / "r")],
                    ["memorize", str(memory / "shards" / "00000.tar"), "--memory",
                     str(mem / "duplicates" / "m")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another memgen run's output" in err, err
    assert not (mem / "images" / "s").exists() and not (sample_out / "images" / "s").exists()
    # beside the tables, a report or a sample harms no reader
    report = tmp_path / "sample" / "report"
    assert main(["evaluate", "--memory", str(mem), "--classifier", "caption", "--embedding=false",
                 "--out", str(report)]) == 0
    assert main(["sample", "--memory", str(mem), "--n", "3", "--out", str(report / "s")]) == 0


def test_a_sample_given_as_memory_is_refused_in_one_line(memory, tmp_path, capsys):
    sample = tmp_path / "sample"
    assert main(["sample", "--memory", str(memory / "memory"), "--n", "3", "--out", str(sample)]) == 0
    capsys.readouterr()
    for command in (["sample", "--n", "3"], ["evaluate", "--classifier", "caption"]):
        out = tmp_path / f"out-{command[0]}"
        assert main([command[0], "--memory", str(sample), "--out", str(out), *command[1:]]) == 2
        err = capsys.readouterr().err  # it drew 0 images from the sample's (memory-less) folder, exit 0
        assert err.count("\n") == 1 and "is not a memory: its manifest.json is from memgen sample" in err
        assert not out.exists()
    assert run(str(memory / "shards" / "00000.tar"), "--memory", str(sample)) == 2
    err = capsys.readouterr().err
    assert "already holds a finished sample (manifest.json); choose another --memory\n" in err


def test_same_content_whatever_the_input_order(memory, tmp_path):
    inputs, _ = corpus(tmp_path / "shards")
    assert run(*reversed(inputs), "--memory", str(tmp_path / "m"), "--threshold", "10") == 0

    def normalized(mem: Path, root: Path) -> list[list[dict]]:
        return [[{k: v.replace(str(root), "ROOT") if isinstance(v, str) else v for k, v in r.items()}
                 for r in rows(mem, table)] for table in ("images", "duplicates", "rejects")]

    assert normalized(tmp_path / "m", tmp_path / "shards") == normalized(memory / "memory", memory / "shards")


@pytest.mark.parametrize("rewritten", ["other images", "fewer records"])
def test_a_shard_rewritten_between_its_two_reads_loses_nothing_and_misplaces_nothing(
        tmp_path, monkeypatch, rewritten):
    """memorize reads a shard to fingerprint it and again to write its images. A shard
    replaced in between put other bytes under the fingerprinted image_ids (same number of
    records), and copies in other shards pointed at representatives no longer written."""
    import memgen.materialize

    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "0.tar", [sample(f"a{i}", jpeg(i)) for i in range(4)])
    write_tar(shards / "1.tar", [sample(f"copy{i}", jpeg(i)) for i in range(2)])  # copies of a0, a1
    count = 4 if rewritten == "other images" else 1
    replacement = [sample(f"a{i}", jpeg(50 + i)) for i in range(count)]
    reread = memgen.materialize.read_shard

    def rewritten_first(shard, config):
        if shard.uri.endswith("0.tar"):
            write_tar(shards / "0.tar", replacement)
        return reread(shard, config)

    monkeypatch.setattr(memgen.materialize, "read_shard", rewritten_first)
    mem = tmp_path / "m"
    assert run(str(shards), "--memory", str(mem)) == 0
    images, duplicates, rejects = (rows(mem, t) for t in ("images", "duplicates", "rejects"))
    assert all(hashlib.sha256(r["image"]).hexdigest() == r["image_id"] for r in images)
    assert not images and not duplicates  # the copies' representatives were all in the rewritten shard
    assert sorted((r["source"].rsplit("/", 1)[1], r["error_type"]) for r in rejects) == [
        *((f"0.tar#a{i}", "changed_during_run") for i in range(4)),
        *((f"1.tar#copy{i}", "representative_changed") for i in range(2))]
    # what the re-read found in a changed record's place is kept for inspection
    found = {r["source"].rsplit("#", 1)[1]: r["data"] for r in rejects
             if r["error_type"] == "changed_during_run"}
    assert found == {f"a{i}": (jpeg(50 + i) if i < count else None) for i in range(4)}
    manifest = read_manifest(str(mem))
    assert manifest["balanced"] and manifest["counts"]["rejects"] == 6
    assert manifest["parts"]["rejects"] == len(list((mem / "rejects").glob("*.parquet"))) == 2


def test_image_files_share_parts_and_one_changed_between_its_reads_loses_only_itself(tmp_path, monkeypatch):
    """A part an image file made a folder of a million photos a million Parquet files a table:
    consecutive files share one (FILES_PER_PART, 2 here), numbered after the first; a tar
    between them has its own."""
    import memgen.materialize

    monkeypatch.setattr(memgen.materialize, "FILES_PER_PART", 2)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(5):
        (shards / f"{i}.jpg").write_bytes(jpeg(i))
    (shards / "5.jpg").write_bytes(jpeg(0))  # an exact copy of 0.jpg
    write_tar(shards / "3a.tar", [sample("t", jpeg(7))])  # sorted between 3.jpg and 4.jpg
    reread = memgen.materialize.read_shard

    def rewritten(shard, config):
        if shard.uri.endswith("2.jpg"):
            (shards / "2.jpg").write_bytes(jpeg(9))
        return reread(shard, config)

    monkeypatch.setattr(memgen.materialize, "read_shard", rewritten)
    mem = tmp_path / "m"
    assert run(str(shards), "--memory", str(mem)) == 0

    def sources(table: str) -> dict[str, list[str]]:
        return {part.name: sorted(r["source"].rsplit("/", 1)[1] for r in pq.read_table(part).to_pylist())
                for part in sorted((mem / table).glob("*.parquet"))}

    assert sources("images") == {"part-000000.parquet": ["0.jpg", "1.jpg"], "part-000002.parquet": ["3.jpg"],
                                 "part-000004.parquet": ["3a.tar#t"], "part-000005.parquet": ["4.jpg"]}
    assert sources("duplicates") == {"part-000005.parquet": ["5.jpg"]}
    assert sources("rejects") == {"part-000002.parquet": ["2.jpg"]}
    (reject,) = rows(mem, "rejects")
    assert (reject["error_type"], reject["data"]) == ("changed_during_run", jpeg(9))
    manifest = read_manifest(str(mem))
    assert manifest["balanced"] and manifest["parts"] == {"images": 4, "duplicates": 1, "rejects": 1}


def test_image_files_get_a_progress_line_a_hundred_or_when_rejected(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        (shards / f"{i}.jpg").write_bytes(jpeg(i))
    (shards / "3.jpg").write_bytes(b"x" * 50_000)  # over --max_bytes: a read reject
    write_tar(shards / "t.tar", [sample("t", jpeg(7))])
    assert run(str(shards), "--memory", str(tmp_path / "m"), "--max_bytes", "20000") == 0
    lines = [line.rsplit("/", 1)[1] for line in capsys.readouterr().err.splitlines()
             if line.startswith("read shard")]
    # as the summary's "records in": the rejected among the records
    assert sorted(lines) == ["3.jpg: 1 record, 1 rejected (too_large 1)", "t.tar: 1 record, 0 rejected"]


def test_parts_take_consecutive_image_files_up_to_their_size_and_any_other_shard_alone(monkeypatch):
    import memgen.materialize
    from memgen.materialize import Parts
    from memgen.records import Shard

    monkeypatch.setattr(memgen.materialize, "FILES_PER_PART", 3)
    kinds = ["file"] * 7 + ["tar", "parquet", "file", "tar"]
    parts = Parts([Shard.of(i, f"s{i}", kind) for i, kind in enumerate(kinds)])
    assert parts.starts == [0, 3, 6, 7, 8, 9, 10]
    assert [parts.of(i) for i in range(len(kinds))] == [0, 0, 0, 3, 3, 3, 6, 7, 8, 9, 10]
    assert [s.index for s in parts.shards_of(3)] == [3, 4, 5]
    assert [s.index for s in parts.shards_of(10)] == [10]


def test_the_usage_is_said_without_importing_beam():
    """`memgen`, `memgen --help` and a misspelt command took 1.4 s, Beam's import, to print a
    usage or one line."""
    probe = ("import sys; from memgen.pipelines import main; sys.argv[1:] = {argv!r}; code = main(); "
             "print(code, 'apache_beam' in sys.modules, file=sys.stderr)")
    for argv, code, out in (([], 2, ""), (["--help"], 0, "usage: memgen COMMAND"), (["memorise"], 2, "")):
        done = subprocess.run([sys.executable, "-c", probe.format(argv=argv)], capture_output=True, text=True,
                              timeout=60)
        assert done.stderr.endswith(f"{code} False\n") and out in done.stdout, (argv, done.stderr)


def test_ctrl_c_while_the_command_line_starts_is_one_line():
    """The console script imported Beam before main() could catch anything: Ctrl-C in its
    first second printed an import's traceback and ended by the signal."""
    script = Path(sys.executable).parent / "memgen"
    process = subprocess.Popen([str(script), "memorize", "--help"], stderr=subprocess.PIPE, text=True)
    # inside the command line's imports (1.4 s here) once a library's shared object is loaded:
    # a fixed wait could end before the process ran its first line (a signal before exec is lost)
    maps, deadline = Path(f"/proc/{process.pid}/maps"), time.monotonic() + 60
    while "site-packages" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 130 and err.count("\n") == 1 and "interrupted" in err, err


@pytest.mark.parametrize("failure, code, line", [
    (KeyboardInterrupt(), 130, "memgen memorize: interrupted; the same command finishes the run"),
    (OSError(28, "No space left on device"), 2,
     "memgen memorize: error: OSError: [Errno 28] No space left on device (the output's disk, or "),
])
def test_a_run_interrupted_or_failing_storage_ends_in_one_line(tmp_path, monkeypatch, capsys,
                                                               failure, code, line):
    """Raised inside a worker, Beam re-raises them as RuntimeError("OSError: ... [while running
    'Stage']") after logging the traceback: 100-170 lines on stderr, exit 1."""
    import memgen.materialize

    def fails(shard, config):
        raise failure

    monkeypatch.setattr(memgen.materialize, "read_shard", fails)
    inputs, _ = corpus(tmp_path / "shards")
    capsys.readouterr()
    assert run(*inputs, "--memory", str(tmp_path / "m")) == code
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(line) and "Traceback" not in err
    assert not list((tmp_path / "m").rglob("*.tmp"))


@pytest.mark.parametrize("finished", [True, False])
def test_ctrl_c_after_the_run_wrote_its_result_is_not_an_interrupted_run(tmp_path, monkeypatch, capsys,
                                                                         finished):
    """Ctrl-C while the runner shut its workers down, after manifest.json was written: it said
    "interrupted; the same command finishes the run", exit 130, and the same command then
    refused the folder as finished (a user might have deleted a good memory)."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from memgen.pipelines.local_runner import LocalRunner

    def run_then_interrupted(self, pipeline, options):
        if finished:
            FnApiRunner.run_pipeline(self, pipeline, options)
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalRunner, "run_pipeline", run_then_interrupted)
    inputs, _ = corpus(tmp_path / "shards")
    capsys.readouterr()
    code = run(*inputs, "--memory", str(tmp_path / "m"))
    out, err = capsys.readouterr()
    if finished:
        assert code == 0 and "records_in = images + duplicates + rejects: balanced" in out
    else:
        assert code == 130
        assert err.endswith("memgen memorize: interrupted; the same command finishes the run\n")


def test_an_oserror_of_memgen_inside_a_run_is_raised_not_called_storage(tmp_path, monkeypatch):
    import memgen.materialize

    def fails(shard, config):
        raise OSError("cannot identify image file")  # as Pillow's UnidentifiedImageError is

    monkeypatch.setattr(memgen.materialize, "read_shard", fails)
    inputs, _ = corpus(tmp_path / "shards")
    with pytest.raises(Exception, match="cannot identify image file"):
        run(*inputs, "--memory", str(tmp_path / "m"))


@pytest.mark.parametrize("raised, code", [
    ("OSError(28, 'No space left on device')", 2),  # the disk is full: one line
    ("OSError('cannot identify image file')", 1),  # an OSError without a storage errno: a bug's traceback
    # an object store that stops answering: Beam cannot rebuild botocore's class, only name it
    ("__import__('botocore.exceptions').exceptions.EndpointConnectionError(endpoint_url='http://s3.test')",
     2),
])
def test_worker_processes_failing_storage_end_in_one_line_and_bugs_keep_their_traceback(
        memory, tmp_path, raised, code):
    """Worker processes send their error as text: Beam's RuntimeError holds the traceback and
    ends "RuntimeError: OSError: [Errno 28] ... [while running 'Stage']"; it used to be ~500
    lines and exit 1. Pillow's decode errors are OSErrors too: from inside a run, only the
    errnos of storage are taken for storage, and a bug's traceback is still shown."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(  # runs in every worker process at start-up
        "import memgen.materialize\n"
        f"def fails(shard, config):\n    raise {raised}\n"
        "memgen.materialize.read_shard = fails\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "memgen.pipelines.cli", "memorize",
                             str(memory / "shards" / "00000.tar"), "--memory", str(tmp_path / "m"),
                             "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == code
    last = result.stderr.strip().splitlines()[-1]
    if code == 2:
        assert last.startswith(("memgen memorize: error: OSError: [Errno 28] No space left on device",
                                'memgen memorize: error: EndpointConnectionError: Could not connect to the '
                                'endpoint URL: "http://s3.test"'))
    else:
        assert "cannot identify image file" in last and "Traceback" in result.stderr


def test_a_part_being_written_has_a_name_that_folder_readers_skip(tmp_path):
    """Spark (`spark.read.parquet("MEMORY/images")`), Hive and pyarrow.dataset read a folder
    without the names that start with '.' or '_', DuckDB's and Polars' `*.parquet` globs without
    other suffixes: a part being written (or left by a killed run) must be such a name, else
    Spark fails on its half-written bytes (FAILED_READ_FILE) and DuckDB reads them."""
    row = {"source": "s#1", "stage": "read", "error_type": "x", "message": "m", "n_bytes": 1, "data": None}
    write_rows(str(tmp_path / "part-000000.parquet"), "rejects", [row])
    with memory_module.ParquetPart(str(tmp_path / "part-000001.parquet"), table_schema("rejects")) as part:
        part.add(row)
        part._flush()
        [writing] = [p.name for p in tmp_path.iterdir() if p.name != "part-000000.parquet"]
        assert writing.startswith(".") and not writing.endswith(".parquet")
        assert ds.dataset(tmp_path, format="parquet").count_rows() == 1  # it skips '.' and '_' names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-000000.parquet", "part-000001.parquet"]


def test_a_part_whose_last_write_fails_leaves_no_temporary_file(tmp_path):
    part = memory_module.ParquetPart(str(tmp_path / "part-000000.parquet"), table_schema("rejects"))
    with pytest.raises(OSError, match="No space"):
        with part:
            part.add({"source": "s#1", "stage": "read", "error_type": "x", "message": "m", "n_bytes": 1,
                      "data": None})
            part._flush()

            close = part._writer.close

            def full_disk():  # the close that writes the footer fails (once: __del__ closes again)
                part._writer.close = close
                raise OSError(28, "No space left on device")

            part._writer.close = full_disk
    assert list(tmp_path.iterdir()) == []


def test_rerun_completes_an_unfinished_memory(tmp_path):
    inputs, _ = corpus(tmp_path / "shards")
    mem = tmp_path / "m"
    (mem / "images").mkdir(parents=True)
    (mem / MARKER).write_text("memorize")  # what a killed run wrote first
    (mem / "images" / "part-999999.parquet").write_bytes(b"left over by a killed run")
    assert run(*inputs, "--memory", str(mem)) == 0
    assert not (mem / "images" / "part-999999.parquet").exists()
    assert read_manifest(str(mem))["balanced"]


def test_the_same_command_over_its_finished_memory_has_nothing_to_run_unless_its_inputs_list_anew(
        tmp_path, capsys):
    """A run killed after its manifest (a scheduler retries it) was refused as if another
    command's (exit 2: the retry failed); over the same listing of its inputs it has nothing
    to run (exit 0); a folder that lists other shards now is refused: not made again."""
    (tmp_path / "in").mkdir()
    write_tar(tmp_path / "in" / "a.tar", [sample(f"k{i}", jpeg(i)) for i in range(3)])
    command = [str(tmp_path / "in"), "--memory", str(tmp_path / "m")]
    assert run(*command) == 0
    manifest = (tmp_path / "m" / "manifest.json").read_bytes()
    capsys.readouterr()
    assert run(*command) == 0
    said = capsys.readouterr()
    assert said.err == (f"memgen memorize: --memory {tmp_path / 'm'} already holds the finished output of "
                        "this command over the same 1 shards: nothing to run\n")
    assert "records_in = images + duplicates + rejects: balanced" in said.out  # its summary
    assert (tmp_path / "m" / "manifest.json").read_bytes() == manifest
    write_tar(tmp_path / "in" / "b.tar", [sample("k9", jpeg(9))])  # a shard more, listed anew
    assert run(*command) == 2
    assert capsys.readouterr().err == (
        f"memgen memorize: error: --memory {tmp_path / 'm'} already holds the finished output of this same "
        "command; it is not made again (its inputs list 2 shards now, 1 then, or others, or other captions "
        "or metadata, or files written anew since): choose another --memory, or delete it to make it anew;"
        " to keep only what it does not hold, memorize into another --memory with --known"
        f" {tmp_path / 'm'}\n")
    assert (tmp_path / "m" / "manifest.json").read_bytes() == manifest
    assert run(*command, "--threshold", "4") == 2
    assert "holds a finished memory (manifest.json); choose another --memory" in capsys.readouterr().err


def test_a_retry_whose_first_try_finishes_while_it_lists_has_nothing_to_run(tmp_path, capsys, monkeypatch):
    """A scheduler's retry found no manifest, then, as it listed its inputs, its first try
    finished the memory: it was refused as another command's finished memory ("delete it",
    exit 2); it is this command's, with nothing to run."""
    from memgen.pipelines import cli

    (tmp_path / "in").mkdir()
    write_tar(tmp_path / "in" / "a.tar", [sample(f"k{i}", jpeg(i)) for i in range(3)])
    command = [str(tmp_path / "in"), "--memory", str(tmp_path / "m")]
    assert run(*command) == 0
    manifest = tmp_path / "m" / "manifest.json"
    finished = manifest.read_bytes()
    manifest.unlink()  # the first try, not finished yet when the retry looks
    execute = cli.execute

    def first_try_finishes(*args, **kwargs):
        manifest.write_bytes(finished)
        return execute(*args, **kwargs)

    monkeypatch.setattr(cli, "execute", first_try_finishes)
    capsys.readouterr()
    assert run(*command) == 0
    assert "already holds the finished output of this command over the same 1 shards: nothing to run" in \
        capsys.readouterr().err
    assert manifest.read_bytes() == finished
    assert run(*command, "--threshold", "4") == 2  # another command's memory is still refused
    assert "holds a finished memory (manifest.json); choose another --memory or delete it" in \
        capsys.readouterr().err


@pytest.mark.parametrize("change", ["caption", "image_rewritten", "shard_found", "older_memgen"])
def test_the_same_command_runs_again_where_its_listing_cannot_tell_nothing_changed(tmp_path, capsys, change):
    """A caption added beside an image, an image rewritten under its name, or a named shard
    missing then and there now (its records were rejects), said "nothing to run" over the same
    listing; a memory of a memgen before listing digests cannot be compared."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(jpeg(1))
    inputs = [str(tmp_path / "in"), *([str(tmp_path / "b.tar")] if change == "shard_found" else [])]
    command = [*inputs, "--memory", str(tmp_path / "m")]
    assert run(*command) == 0
    if change in ("caption", "image_rewritten"):
        if change == "caption":
            (tmp_path / "in" / "a.txt").write_text("a cat")
        else:  # another picture under the same name
            (tmp_path / "in" / "a.jpg").write_bytes(jpeg(2))
        why = "its inputs list 1 shards now, 1 then, or others, or other captions or metadata, or files"
    elif change == "shard_found":
        write_tar(tmp_path / "b.tar", [sample("k", jpeg(2))])
        why = "1 of its rejects are missing or unreadable or changed_during_run or representative_changed"
    else:
        manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
        del manifest["listing_digest"]
        (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
        why = "it was written before memorize recorded its listing"
    capsys.readouterr()
    assert run(*command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"it is not made again ({why}" in err, err


def test_a_dry_run_refuses_what_the_run_would_and_writes_nothing(memory, tmp_path):
    shard = str(memory / "shards" / "00000.tar")
    finished = cli("memorize", shard, "--memory", str(memory / "memory"), "--dry_run")
    assert finished.returncode == 2 and "already holds a finished memory" in finished.stderr
    users = tmp_path / "users"
    users.mkdir()
    (users / "photo.jpg").write_bytes(b"the user's")
    foreign = cli("memorize", shard, "--memory", str(users), "--dry_run")
    assert foreign.returncode == 2 and "is not empty" in foreign.stderr
    fresh = cli("memorize", shard, "--memory", str(tmp_path / "new"), "--dry_run")
    assert fresh.returncode == 0 and not (tmp_path / "new").exists()
    assert sorted(p.name for p in users.iterdir()) == ["photo.jpg"]


def test_a_manifest_is_never_half_written(tmp_path, monkeypatch):
    def killed_while_dumping(obj, f, **kwargs):
        f.write('{"counts": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(memory_module.json, "dump", killed_while_dumping)
    with pytest.raises(KeyboardInterrupt):
        write_manifest(str(tmp_path / "m"), {"counts": {}})
    assert read_manifest(str(tmp_path / "m")) is None  # unfinished, so a rerun completes it


def test_a_command_reads_a_finished_manifest_once_and_anew_after_writing_it(tmp_path, monkeypatch):
    reads = []
    cat_file = fsspec.implementations.local.LocalFileSystem.cat_file
    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "cat_file",
                        lambda self, path, *a, **k: reads.append(path) or cat_file(self, path, *a, **k))
    m = str(tmp_path / "m")
    with manifests_held():
        assert read_manifest(m) is None and read_manifest(m) is None  # absent: asked each time
        write_manifest(m, {"counts": {"images": 1}})
        assert [read_manifest(m) for _ in range(3)] == [{"counts": {"images": 1}}] * 3
        assert len(reads) == 3  # one read of the finished manifest
        write_manifest(m, {"counts": {"images": 2}})  # this process wrote it: read anew
        assert read_manifest(m) == {"counts": {"images": 2}} and len(reads) == 4
    assert read_manifest(m) == {"counts": {"images": 2}} and len(reads) == 5  # outside: every time


def test_a_folder_holding_only_a_marker_is_claimed_even_an_empty_one(tmp_path):
    inputs, _ = corpus(tmp_path / "shards")
    mem = tmp_path / "m"
    mem.mkdir()
    (mem / MARKER).write_text("")  # killed while the marker was being written
    assert run(*inputs, "--memory", str(mem)) == 0
    assert (mem / MARKER).read_text().startswith("memorize ") and read_manifest(str(mem))["balanced"]


@pytest.mark.parametrize("owner", [None, "sample"])
def test_a_folder_memgen_did_not_fill_for_memorize_is_refused_and_left_alone(tmp_path, owner):
    # The input folder itself as --memory: its images/ are the user's photos, not a killed run's.
    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    photo = folder / "images" / "cat.png"
    Image.new("RGB", (32, 32), "orange").save(photo)
    if owner:
        (folder / MARKER).write_text(owner)
    result = cli("memorize", str(folder), "--memory", str(folder))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is not empty" in result.stderr, result.stderr
    assert photo.exists() and not (folder / "manifest.json").exists()


@pytest.mark.parametrize("job", ["memorize", "sample", "evaluate"])
def test_a_run_whose_folder_another_run_took_over_does_not_finish_it(memory, tmp_path, job):
    """A second run of the job claims the folder after this one did (a scheduler's retry
    while the first attempt still runs): the first writes no manifest or report and ends
    with the one-line OutputDirError; the folder is the second run's."""
    from memgen.pipelines import evaluate, sample
    from memgen.pipelines.memorize import MemorizeConfig, MemorizeOptions, build
    from memgen.pipelines.options import parse_job
    from memgen.pipelines.run import execute
    from memgen.report import REPORT, prepare_report_output, report_claim
    from memgen.sample_output import prepare_sample_output, sample_claim

    out, mem = tmp_path / "out", str(memory / "memory")
    jobs = {
        "memorize": (MemorizeOptions, [str(memory / "shards" / "00000.tar"), "--memory", str(out)],
                     MemorizeConfig, build, memory_claim, prepare_output, "manifest.json"),
        "sample": (sample.SampleOptions, ["--memory", mem, "--n", "3", "--out", str(out)],
                   sample.SampleConfig, sample.build, sample_claim, prepare_sample_output, "manifest.json"),
        "evaluate": (evaluate.EvaluateOptions,
                     ["--memory", mem, "--classifier", "caption", "--out", str(out)],
                     evaluate.EvaluateConfig, evaluate.build, report_claim, prepare_report_output, REPORT),
    }
    options_cls, argv, config_cls, wire, new_claim, prepare, finished = jobs[job]
    options = parse_job(f"memgen {job}", "", options_cls, argv, positional="INPUT", positional_flag="input")
    config = config_cls.from_options(options)
    second = new_claim(str(out))

    def prepare_then_lose_it(claim, check_only):
        prepare(claim, check_only)
        prepare(second, check_only)  # the other run starts: it clears what was left and claims the folder

    with pytest.raises(OutputDirError, match=f"--{'memory' if job == 'memorize' else 'out'} .* was taken "
                                             f"over by another memgen {job} run while this one ran"):
        execute(options, config.urls(), new_claim(str(out)), lambda p, c: wire(p, config, c),
                prepare_then_lose_it)
    assert not (out / finished).exists() and second.held()


@pytest.mark.parametrize("job", ["memorize", "sample"])
def test_a_run_taken_over_while_it_writes_a_file_ends_in_one_line(memory, tmp_path, monkeypatch, capsys, job):
    """The second run cleared the first one's half-written file: the first ended with a
    FileNotFoundError traceback (and, both writing under one temporary name, either could
    rename the other's half-written file into place)."""
    from memgen import outputs
    from memgen.sample_output import prepare_sample_output, sample_claim

    out = str(tmp_path / "out")
    second, prepare = ((memory_claim(out), prepare_output) if job == "memorize"
                       else (sample_claim(out), prepare_sample_output))
    commit = outputs.AtomicFile.commit

    def taken_over_first(self):
        if "/images/" in self.path and not second.held():
            prepare(second)  # the other run claims the folder: it clears the tables
        commit(self)

    monkeypatch.setattr(outputs.AtomicFile, "commit", taken_over_first)
    argv = ([str(memory / "shards" / "00000.tar"), "--memory", out] if job == "memorize"
            else ["--memory", str(memory / "memory"), "--n", "3", "--out", out])
    capsys.readouterr()
    assert main([job, *argv]) == 2
    err = capsys.readouterr().err
    assert "was taken over by another memgen" in err and "Traceback" not in err
    assert second.held() and not (tmp_path / "out" / "manifest.json").exists()


def test_no_command_or_an_unknown_one_is_a_usage_error_on_stderr(tmp_path, capsys, monkeypatch):
    assert main([]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "usage: memgen COMMAND" in printed.err
    assert main(["--help"]) == 0 and "usage: memgen COMMAND" in capsys.readouterr().out
    assert main(["memorise"]) == 2 and "unknown command 'memorise'" in capsys.readouterr().err
    assert main(["demo", "--out", ""]) == 2  # Path("") would be the working directory
    assert capsys.readouterr().err.strip() == "memgen demo: error: --out is an empty string"
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "s3://bucket/demo"]) == 2  # it made a local folder named "s3:"
    assert capsys.readouterr().err.strip() == ("memgen demo: error: --out s3://bucket/demo: the demo writes "
                                               "a local folder, not a URL")
    assert not list(tmp_path.iterdir())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memgen.pipelines.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_an_input_named_in_bytes_that_are_not_utf8_is_read(tmp_path):
    """Given on the command line (not found in a folder), its name ended the run in a traceback
    when the manifest recorded it."""
    folder = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    os.mkdir(folder)
    write_tar(Path(folder) / "a.tar", [sample("k", jpeg(1))])
    assert run(folder, "--memory", str(tmp_path / "m")) == 0
    assert read_manifest(str(tmp_path / "m"))["inputs"] == [f"{tmp_path}/caf\\xe9"]


def test_a_reader_that_goes_away_does_not_fail_the_run(tmp_path):
    """`memgen memorize ... | head -1`: "error: BrokenPipeError", exit 2, after the memory was
    written whole (and the demo stopped halfway)."""
    write_tar(tmp_path / "a.tar", [sample(f"k{i}", jpeg(i)) for i in range(3)])
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the summary is printed
    command = [sys.executable, "-m", "memgen.pipelines.cli", "memorize", str(tmp_path / "a.tar"),
               "--memory", str(tmp_path / "m")]
    try:
        done = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    said = [line for line in done.stderr.splitlines() if not line.startswith("read ")]
    assert (done.returncode, said) == (0, [])
    assert read_manifest(str(tmp_path / "m"))["balanced"]


def test_standard_output_on_a_full_disk_is_said_as_itself(tmp_path):
    """`memgen memorize ... > file` on a full disk blamed the output's disk ("the output's
    disk, or /tmp, ...") for a memory it had written whole."""
    write_tar(tmp_path / "a.tar", [sample(f"k{i}", jpeg(i)) for i in range(3)])
    command = [sys.executable, "-m", "memgen.pipelines.cli", "memorize", str(tmp_path / "a.tar"),
               "--memory", str(tmp_path / "m")]
    with open("/dev/full", "w") as full:  # every write: ENOSPC
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    said = [line for line in done.stderr.splitlines() if not line.startswith("read ")]
    assert (done.returncode, said) == (2, ["memgen memorize: error: standard output cannot be written: No "
                                           "space left on device (what the run wrote is whole)"])
    assert read_manifest(str(tmp_path / "m"))["balanced"]


@pytest.mark.parametrize(("args", "message"), [
    (["{tmp}/nothing-*.tar", "--memory", "{tmp}/m"], "no input matched"),
    (["{shard}", "--memory", "{memory}"], "already holds a finished memory"),
    (["{shard}", "--memory", "{tmp}/m", "--threshold", "99"], "--threshold must be between"),
    (["{shard}", "--memory", "{tmp}/m", "--threshold", "abc"], "invalid int value"),
    (["{shard}", "--memory", "{tmp}/m", "--treshold", "3"], "unrecognized arguments"),
    (["{shard}"], "--memory is required"),
    (["{shard}", "--memory", "{tmp}/m", "--reject_data_cap", "-5"], "--reject_data_cap must be 0 or more"),
    (["{shard}", "--memory", "{tmp}/m", "--min_side", "-1"], "--min_side must be 0 or more, got -1"),
    (["{shard}", "--memory", "{tmp}/m", "--max_bytes", str(2**63 - 1)], "--max_bytes must be at most"),
    (["{shard}", "--memory", "{tmp}/m", "--http_timeout", "0"], "--http_timeout must be a positive number"),
    (["{shard}", "--memory", "{tmp}/m", "--http_timeout", "nan"], "--http_timeout must be a positive number"),
    (["{shard}", "--memory", "{tmp}/m", "--direct_num_workers=-1"], "--direct_num_workers must be 0"),
    (["{shard}", "--memory", "{tmp}/m", "--direct_num_workers=-1", "--dry_run"], "--direct_num_workers must"),
    (["{shard}", "--memory", "{tmp}/m", "--direct_num_workers=4000"], "--direct_num_workers must be at most"),
    (["memory://in/{{a,b}}.tar", "--memory", "{tmp}/m", "--direct_num_workers=2",
      "--direct_running_mode=multi_processing"], "memory:// lives in one process"),  # ran into a worker
    (["{shard}", "--memory", "memory://m"], "--memory memory://m: memory:// is held by this process alone"),
    (["{shard}", "--memory", "{tmp}/crawl::2024"], "fsspec reads '::' as a chain"),  # wrote into {tmp}/crawl
    (["{shard}", "--memory", "file://{tmp}/crawl::2024"], "fsspec reads '::' as a chain"),  # made {tmp}/crawl
    (["{shard}", "--memory", "s3://b/crawl::2024"], "fsspec reads '::' as a chain"),  # s3://b/crawl
    (["", "--memory", "{tmp}/m"], "INPUT is an empty string"),
    (["{shard}", "--memory", "{tmp}/m", "--image_column", ""], "--image_column is an empty string"),
    (["foo://x/y.tar", "--memory", "{tmp}/m"], "Protocol not known: foo"),
    # each of these was a traceback, exit 1 (and the range's list filled the memory first)
    (["{tmp}/shards/{{00000..00009.tar", "--memory", "{tmp}/m"], "its braces do not pair up"),
    (["{tmp}/{{1..999999999999}}.tar", "--memory", "{tmp}/m"], "stands for more than 1,000,000 URLs"),
    (["http://[::1/x.tar", "--memory", "{tmp}/m"], "is not a URL: Invalid IPv6 URL"),
    (["data:,hello", "--memory", "{tmp}/m"], "data: holds no files or folders"),
    (["{shard}", "--memory", "reference://m"], "--memory reference://m: TypeError: "),
    (["zip://x::{shard}", "--memory", "{tmp}/m"], "BadZipFile"),
    (["{shard}", "--memory", "{tmp}/m", "--runner", "NoSuchRunner"], "Unexpected pipeline runner"),
    (["{shard}", "--memory", "{shard}"], "is a file, not a folder"),
    (["{tmp}/photos", "--memory", "{tmp}/photos/m"], "is inside the input"),
    (["{tmp}/photos/*", "--memory", "{tmp}/photos/m"], "is inside the input"),  # the glob matches it
    (["{tmp}/link", "--memory", "{tmp}/photos/m"], "is inside the input"),  # link: a link to photos/
    (["{tmp}/photos", "--memory", "{tmp}/link/m"], "is inside the input"),
    (["{shard}", "--memory", "s3://"], "--memory s3:// names no bucket"),
    (["{shard}", "--memory", "s3:///m"], "--memory s3:///m names no bucket"),  # was NoCredentialsError
    (["{shard}", "--memory", "s3://b//m"], "--memory s3://b//m has an empty folder name (//)"),
    (["{shard}", "--memory", "gs://b/x//m/"], "--memory gs://b/x//m/ has an empty folder name (//)"),
    (["s3://b//x.tar", "--memory", "gs://b/x//m/"], "--memory gs://b/x//m/ has an empty folder name (//)"),
    (["{shard}", "--memory", "{tmp}/a", "--memory={tmp}/b"], "--memory is given 2 times"),  # b was written
    (["{shard}", "--memory", "{tmp}/m", "--runner=DataflowRunner", "--runner", "FnApiRunner"],
     "--runner is given 2 times"),  # Beam's flags too: it ran here
    (["{shard}", "--memory", "/proc/memgen-test"], "cannot be written"),
    (["hdfs://namenode/shards", "--memory", "{tmp}/m"], "error: OSError: "),  # no Java here: 7 lines
    (["ftp://127.0.0.1:9/x.tar", "--memory", "{tmp}/m"], "refused (INPUT ftp://127.0.0.1:9/x.tar)"),  # which?
    (["{shard}", "--memory", "{tmp}/caf\udce9"], "caf\\xe9: the name is not UTF-8"),  # unreadable by sample
    (["{parquet}", "--memory", "{tmp}/m", "--image_column", "JPG", "--caption_column", "TEXT"],
     "--image_column JPG, --caption_column TEXT: no such column in"),  # was an empty memory, exit 0
    (["{parquet}", "--memory", "{tmp}/m", "--image_column", "caption"],
     "--image_column caption holds text in "),  # not base64: every record a reject, exit 0
    (["{tmp}/photos", "--memory", "{memory}"], "already holds a finished memory"),  # before the inputs are
    (["{tmp}/photos", "--memory", "{memory}", "--dry_run"], "already holds a finished memory"),  # listed
])
def test_unusable_arguments_give_one_line_and_exit_2(memory, tmp_path, args, message):
    fill = {"tmp": str(tmp_path), "shard": str(memory / "shards" / "00000.tar"),
            "memory": str(memory / "memory"), "parquet": str(memory / "shards" / "00002.parquet")}
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 32), "orange").save(tmp_path / "photos" / "cat.png")
    (tmp_path / "photos" / "notes.md").write_text("listed, and skipped in a line of its own")
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    result = cli("memorize", *(a.format(**fill) for a in args))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_parquet_images_under_a_name_not_guessed_are_refused_in_one_line(tmp_path):
    """Images in `image_data` (DuckDB's COPY of a table, say): every shard was a no_image_column
    reject, an empty memory and exit 0. A Parquet without bytes (metadata beside tars) is no
    reason to refuse, and --image_column reads them."""
    pq.write_table(pa.table({"image_data": [jpeg(1)], "caption": ["c"]}), tmp_path / "a.parquet")
    result = cli("memorize", str(tmp_path / "a.parquet"), "--memory", str(tmp_path / "m"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and (
        f"{tmp_path}/a.parquet: no image column among ['jpg', 'image', 'img', 'png', 'webp', 'image_bytes', "
        "'bytes']; ['image_data'] hold bytes: name the image one with --image_column; columns are "
        "['image_data', 'caption']") in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()
    result = cli("memorize", str(tmp_path / "a.parquet"), "--memory", str(tmp_path / "m"), "--image_column",
                 "image_data")
    assert result.returncode == 0, result.stderr
    assert read_manifest(str(tmp_path / "m"))["counts"]["images"] == 1
    (tmp_path / "t").mkdir()
    write_tar(tmp_path / "t" / "00000.tar", [sample("a", jpeg(2))])
    pq.write_table(pa.table({"url": ["http://x/a.jpg"]}), tmp_path / "t" / "meta.parquet")
    result = cli("memorize", str(tmp_path / "t"), "--memory", str(tmp_path / "m2"))
    assert result.returncode == 0, result.stderr


def test_a_parquet_of_urls_alone_is_refused_in_one_line(tmp_path):
    """LAION's metadata Parquet (URL, TEXT, no image bytes) named alone: a finished, empty memory
    and exit 0 said nothing of it. Refused as the first Parquet shard without an image column is
    when columns hold bytes; beside tars it is metadata, read as before (the test above)."""
    pq.write_table(pa.table({"URL": ["http://x/a.jpg"], "TEXT": ["a cat"]}), tmp_path / "part-0.parquet")
    result = cli("memorize", str(tmp_path / "part-0.parquet"), "--memory", str(tmp_path / "m"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{tmp_path}/part-0.parquet: no image column among" in result.stderr, result.stderr
    assert "columns are ['URL', 'TEXT']" in result.stderr and "img2dataset" in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()


def test_a_local_folder_named_like_an_object_store_is_a_folder():
    """`--out s3` was refused: "--out s3 names no bucket"."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from memgen.pipelines.errors import UsageError
    from memgen.pipelines.options import check_urls

    check_urls([("--out", name) for name in ("s3", "gs", "gcs/", "s3a")], PipelineOptions([]))
    with pytest.raises(UsageError, match="--out gs:// names no bucket"):
        check_urls([("--out", "gs://")], PipelineOptions([]))
    # a file under a key with an empty folder name is read as named: only folders are refused
    check_urls([("INPUT", "s3://b//x.tar"), ("--calibration", "s3://b//labels.csv")], PipelineOptions([]))


def test_a_text_column_flag_the_first_parquet_shard_lacks_is_warned_about(memory, tmp_path):
    """A caption column is optional, and another shard may have it: a warning, not a refusal."""
    result = cli("memorize", str(memory / "shards" / "00002.parquet"), "--memory", str(tmp_path / "m"),
                 "--caption_column", "TEXT")
    assert result.returncode == 0
    assert "--caption_column TEXT: no such column in the first Parquet, Arrow or MDS shard" in result.stderr


def test_inputs_after_a_bare_dry_run_or_after_a_double_dash():
    from apache_beam.options.pipeline_options import TestOptions

    from memgen.pipelines.errors import UsageError
    from memgen.pipelines.memorize import MemorizeOptions
    from memgen.pipelines.options import parse_job
    from memgen.pipelines.sample import SampleOptions

    def parsed(*argv: str) -> tuple[list[str], bool]:
        options = parse_job("memgen memorize", "", MemorizeOptions, list(argv), positional="INPUT",
                            positional_flag="input")
        return options.view_as(MemorizeOptions).input, options.view_as(TestOptions).dry_run

    assert parsed("--dry_run", "a.tar", "--memory", "m") == (["a.tar"], True)  # --help shows it bare
    assert parsed("--dry_run", "false", "a.tar", "--memory", "m") == (["a.tar"], False)
    assert parsed("--memory", "m", "--", "-x.tar", "--odd.tar") == (["-x.tar", "--odd.tar"], False)
    with pytest.raises(UsageError, match="unrecognized arguments: stray"):
        parse_job("memgen sample", "", SampleOptions, ["--memory", "m", "--", "stray"])


def test_help_lists_the_options():
    result = cli("memorize", "--help")
    assert result.returncode == 0
    for flag in ("INPUT", "--memory", "--threshold", "--hash_mode", "--runner"):
        assert flag in result.stdout


@pytest.mark.parametrize("argv", [
    ["memorize", "--help"], ["sample", "--help"], ["evaluate", "--help"], ["demo", "--help"],
    ["evaluate", "--seed", "x"], ["evaluate", "--memory", "{tmp}/m"],
    ["evaluate", "--memory", "{tmp}/m", "--out", "{tmp}/o"],
])
def test_help_and_usage_errors_import_neither_torch_nor_scipy(argv, tmp_path):
    """They took 5-7 s instead of 2: evaluate's stages import Beam's RunInference (torch), and
    memgen.prevalence and memgen.components scipy, though none is needed to parse or check
    arguments (the last argv: a memory that is not there, found before the stages load)."""
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    probe = ("import sys\nfrom memgen.pipelines.cli import main\n"
             f"try:\n    code = main({argv!r})\nexcept SystemExit as e:\n    code = e.code\n"
             "print(code, sorted({'torch', 'scipy'} & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    expected = 0 if "--help" in argv else 2
    assert result.stdout.splitlines()[-1] == f"{expected} []", result.stdout + result.stderr


def test_a_row_group_that_fails_in_one_read_only_shifts_no_record(tmp_path, monkeypatch):
    """Row group 1 could not be read the first time (a store's brief error, here damage then
    mended) but could when the shard was read again to write the kept images: the records
    after it were numbered one by one, took the numbers of others, and 20 of them became
    changed_during_run rejects though the shard held the same bytes."""
    import memgen.stages.write

    path = tmp_path / "in" / "s.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"jpg": [jpeg(i) for i in range(40)], "key": [f"k{i:02d}" for i in range(40)]}),
                   path, row_group_size=10)
    good = path.read_bytes()
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = min(o for o in (column.dictionary_page_offset, column.data_page_offset) if o is not None)
    path.write_bytes(good[:start] + b"\xff" * 16 + good[start + 16:])
    write_images = memgen.stages.write.write_images

    def mended_first(*args, **kwargs):
        path.write_bytes(good)
        return write_images(*args, **kwargs)

    monkeypatch.setattr(memgen.stages.write, "write_images", mended_first)
    memory = tmp_path / "m"
    assert main(["memorize", str(path), "--memory", str(memory)]) == 0
    counts = read_manifest(str(memory))["counts"]
    assert (counts["images"], counts["rejects_by_reason"]) == (30, {"corrupt_shard": 1})
    (reject,) = open_table(str(memory), "rejects").to_table().to_pylist()
    assert reject["source"].endswith("#row_group_1") and reject["data"] is None  # not row 10's bytes


def test_hugging_face_images_kept_as_files_make_the_memory_their_embedded_bytes_make(tmp_path):
    """A Parquet that `datasets` saved without embedding its images (bytes null, path beside
    it) is memorized as the same Parquet with the bytes in it: same images, keys and captions,
    read again to be written; a file that is gone is a `missing` reject of its row."""
    hf_image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "files" / "img").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "files" / "img" / f"{i}.jpg").write_bytes(jpeg(i))
    secret = b"SECRET-KEY-MATERIAL " * 10  # a file that is no image, which a path may name
    (tmp_path / "id_rsa").write_bytes(secret)
    captions = ["zero", "one", "two", "gone", "secret"]
    named = ["img/0.jpg", "img/1.jpg", "img/2.jpg", "img/gone.jpg", "../id_rsa"]
    pq.write_table(pa.table({"image": pa.array([{"bytes": None, "path": p} for p in named], hf_image),
                             "caption": captions}), tmp_path / "files" / "train.parquet")
    embedded_images = [{"bytes": jpeg(i), "path": None} for i in (0, 1, 2)]
    pq.write_table(pa.table({"image": pa.array(embedded_images, hf_image),
                             "caption": captions[:3]}), tmp_path / "embedded.parquet")
    files, embedded = tmp_path / "m-files", tmp_path / "m-embedded"
    assert run(str(tmp_path / "files" / "train.parquet"), "--memory", str(files)) == 0
    assert run(str(tmp_path / "embedded.parquet"), "--memory", str(embedded)) == 0

    def kept(memory: Path) -> list[tuple]:
        return sorted((r["image_id"], r["image"], r["caption"], r["source"].rsplit("#", 1)[1])
                      for r in rows(memory, "images"))

    assert kept(files) == kept(embedded) and len(kept(files)) == 3
    counts = read_manifest(str(files))["counts"]
    assert counts["rejects_by_reason"] == {"missing": 1, "not_an_image": 1} and counts["images"] == 3
    assert not any(b"SECRET-KEY" in f.read_bytes() for f in files.rglob("*") if f.is_file())
    gone, other_file = sorted(rows(files, "rejects"), key=lambda r: r["source"])
    assert (other_file["error_type"], other_file["n_bytes"], other_file["data"]) == (
        "not_an_image", len(secret), None)
    assert gone["source"] == f"{tmp_path}/files/train.parquet#000000003"


def test_a_postscript_document_a_hugging_face_path_names_keeps_none_of_its_bytes(tmp_path):
    """Pillow "identifies" a PostScript document with a bounding box (dvips and print-to-file
    write one) as EPS, which it cannot decode without Ghostscript, and an HDF5 file as a stub
    it cannot decode at all: the row went on as an image, failed at decode, and the re-read
    that writes rejects copied the file's bytes into the memory. Neither is an image a path
    may name."""
    hf_image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "0.jpg").write_bytes(jpeg(0))
    document = b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 595 842\n%%Title: payroll\n(SECRET-SALARY) show\n" * 4
    (tmp_path / "payroll.ps").write_bytes(document)
    table = b"\x89HDF\r\n\x1a\n" + b"SECRET-SALARY " * 20
    (tmp_path / "payroll.h5").write_bytes(table)
    named = ["0.jpg", "../payroll.ps", "../payroll.h5"]
    pq.write_table(pa.table({"image": pa.array([{"bytes": None, "path": p} for p in named], hf_image)}),
                   tmp_path / "files" / "train.parquet")
    memory = tmp_path / "memory"
    assert run(str(tmp_path / "files" / "train.parquet"), "--memory", str(memory)) == 0
    assert not any(b"SECRET-SALARY" in f.read_bytes() for f in memory.rglob("*") if f.is_file())
    assert sorted((r["error_type"], r["n_bytes"], r["data"]) for r in rows(memory, "rejects")) == sorted(
        [("not_an_image", len(document), None), ("not_an_image", len(table), None)])
    assert len(rows(memory, "images")) == 1


def test_a_memory_that_keeps_no_image_says_why_its_first_reject_was_one(tmp_path, capsys):
    """A file named as the input that is no image (a download that saved an HTML error page as
    cat.jpg): exit 0 and a summary of "rejects 1, not_an_image 1", the reason only in rejects/.
    A memory of no image says its first reject's message (a memory of rejects and images does
    not: its summary is the usual one)."""
    (tmp_path / "cat.jpg").write_bytes(b"<html>403 Forbidden</html>")
    assert run(str(tmp_path / "cat.jpg"), "--memory", str(tmp_path / "m")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        f"no image kept; the first reject, {tmp_path}/cat.jpg: not_an_image: Pillow cannot identify an image"
        f" format in these bytes (all in {tmp_path}/m/rejects)")
    (tmp_path / "dog.jpg").write_bytes(jpeg(1))
    assert run(str(tmp_path / "cat.jpg"), str(tmp_path / "dog.jpg"), "--memory", str(tmp_path / "m2")) == 0
    assert "no image kept" not in capsys.readouterr().out
