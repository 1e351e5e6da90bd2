"""`memgen sample` end to end: the CombineFn, invariance to parts/runner/workers, the three
output formats (read back with the webdataset library and pyarrow), hostile names,
errors, a memorize-then-sample run and a sample of a memory of real photos."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from memgen import sample_output, sampling
from memgen.memory import read_manifest, write_manifest, write_rows
from memgen.outputs import MARKER
from memgen.pipelines import cli
from memgen.pipelines.cli import main
from memgen.readers import ReaderConfig, read_shard
from memgen.sample_output import sample_rows_schema
from memgen.schema import table_schema
from memgen.shards import discover
from memgen.stages.sample import TopCandidates
from shardkit import encode, jpeg, make_image, read_mds, valid_manifest, write_tar
from shardkit import sample as tar_sample

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realimages"


def sample(memory: str, out: str, n: int, seed: int = 0, weighted: bool = False, fmt: str = "webdataset",
           flags: tuple[str, ...] = ()) -> dict:
    """`memgen sample` as a user runs it; the sample's manifest (checked against its schema)."""
    manifest = cli.sample(["--memory", memory, "--out", out, "--n", str(n), "--seed", str(seed),
                           f"--weighted={weighted}".lower(), "--format", fmt, *flags])
    return valid_manifest(manifest, "sample_manifest.schema")


def image_row(i: int, source: str | None = None) -> dict:
    data = jpeg(i) if i % 3 else encode(make_image(i), "PNG")
    return {
        "image_id": hashlib.sha256(data).hexdigest(), "phash": i, "dhash": -i, "width": 160,
        "height": 120, "format": "JPEG" if i % 3 else "PNG", "n_bytes": len(data), "image": data,
        "caption": f"caption {i}" if i % 4 else None, "url": f"http://x/{i}",
        "metadata": json.dumps({"key": f"{i:09d}", "status": "success", "lang": "ö"}),
        "source": source or f"shard{i % 3}.tar#key{i}", "copies": 1 + (i * 5) % 7, "exact_copies": 1,
    }


def make_memory(root: Path, parts: list[list[dict]]) -> str:
    for k, rows in enumerate(parts):
        write_rows(str(root / "images" / f"part-{k:06d}.parquet"), "images", rows)
    write_manifest(str(root), {"job": "memorize", "counts": {"images": sum(map(len, parts))}})
    return str(root)


ROWS = [image_row(i) for i in range(30)]


@pytest.fixture(scope="module")
def memory(tmp_path_factory) -> str:
    return make_memory(tmp_path_factory.mktemp("mem"), [ROWS[:12], ROWS[12:20], ROWS[20:]])


def index(out: Path) -> list[dict]:
    return pq.read_table(out / "index.parquet").to_pylist()


def by_id() -> dict[str, dict]:
    return {r["image_id"]: r for r in ROWS}


# --- the CombineFn and invariances --------------------------------------------------------

def test_top_candidates_combinefn_merges_partial_tops():
    population = list(sampling.candidates(4, "weighted", "p", [r["image_id"] for r in ROWS],
                                          [r["copies"] for r in ROWS]))
    parts = [[tuple(c) for c in sampling.top(population[k::4], 6)] for k in range(4)]
    with TestPipeline(runner="FnApiRunner") as p:
        top = p | beam.Create(parts) | beam.CombineGlobally(TopCandidates(6))
        assert_that(top, equal_to([[tuple(c) for c in sorted(population, reverse=True)[:6]]]))


@pytest.mark.parametrize("weighted", [False, True])
def test_sample_is_the_same_whatever_the_partitioning_and_order_of_parts(tmp_path, memory, weighted):
    other = make_memory(tmp_path / "mem", [ROWS[25:], ROWS[3:11][::-1], ROWS[11:25], ROWS[:3]])
    sample(memory, str(tmp_path / "a"), 9, seed=5, weighted=weighted)
    sample(other, str(tmp_path / "b"), 9, seed=5, weighted=weighted)
    columns = ("rank", "image_id", "log_key", "u", "weight", "inclusion_probability")
    a, b = index(tmp_path / "a"), index(tmp_path / "b")
    assert [[r[c] for c in columns] for r in a] == [[r[c] for c in columns] for r in b]
    mode = "weighted" if weighted else "uniform"
    expected = sorted(sampling.candidates(5, mode, "", [r["image_id"] for r in ROWS],
                                          [r["copies"] for r in ROWS]), reverse=True)[:9]
    assert [r["image_id"] for r in a] == [c.image_id for c in expected]


