"""memorize --known: records that copy an earlier memory's images are its duplicates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from test_runner_independence import MULTI_PROCESS, files

from memgen import near
from memgen.memory import open_table, read_manifest
from memgen.near import popcount, split_chain
from memgen.pipelines.cli import main
from memgen.schema import load_json
from memgen.summary import memorize_summary
from shardkit import encode, jpeg, make_image, sample, valid_manifest, write_tar


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rows(memory: Path, table: str) -> list[dict]:
    return open_table(str(memory), table).to_table().to_pylist()


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Night 1 holds images 0-5; night 2 copies 0 (twice), recompresses 1, upscales 3 (more
    pixels: a representative over 3 without --known) and adds 6 and 7 with copies of their own."""
    root = tmp_path_factory.mktemp("known")
    one = {i: jpeg(i) for i in range(8)}
    write_tar(root / "night1.tar", [sample(f"n1_{i}", one[i]) for i in range(6)])
    night2 = {
        "copy0a": one[0], "copy0b": one[0], "recompressed1": jpeg(1, quality=40),
        "upscaled3": encode(make_image(3, (320, 240)), "JPEG"), "new6": one[6], "copy6": one[6],
        "new7": one[7], "resized7": encode(make_image(7).resize((80, 60)), "JPEG", quality=70),
    }
    write_tar(root / "night2.tar", [sample(key, data) for key, data in night2.items()])
    assert main(["memorize", str(root / "night1.tar"), "--memory", str(root / "m1")]) == 0
    assert main(["memorize", str(root / "night2.tar"), "--memory", str(root / "m2"),
                 "--known", str(root / "m1")]) == 0
    return root, one, night2


def test_only_new_images_are_kept_and_copies_of_known_ones_are_their_duplicates(nights):
    root, one, night2 = nights
    assert {r["image_id"] for r in rows(root / "m2", "images")} == {sha(one[6]), sha(one[7])}
    kept = {r["image_id"]: r["copies"] for r in rows(root / "m2", "images")}
    assert kept == {sha(one[6]): 2, sha(one[7]): 2}  # their copies: the known images' are not theirs
    by_key = {r["source"].rsplit("/", 1)[1]: r for r in rows(root / "m2", "duplicates")}
    assert set(by_key) == {f"night2.tar#{k}" for k in night2 if not k.startswith("new")}
    rep = {key.split("#")[1]: (r["representative"], r["kind"]) for key, r in by_key.items()}
    assert rep["copy0a"] == rep["copy0b"] == (sha(one[0]), "exact")
    assert rep["recompressed1"] == (sha(one[1]), "near")
    assert rep["upscaled3"] == (sha(one[3]), "near")  # the known image, though smaller
    assert rep["copy6"] == (sha(one[6]), "exact") and rep["resized7"] == (sha(one[7]), "near")
    known_ids = {r["image_id"] for r in rows(root / "m1", "images")}
    assert all(r["distance"] <= 10 for r in by_key.values())
    manifest = valid_manifest(read_manifest(str(root / "m2")))
    valid_manifest(read_manifest(str(root / "m1")))  # without --known: no known_digests
    assert manifest["known_digests"] == [sha((root / "m1" / "manifest.json").read_bytes())]
    counts = manifest["counts"]
    assert counts["duplicates_known"] == sum(r["representative"] in known_ids for r in by_key.values()) == 4
    assert manifest["balanced"] and counts["records_in"] == 8
    assert manifest["options"]["known"] == [str(root / "m1")]
    assert [line.split() for line in memorize_summary(manifest).splitlines() if "--known" in line] == [
        ["duplicates", "of", "--known", "4"]]


def test_sample_and_evaluate_read_a_memory_whose_duplicates_name_known_images(nights, tmp_path):
    root, one, _ = nights
    assert main(["sample", "--memory", str(root / "m2"), "--n", "2", "--out", str(tmp_path / "s")]) == 0
    assert main(["evaluate", "--memory", str(root / "m2"), "--sample", str(tmp_path / "s"), "--out",
                 str(tmp_path / "r"), "--classifier", "caption", "--embedding", "false"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    jsonschema.validate(report, load_json("report.schema"), cls=jsonschema.Draft202012Validator)
    assert report["inputs"]["memory_counts"]["duplicates_known"] == 4
    assert report["copying"]["copy"]["n_within"] == 2  # the sample is the memory's two images


def test_worker_processes_write_the_same_memory(nights, tmp_path):
    root, _, _ = nights
    assert main(["memorize", str(root / "night2.tar"), "--memory", str(tmp_path / "m2"), "--known",
                 str(root / "m1"), *MULTI_PROCESS]) == 0
    for table in ("images", "duplicates", "rejects"):
        assert files(tmp_path / "m2" / table) == files(root / "m2" / table), table


def test_without_known_the_same_night_keeps_its_copies_of_night_one(nights, tmp_path):
    root, one, _ = nights
    assert main(["memorize", str(root / "night2.tar"), "--memory", str(tmp_path / "m")]) == 0
    kept = {r["image_id"] for r in rows(tmp_path / "m", "images")}
    assert {sha(one[0]), sha(one[6]), sha(one[7])} <= kept and len(kept) == 5


def test_a_rerun_has_nothing_to_run_until_a_known_memory_is_made_anew(nights, capsys):
    root, _, _ = nights
    again = ["memorize", str(root / "night2.tar"), "--memory", str(root / "m2"), "--known", str(root / "m1")]
    assert main(again) == 0
    assert "nothing to run" in capsys.readouterr().err
    assert main(["memorize", str(root / "night1.tar"), str(root / "night2.tar"), "--memory",
                 str(root / "m1b")]) == 0
    assert main(["memorize", str(root / "night2.tar"), "--memory", str(root / "m2b"),
                 "--known", str(root / "m1b")]) == 0
    (root / "m1b" / "manifest.json").write_text(
        (root / "m1b" / "manifest.json").read_text().replace('"started_at": "', '"started_at": "0'))
    assert main(["memorize", str(root / "night2.tar"), "--memory", str(root / "m2b"),
                 "--known", str(root / "m1b")]) == 2
    assert "a --known memory was made anew since" in capsys.readouterr().err


@pytest.mark.parametrize("known, said", [
    ("missing", "--known {root}/missing is not a finished memory (nothing is there)"),
    ("fresh", "--known {root}/fresh is --memory itself"),
    ("exact", "--known {root}/exact was memorized with --hash_mode exact, this run uses fast"),
    ("turned", "--known {root}/turned was memorized with --orientations any, this run uses upright"),
])
def test_an_unusable_known_memory_is_refused_in_a_line(nights, capsys, known, said):
    root, _, _ = nights
    flags = {"exact": ["--hash_mode", "exact"], "turned": ["--orientations", "any"]}
    if known in flags:
        assert main(["memorize", str(root / "night1.tar"), "--memory", str(root / known), *flags[known]]) == 0
        capsys.readouterr()
    code = main(["memorize", str(root / "night2.tar"), "--memory", str(root / "fresh"),
                 "--known", str(root / known)])
    err = capsys.readouterr().err
    assert code == 2 and said.format(root=root) in err and "Traceback" not in err


def test_inputs_given_after_known_are_told_to_come_before_it(nights, capsys):
    """--known takes one or more names, so the INPUTs after it became known memories: the
    error says so, not only "no INPUT given"."""
    root, _, _ = nights
    assert main(["memorize", "--memory", str(root / "late"), "--known", str(root / "m1"),
                 str(root / "night2.tar")]) == 2
    assert capsys.readouterr().err == ("memgen memorize: error: no INPUT given (--known took every name "
                                       "after it: give the INPUTs before --known)\n")
    assert main(["memorize", "--memory", str(root / "late")]) == 2
    assert capsys.readouterr().err == "memgen memorize: error: no INPUT given\n"


@pytest.mark.parametrize("scan", [True, False])
def test_fixed_representatives_stay_and_take_their_neighbours_first(monkeypatch, scan):
    if not scan:
        monkeypatch.setattr(near, "SPLIT_SCAN_MAX", 0)
    # two known hashes 2 bits apart, then a new one 2 bits from the second only (3 from the first)
    hashes = np.array([0b0, 0b11, 0b11100, 0xFFFF_FFFF_0000_0000], dtype=np.uint64)
    assert split_chain(hashes, 2).tolist() == [0, 0, 2, 3]  # the second taken by the first
    rep = split_chain(hashes, 2, fixed=2)
    assert rep.tolist() == [0, 1, 2, 3]
    hashes[2] = 0b111
    assert split_chain(hashes, 2, fixed=2).tolist() == [0, 1, 1, 3]
    assert (popcount(hashes ^ hashes[split_chain(hashes, 2, fixed=2)]) <= 2).all()