@pytest.mark.parametrize("fmt", ["webdataset", "mds"])
def test_in_process_and_multi_process_runners_write_identical_samples(tmp_path, memory, fmt):
    sample(memory, str(tmp_path / "one"), 12, seed=3, weighted=True, fmt=fmt)
    sample(memory, str(tmp_path / "two"), 12, seed=3, weighted=True, fmt=fmt,
           flags=("--direct_num_workers=2", "--direct_running_mode=multi_processing"))
    own = ("manifest.json", MARKER)  # timings, and the name of the run

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in own)

    assert files(tmp_path / "one") == files(tmp_path / "two")
    assert any(f.endswith((".tar", ".mds")) for f in files(tmp_path / "one"))
    for name in files(tmp_path / "one"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_different_seeds_give_different_samples(tmp_path, memory):
    sample(memory, str(tmp_path / "a"), 10, seed=1)
    sample(memory, str(tmp_path / "b"), 10, seed=2)
    assert {r["image_id"] for r in index(tmp_path / "a")} != {r["image_id"] for r in index(tmp_path / "b")}


# --- outputs ------------------------------------------------------------------------------

def test_webdataset_shards_read_unmodified_by_the_webdataset_library(tmp_path, memory):
    out = tmp_path / "wds"
    manifest = sample(memory, str(out), 10, seed=7, weighted=True)
    tars = sorted(str(p) for p in (out / "images").glob("sample-*.tar"))
    assert manifest["files"] == [f"images/{Path(t).name}" for t in tars]
    rows = by_id()
    seen = {}
    for s in wds.WebDataset(tars, shardshuffle=False):
        meta = json.loads(s["json"])
        row = rows[meta["image_id"]]
        ext = "jpg" if row["format"] == "JPEG" else "png"
        assert s[ext] == row["image"]  # original bytes, original format
        assert (s["txt"].decode() if "txt" in s else None) == row["caption"]  # None: no KEY.txt
        assert (meta["source"], meta["copies"], meta["weight"]) == (row["source"], row["copies"],
                                                                    row["copies"])
        assert meta["log_key"] == sampling.sample_key(7, row["image_id"], row["copies"])
        assert meta["key"] == s["__key__"]  # as img2dataset's json names its sample
        assert meta["metadata"] == json.loads(row["metadata"])  # an object, not JSON text in a string
        seen[s["__key__"]] = meta["rank"]
    assert sorted(seen.values()) == list(range(10))
    decoded = next(iter(wds.WebDataset(tars, shardshuffle=False).decode("pil")))
    assert isinstance(next(v for k, v in decoded.items() if k in ("jpg", "png")), Image.Image)
    idx = index(out)
    assert [r["rank"] for r in idx] == list(range(10))
    assert {f"{r['file']}/{r['member']}".rsplit(".", 1)[0].split("/")[-1] for r in idx} == set(seen)
    assert all(0 < r["inclusion_probability"] <= 1 for r in idx)
    assert pq.read_schema(out / "index.parquet").names == table_schema("sample_index").names


def test_mds_shards_read_unmodified_by_mosaicml_streaming(tmp_path, memory, monkeypatch):
    """StreamingDataset, as a training job reads the sample, over shards cut at their size
    limit (small here: several shards a file); memgen reads them back as its own input."""
    monkeypatch.setattr(sample_output, "MDS_SHARD_BYTES", 20_000)
    out = tmp_path / "mds"
    manifest = sample(memory, str(out), 12, seed=7, weighted=True, fmt="mds")
    shards = sorted(p.name for p in (out / "images").glob("*.mds"))
    assert len(shards) > 2 and shards[0] == "sample-000000.00000.mds"
    assert manifest["files"] == ["images/index.json", *(f"images/{name}" for name in shards)]
    rows, idx = by_id(), index(out)
    samples = read_mds(out / "images")
    assert len(samples) == 12
    for s in samples:
        meta = s["json"]
        row = rows[meta["image_id"]]
        assert s["image"] == row["image"]  # original bytes
        assert s["caption"] == row["caption"] and s["key"] == meta["key"]  # None: no caption
        assert meta["metadata"] == json.loads(row["metadata"]) and meta["weight"] == row["copies"]
    by_key = {r["key"]: r for r in idx}
    assert sorted(s["key"] for s in samples) == sorted(by_key)
    assert all(by_key[s["json"]["key"]]["file"].endswith(".mds") for s in samples)
    shards = discover([str(out / "images")])
    read_back = [item for shard in shards for item in read_shard(shard, ReaderConfig())]
    assert sorted(r.data for r in read_back) == sorted(s["image"] for s in samples)


def test_sample_json_is_strict_json_whatever_the_crawl_metadata(tmp_path):
    """A number too large for a float became Infinity (not JSON), and a lone surrogate (valid
    escaped JSON) failed the run: UTF-8 cannot encode it."""
    row = image_row(1) | {"metadata": '{"score": 1e400, "loss": NaN, "odd": "\\ud800", "lang": "ö"}'}
    mem = make_memory(tmp_path / "mem", [[row]])
    for fmt in ("webdataset", "folder"):
        out = tmp_path / fmt
        sample(mem, str(out), 1, fmt=fmt)
        if fmt == "webdataset":
            with tarfile.open(next((out / "images").glob("*.tar"))) as tar:
                text = next(tar.extractfile(m).read() for m in tar if m.name.endswith(".json"))
        else:
            text = next((out / "images").glob("*.json")).read_bytes()

        def refuse(constant):
            raise AssertionError(f"not strict JSON: {constant}")

        meta = json.loads(text, parse_constant=refuse)["metadata"]
        assert meta == {"score": None, "loss": None, "odd": "\ud800", "lang": "ö"}


def test_parquet_format_is_the_memory_schema_plus_sampling_columns(tmp_path, memory):
    out = tmp_path / "pq"
    sample(memory, str(out), 8, seed=2, fmt="parquet")
    # the parts have a folder of their own: a glob over it reads the sample, not index.parquet too
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/images/*.parquet')").fetchall() == [(8,)]
    tables = [pq.read_table(p) for p in sorted((out / "images").glob("*.parquet"))]
    assert all(t.schema.equals(sample_rows_schema(), check_metadata=False) for t in tables)
    rows = [r for t in tables for r in t.to_pylist()]
    assert sorted(r["rank"] for r in rows) == list(range(8))
    for r in rows:
        original = by_id()[r["image_id"]]
        assert {k: r[k] for k in original} == original
        assert r["weight"] == 1 and r["log_key"] == sampling.sample_key(2, r["image_id"], 1)
    assert set(table_schema("images").names) < set(sample_rows_schema().names)


def test_folder_format_names_hostile_keys_safely(tmp_path):
    hostile = ["../../x", "/etc/passwd", "a\x00b", "y" * 5000, "..", "", "sub/../../../z", "C:\\x"]
    rows = [image_row(40 + k, f"shard.tar#{key}") for k, key in enumerate(hostile)]
    rows += [image_row(60, "/abs/path/../../file.jpg"), image_row(61, "http://h/" + "w" * 400)]
    for r in rows:
        r["caption"] = "../../caption\x00/" + "c" * 300
    mem = make_memory(tmp_path / "mem", [rows])
    out = tmp_path / "sandbox" / "out"
    sample(mem, str(out), 100, seed=0, fmt="folder")
    assert sorted(p.name for p in (tmp_path / "sandbox").iterdir()) == ["out"]
    files = list((out / "images").iterdir())
    assert len(files) == 3 * len(rows) and all(f.is_file() for f in files)
    for f in files:
        assert f.resolve().parent == (out / "images").resolve() and len(f.name) <= 100
    for r in index(out):
        data = (out / r["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["image_id"]


RARER_FORMATS = ("TGA", "PCX", "QOI", "SGI", "DDS", "XBM", "BLP", "ICNS", "DIB")
OTHER_FORMATS = ("IM", "MSP", "SPIDER")  # suffixes often something else, or none: read back from tars


def test_a_sample_of_rarer_formats_is_read_back_whole_by_memorize(tmp_path):
    """Crawls name TGA or QOI bytes .png; sample names them by their format (.tga, .qoi),
    which memgen's readers skipped (a folder) or rejected (no_image in a tar): `--reference
    OUT/images` lost them."""
    records = []
    for i, fmt in enumerate(RARER_FORMATS + OTHER_FORMATS):
        image = make_image(200 + i, (64, 64))
        image = image.convert({"XBM": "1", "MSP": "1", "BLP": "P", "SPIDER": "F"}.get(fmt, image.mode))
        records.append(tar_sample(f"r{i}", encode(image, fmt), fmt, ext="png"))
    memory = str(tmp_path / "memory")
    assert main(["memorize", str(write_tar(tmp_path / "in.tar", records)), "--memory", memory,
                 "--threshold", "0"]) == 0
    for fmt in ("webdataset", "folder"):
        out = tmp_path / fmt
        assert run("--memory", memory, "--n", "100", "--out", str(out), "--format", fmt) == 0
        back = str(tmp_path / f"back-{fmt}")
        assert main(["memorize", str(out / "images"), "--memory", back, "--threshold", "0"]) == 0
        counts = json.loads((Path(back) / "manifest.json").read_text())["counts"]
        read = len(RARER_FORMATS) + (len(OTHER_FORMATS) if fmt == "webdataset" else 0)
        assert (counts["images"], counts["rejects"]) == (read, 0), counts


@pytest.mark.parametrize("fmt", ["webdataset", "parquet", "folder", "mds"])
def test_memorize_reads_a_sample_back_under_the_keys_its_index_names(tmp_path, memory, fmt):
    """The sampling key was a float column `key`, which memorize (--key_column key) took for
    a Parquet sample's record keys: sources like sample-000000.parquet#-0.0123; and an image
    without a caption got an empty KEY.txt, read back as the caption ''."""
    out = tmp_path / "s"
    assert run("--memory", memory, "--n", "5", "--out", str(out), "--format", fmt) == 0
    back = tmp_path / "back"
    assert main(["memorize", str(out / "images"), "--memory", str(back), "--threshold", "0"]) == 0
    sources = duckdb.sql(f"select source from '{back}/images/*.parquet'").fetchall()
    keys = [r["key"] for r in index(out)]
    assert sorted(s.split("#")[-1].rsplit("/", 1)[-1].rsplit(".", 1)[0] for (s,) in sources) == sorted(keys)
    assert all(k[:9].isdigit() and k[9] == "_" for k in keys)
    captions = dict(duckdb.sql(f"select image_id, caption from '{back}/images/*.parquet'").fetchall())
    assert captions == {r["image_id"]: by_id()[r["image_id"]]["caption"] for r in index(out)}  # null: null
    assert None in captions.values()


def test_files_are_numbered_without_gaps_and_consecutive_parts_share_one(tmp_path, memory, monkeypatch):
    """A file a memory part, named after it: a brace range over the files missed some, and a
    memory of small parts (a folder of photos) gave a tar an image."""
    monkeypatch.setattr(sample_output, "IMAGES_PER_FILE", 10)
    out = tmp_path / "s"
    assert run("--memory", memory, "--n", "20", "--out", str(out)) == 0
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == [f"sample-{i:06d}.tar" for i in range(len(names))]
    brace = str(out / "images" / f"sample-{{000000..{len(names) - 1:06d}}}.tar")
    assert len(list(wds.WebDataset(brace, shardshuffle=False))) == 20
    rows = index(out)
    chosen = Counter(r["memory_part"] for r in rows)
    assert chosen["part-000000.parquet"] >= 10 and chosen["part-000001.parquet"] < 10  # so:
    assert {(r["memory_part"], r["file"]) for r in rows} == {
        ("part-000000.parquet", "images/sample-000000.tar"),
        ("part-000001.parquet", "images/sample-000001.tar"),
        ("part-000002.parquet", "images/sample-000001.tar")}


def test_file_numbers_fill_a_file_up_to_its_size_before_the_next(monkeypatch):
    monkeypatch.setattr(sample_output, "IMAGES_PER_FILE", 3)
    chosen = ["p3"] * 5 + ["p0"] + ["p1"] + ["p2"] * 2 + ["p5"]
    assert sample_output.file_numbers(chosen) == {"p0": 0, "p1": 0, "p2": 0, "p3": 1, "p5": 2}


def test_contact_sheet_shows_the_first_ranks(tmp_path, memory):
    manifest = sample(memory, str(tmp_path / "cs"), 5, seed=1)
    sheet = Image.open(tmp_path / "cs" / manifest["contact_sheet"])
    assert sheet.format == "JPEG" and sheet.size == (3 * 132 + 4, 2 * 132 + 4)
    assert manifest["counts"]["thumbnails_undecodable"] == 0


# --- errors and edge cases ----------------------------------------------------------------

def run(*args: str) -> int:
    return main(["sample", *args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    return err


def test_usage_errors_are_one_line(tmp_path, memory, capsys):
    out = str(tmp_path / "o")
    assert run("--memory", memory, "--n", "0", "--out", out) == 2
    assert "--n must be positive" in one_line_error(capsys)
    assert run("--memory", memory, "--n", "-3", "--out", out) == 2
    one_line_error(capsys)
    assert run("--memory", memory, "--out", out) == 2
    assert "--n is required" in one_line_error(capsys)
    assert run("--memory", memory, "--n", "2", "--out", out, "--format", "zip") == 2
    one_line_error(capsys)
    assert run("--memory", memory, "--n", "2", "--out", out, "--seed", "-1") == 2
    assert "--seed must be between" in one_line_error(capsys)
    assert run("--memory", str(tmp_path / "nothing"), "--n", "2", "--out", out) == 2
    assert "/nothing is not a finished memory (nothing is there)" in one_line_error(capsys)
    unfinished = tmp_path / "unfinished"
    write_rows(str(unfinished / "images" / "part-000000.parquet"), "images", ROWS[:2])
    assert run("--memory", str(unfinished), "--n", "2", "--out", out) == 2
    assert "no manifest.json" in one_line_error(capsys)


def test_a_folder_inside_a_memory_or_sample_names_the_run_above_it(tmp_path, memory, capsys):
    """`--memory M/images` or `--sample S/images` (README's `--reference S/images` reads that
    folder) said only "no manifest.json": the run they belong to is the folder above."""
    out = tmp_path / "s"
    sample(memory, str(out), 3)
    assert run("--memory", f"{memory}/images", "--n", "2", "--out", str(tmp_path / "o")) == 2
    assert one_line_error(capsys).endswith(f"{memory}/images is not a finished memory (no manifest.json);"
                                           f" the folder above it, {memory}, is a memory")
    assert main(["evaluate", "--memory", memory, "--sample", f"{out}/images", "--out", str(tmp_path / "r"),
                 "--classifier", "caption"]) == 2
    assert one_line_error(capsys).endswith(f"{out}/images is not a finished sample (no manifest.json);"
                                           f" the folder above it, {out}, is a sample")
    assert main(["evaluate", "--memory", str(out / "images"), "--out", str(tmp_path / "r"),
                 "--classifier", "caption"]) == 2
    assert one_line_error(capsys).endswith(f"the folder above it, {out}, is a sample")
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_an_evaluate_report_given_as_memory_or_sample_is_named(tmp_path, memory, capsys):
    """`--memory R` or `--sample R` of evaluate's --out said only "no manifest.json", as for an
    unfinished run: the folder holds a report."""
    report = str(tmp_path / "r")
    assert main(["evaluate", "--memory", memory, "--out", report, "--classifier", "caption",
                 "--embedding", "false"]) == 0
    capsys.readouterr()
    said = f"{report} is not a finished memory (no manifest.json: it holds memgen evaluate's report.json)"
    assert run("--memory", report, "--n", "2", "--out", str(tmp_path / "o")) == 2
    assert one_line_error(capsys).endswith(said)
    assert main(["evaluate", "--memory", memory, "--sample", report, "--out", str(tmp_path / "r2"),
                 "--classifier", "caption"]) == 2
    assert one_line_error(capsys).endswith(said.replace("finished memory", "finished sample"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "r2").exists()


def test_a_folder_of_the_users_or_of_another_job_is_refused_and_left_alone(tmp_path, memory, capsys):
    users = tmp_path / "users"
    (users / "images").mkdir(parents=True)
    (users / "images" / "cat.jpg").write_bytes(b"the user's photo")
    (users / "index.parquet").write_bytes(b"the user's table")
    for fmt in ("parquet", "folder"):
        assert run("--memory", memory, "--n", "3", "--out", str(users), "--format", fmt) == 2
        assert "is not empty: it holds files memgen did not write" in one_line_error(capsys)
    assert (users / "images" / "cat.jpg").exists() and (users / "index.parquet").exists()
    assert run("--memory", memory, "--n", "3", "--out", memory) == 2  # the memory itself
    assert one_line_error(capsys).endswith(  # not "or delete it"
        f"{memory} already holds a finished memory (manifest.json); choose another --out")
    assert run("--memory", memory, "--n", "3", "--out", str(tmp_path / "o"), "--threshold", "3") == 2
    assert "--threshold (not a flag of memgen sample)" in one_line_error(capsys)


def test_a_rerun_never_clears_another_runs_folder_inside_its_own(tmp_path, memory):
    """A sample made inside a killed sample's folder, as sample-B/, matched the first one's
    leftovers (sample-*) and was deleted by its rerun."""
    first = tmp_path / "a"
    assert run("--memory", memory, "--n", "3", "--out", str(first)) == 0
    (first / "manifest.json").unlink()  # as if killed before the end
    assert run("--memory", memory, "--n", "3", "--out", str(first / "sample-b")) == 0
    assert run("--memory", memory, "--n", "3", "--out", str(first)) == 0
    assert (first / "sample-b" / "manifest.json").exists()


def test_a_retry_whose_first_try_finishes_while_it_reads_has_nothing_to_run(tmp_path, memory, capsys,
                                                                            monkeypatch):
    """The sample's first try finished between its retry's look at --out and its claim: the
    retry was refused ("delete it", exit 2); it has nothing to run."""
    from memgen.pipelines import cli

    out = tmp_path / "o"
    assert run("--memory", memory, "--n", "3", "--out", str(out)) == 0
    finished = (out / "manifest.json").read_bytes()
    (out / "manifest.json").unlink()
    execute = cli.execute

    def first_try_finishes(*args, **kwargs):
        (out / "manifest.json").write_bytes(finished)
        return execute(*args, **kwargs)

    monkeypatch.setattr(cli, "execute", first_try_finishes)
    capsys.readouterr()
    assert run("--memory", memory, "--n", "3", "--out", str(out)) == 0
    assert capsys.readouterr().err == (f"memgen sample: --out {out} already holds the finished output of "
                                       "this command: nothing to run\n")


def test_a_finished_sample_is_not_overwritten_and_an_unfinished_one_is_redone(tmp_path, memory, capsys):
    out = tmp_path / "o"
    assert run("--memory", memory, "--n", "3", "--out", str(out)) == 0
    first = (out / "index.parquet").read_bytes()
    capsys.readouterr()
    assert run("--memory", memory, "--n", "4", "--out", str(out)) == 2  # another command
    assert "already holds a finished sample (manifest.json); choose another --out or delete it" in \
        one_line_error(capsys)
    # the same command (a retry of a run killed after it wrote its manifest) says so, exit 0
    assert run("--memory", memory, "--n", "3", "--out", str(out)) == 0
    said = capsys.readouterr()
    assert said.err == (f"memgen sample: --out {out} already holds the finished output of this command: "
                        "nothing to run\n")
    assert "sampled        3 of 30 unique images" in said.out
    assert (out / "index.parquet").read_bytes() == first
    (out / "manifest.json").unlink()  # as if killed before the end
    (out / "images" / "sample-999999.tar").write_bytes(b"junk")
    (out / "sample-000000.tar").write_bytes(b"junk")  # where a version before images/ wrote it
    assert run("--memory", memory, "--n", "3", "--out", str(out)) == 0
    assert (out / "index.parquet").read_bytes() == first
    assert not (out / "images" / "sample-999999.tar").exists() and not (out / "sample-000000.tar").exists()


class RecordingRunner(FnApiRunner):
    """Dataflow cannot run here: this runner only records the pipelines it is given."""

    runs: list[list[str]] = []

    def run_pipeline(self, pipeline, options):
        RecordingRunner.runs.append([t.full_label for t in pipeline.transforms_stack[0].parts])
        return super().run_pipeline(pipeline, options)


class UnstartableRunner(FnApiRunner):
    """A runner that cannot start a pipeline (Dataflow without its package or credentials)."""

    def run_pipeline(self, pipeline, options):
        raise ImportError("Google Cloud Dataflow runner not available, please install apache_beam[gcp]")


def test_a_finished_sample_still_leaves_a_flex_launcher_a_job_file(tmp_path, memory, capsys):
    """A Flex Template's launcher reads the job file --template_location names; a retry that
    found its sample finished wrote none, and the launch failed ("Unable to open template
    file"). It now runs an empty pipeline, which writes that file under DataflowRunner."""
    out = str(tmp_path / "o")
    assert run("--memory", memory, "--n", "3", "--out", out) == 0
    flex = [f"--runner={__name__}.RecordingRunner", f"--template_location={tmp_path}/job"]
    RecordingRunner.runs.clear()
    assert run("--memory", memory, "--n", "3", "--out", out, *flex) == 0
    assert "nothing to run" in capsys.readouterr().err
    assert RecordingRunner.runs == [["NothingToRun"]]
    assert run("--memory", memory, "--n", "3", "--out", out, f"--runner={__name__}.RecordingRunner") == 0
    assert RecordingRunner.runs == [["NothingToRun"]]  # without a launcher to feed: nothing run
    capsys.readouterr()
    flex[0] = f"--runner={__name__}.UnstartableRunner"  # a traceback, exit 1
    assert run("--memory", memory, "--n", "3", "--out", out, *flex) == 2
    assert capsys.readouterr().err.splitlines() == [  # why no job file is left, and only that
        "memgen sample: error: UnstartableRunner could not start the pipeline: ImportError: Google Cloud "
        "Dataflow runner not available, please install apache_beam[gcp]"]


def test_n_larger_than_the_memory_takes_everything_and_warns(tmp_path, memory, caplog):
    logger = logging.getLogger("memgen.sample")
    logger.addHandler(caplog.handler)
    try:
        manifest = sample(memory, str(tmp_path / "all"), 500, seed=0, weighted=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert "more than the memory's 30 images" in caplog.text
    assert manifest["counts"]["images"] == 30 and manifest["threshold"] is None
    assert sorted(r["image_id"] for r in index(tmp_path / "all")) == sorted(by_id())
    assert all(r["inclusion_probability"] == 1.0 for r in index(tmp_path / "all"))


def test_n_larger_than_a_memory_of_one_image_says_it_in_the_singular(tmp_path, caplog):
    """It said "the memory's 1 images: the sample is all of them"."""
    mem = make_memory(tmp_path / "mem", [[image_row(0)]])
    logger = logging.getLogger("memgen.sample")
    logger.addHandler(caplog.handler)
    try:
        sample(mem, str(tmp_path / "one"), 5)
    finally:
        logger.removeHandler(caplog.handler)
    assert set(caplog.messages) == {"--n 5 is more than the memory's 1 image: the sample is all of it"}


def test_a_memory_without_images_gives_an_empty_sample_that_readers_glob(tmp_path, caplog):
    """images/ was not even made: DuckDB's glob and --reference OUT/images failed. It says the
    memory holds no image ("--n 4 is more than the memory's 0 images" said it as a warning
    of too large an --n)."""
    mem = make_memory(tmp_path / "mem", [])
    logger = logging.getLogger("memgen.sample")
    logger.addHandler(caplog.handler)
    try:
        for fmt in ("webdataset", "parquet", "folder", "mds"):
            out = tmp_path / fmt
            manifest = sample(mem, str(out), 4, fmt=fmt)
            assert manifest["counts"]["images"] == 0 and index(out) == []
            assert (out / "contact_sheet.jpg").exists()
            assert (out / "images").is_dir() and all((out / f).exists() for f in manifest["files"])
    finally:
        logger.removeHandler(caplog.handler)
    assert set(caplog.messages) == {f"{mem} holds no image: the sample is empty"}
    assert duckdb.sql(f"select count(*) from '{tmp_path}/parquet/images/*.parquet'").fetchall() == [(0,)]
    tar = str(tmp_path / "webdataset" / "images" / "sample-000000.tar")
    assert list(wds.WebDataset(tar, empty_check=False, shardshuffle=False)) == []
    assert main(["memorize", str(tmp_path / "webdataset" / "images"), "--memory", str(tmp_path / "m")]) == 0
    listed = json.loads((tmp_path / "mds" / "images" / "index.json").read_text())
    assert listed == {"shards": [], "version": 2}  # an MDS dataset of no shard


# --- end to end ---------------------------------------------------------------------------

def test_memorize_then_sample(tmp_path, capsys):
    originals = [jpeg(200 + i) for i in range(6)]
    samples = [tar_sample(f"k{i}", data, caption=f"photo {i}") for i, data in enumerate(originals)]
    samples += [tar_sample("copy0", originals[0]), tar_sample("copy0b", originals[0])]
    write_tar(tmp_path / "00000.tar", samples)
    memory, out = str(tmp_path / "memory"), str(tmp_path / "sample")
    assert main(["memorize", str(tmp_path / "00000.tar"), "--memory", memory]) == 0
    assert main(["sample", "--memory", memory, "--n", "4", "--seed", "3", "--weighted", "--out", out]) == 0
    valid_manifest(read_manifest(memory))
    assert valid_manifest(read_manifest(out), "sample_manifest.schema")["threshold"] is not None  # tau
    printed = capsys.readouterr().out
    assert "4 of 6 unique images" in printed and f"{out}/contact_sheet.jpg" in printed
    rows = index(Path(out))
    wanted = {hashlib.sha256(d).hexdigest() for d in originals}
    assert {r["image_id"] for r in rows} <= wanted
    copies = {r["image_id"]: r["copies"] for r in rows}
    assert copies.get(hashlib.sha256(originals[0]).hexdigest(), 3) == 3
    members = [m for t in sorted(Path(out).glob("images/*.tar"))
               for m in wds.WebDataset(str(t), shardshuffle=False)]
    assert sorted(json.loads(m["json"])["rank"] for m in members) == [0, 1, 2, 3]


def test_sample_of_a_memory_of_real_photos(tmp_path):
    if not REAL.is_dir():
        pytest.skip(f"real photos not found at {REAL} (see ../shared/data/realimages)")
    memory, out = str(tmp_path / "memory"), tmp_path / "sample"
    assert main(["memorize", str(REAL / "neardup"), str(REAL / "misc" / "unusual"),
                 "--memory", memory]) == 0
    manifest = sample(memory, str(out), 40, seed=11, weighted=True)
    assert manifest["counts"]["images"] == 40
    members = [m for t in sorted(out.glob("images/*.tar"))
               for m in wds.WebDataset(str(t), shardshuffle=False)]
    assert len(members) == 40
    for m in members:
        meta = json.loads(m["json"])
        image = next(v for k, v in m.items() if not k.startswith("__") and k not in ("json", "txt"))
        assert hashlib.sha256(image).hexdigest() == meta["image_id"]
        Image.open(io.BytesIO(image)).size  # noqa: B018 - opens: original format kept
    assert manifest["counts"]["thumbnails_undecodable"] == 0
