"""report.html: self-contained (inlined images, no URLs), escaped, and loads cleanly in headless Chromium.

The Chromium test needs Debian's chromium package (`apt-get install -y chromium`); without
/usr/bin/chromium it skips and says so.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memgen import copying, metrics, report_html
from memgen.classify import ClassifierSpec
from memgen.classify.concept import Design, FailureTally, Scored, concept_section
from memgen.prevalence import Calibration, Tally
from memgen.report_html import Cluster, Figures, make_thumb

HOSTILE = "<script>alert('x')</script> & \"quoted\""


def _photos() -> list[bytes]:
    data = pytest.importorskip("skimage.data", reason="scikit-image (the demo extra) ships the sample photos")
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field"):
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _report() -> dict:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(80, 8)), rng.normal(size=(70, 8)) + 0.2
    row = metrics.compare(metrics.Moments.of(a), metrics.Moments.of(b), a, b, kid_subsets=5)
    hist = copying.distance_histogram(np.array([0] * 40 + [3, 12, 30]), 16)
    rows = [{"space": "thumbnail", "a": "reference", "b": "sample", **row},
            {"space": "phash", "a": "reference", "b": "sample", **{**row, "fd": None}}]
    fraction = {"estimate": 0.42, "ci_low": 0.31, "ci_high": 0.54, "n": 80, "method": "wilson"}
    return {
        "concept": {"name": "cat", "classifier": {"name": "efficientnet-lite0"}, "unique": fraction,
                    "copy_weighted": {**fraction, "estimate": 0.6},
                    "failures": {"images": 1, "by_type": {"decode_error": 1}}},
        "distances": metrics.distances_section(rows, [("reference", "sample")], ("phash", "thumbnail"),
                                               subset_cap=2000, seed=0, kid_subsets=5,
                                               failures={"reference": {"not_an_image": 4}}),
        "copying": copying.copying_section(hist, None, threshold=10),
        "inputs": {"memory": "/data/" + HOSTILE, "sample": None, "sample_memory": None,
                   "references": ["/data/test-{0..3}.tar"], "calibration": None,
                   "started_at": "2026-01-01T00:00:00Z",
                   "settings": {"classifier": ClassifierSpec("caption", "caption").row(), "sample_size": None,
                                "seed": 0, "embedding": True},
                   "digests": {"memory": "ab" * 32, "sample": None, "references": "cd" * 32,
                               "calibration": None, "model": None},
                   "finished_at": "2026-01-01T00:01:00Z",
                   "memory_counts": {"rejects_by_reason": {"not_an_image": 2, "too_many_pixels": 1}}},
        "versions": {"memgen": "0.1.0", "apache_beam": "2.77.0"},
    }


def _figures() -> Figures:
    photos = _photos()
    thumbs = [make_thumb(p, f"photo {i}") for i, p in enumerate(photos)]
    return Figures(reference=thumbs[:3], sample=thumbs[3:],
                   contact_sheet=thumbs + [make_thumb(photos[0], HOSTILE)],
                   clusters=[Cluster(4, thumbs[:4]), Cluster(13, thumbs[4:])])


def test_html_inlines_every_image_and_names_no_url():
    page = report_html.render(_report(), _figures())
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3 + 3 + 7 + 6
    for src in sources:
        assert src.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            assert img.format == "JPEG" and max(img.size) == 160
    text = re.sub(r"(data:image/jpeg;base64,)[A-Za-z0-9+/=]+", r"\1", page)
    assert not re.search(r"https?:|//[a-z]|\bsrc=\"(?!data:)|\bhref=|@import|url\(", text)


def test_a_long_caption_is_cut_short_in_the_page():
    thumb = make_thumb(_photos()[0], "cat spam " * 100_000)
    page = report_html.render({}, Figures(sample=[thumb], contact_sheet=[thumb]))
    assert len(page) < 100_000  # not 900 kB written six times
    assert ("cat spam " * 100)[:report_html.CAPTION_CHARS - 1] + "…</figcaption>" in page


def test_empty_figures_say_whether_their_set_was_given():
    page = report_html.render({"inputs": {"memory": "m", "sample": None, "references": []}}, Figures())
    assert page.count("No --reference given.") == 1 and page.count("No --sample given.") == 2  # figures 2, 3
    page = report_html.render({"inputs": {"memory": "m", "sample": "s", "references": ["r.tar"]}}, Figures())
    assert "given." not in page and page.count("No images.") == 3


def test_html_escapes_data_and_shows_every_section():
    page = report_html.render(_report(), _figures())
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "/data/test-{0..3}.tar</td>" in page
    for text in ("cat fraction", "42.0%", "[31.0%, 54.0%]", "Figure 1: distances",
                 "Figure 2: reference vs sample", "Figure 3: sample contact sheet",
                 "Largest duplicate clusters", "copy rate: sample vs memory: 95.3%", "Rejects by reason",
                 "not_an_image", "decode_error", "<svg"):
        assert text in page, text
    # Header + rows: inputs (memory, references, started_at, finished_at), concept (2), distances (2),
    # rejects (2 memorize, 1 classifier, 1 reference features).
    assert page.count("<tr>") == (1 + 4) + (1 + 2) + (1 + 2) + (1 + 4)
    assert "evaluate: reference features</td><td class=l>not_an_image</td><td>4</td>" in page
    assert "—" in page and "— : a set too small for the metric" in page  # the missing FD, and why
    full = {**_report()["distances"], "rows": _report()["distances"]["rows"][1:]}  # thumbnail: all there
    assert "too small" not in report_html.render({"distances": full}, Figures())
    # a cluster is as large as its copies, not as the images shown of it (8 at most)
    assert "4 images (representative first)" in page and "13 images, 2 shown (representative first)" in page


def test_the_sections_rendered_are_valid_report_sections():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates report.json")
    schema = json.loads(resources.files("memgen.schemas").joinpath("report.schema.json").read_text())
    report = _report()
    for section in ("distances", "copying", "inputs", "versions"):
        jsonschema.validate(report[section], {"$ref": f"#/$defs/{section}", "$defs": schema["$defs"]})
    json.dumps(report, allow_nan=False)  # as evaluate writes it


def test_the_report_schema_types_the_inputs_section():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates report.json")
    schema = json.loads(resources.files("memgen.schemas").joinpath("report.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/inputs", "$defs": schema["$defs"]})
    inputs = _report()["inputs"]
    inputs["memory_counts"] = {"records_in": 10, "images": 7, "duplicates": 2, "duplicates_exact": 1,
                               "duplicates_near": 1, "rejects": 1, "rejects_by_reason": {"empty": 1},
                               "image_bytes": 1234}
    validator.validate(inputs)
    # what a reader of report.json relies on: a count is a number, the classifier is described as
    # concept.classifier is, and a misspelt key is not silently another field
    broken = [("memory_counts", "images", "7"), ("memory_counts", "rejects_by_reason", {"empty": "1"}),
              ("settings", "classifier", {"name": "caption"}), ("settings", "embedding_model", True)]
    for section, key, value in broken:
        assert not validator.is_valid({**inputs, section: {**inputs[section], key: value}}), (section, key)
    assert not validator.is_valid({**inputs, "sample_memroy": None})


def test_html_with_nothing_but_a_concept():
    page = report_html.render({"concept": _report()["concept"]}, Figures())
    assert "No pair of image sets to compare." in page and "No --sample given." in page


def _calibrated(calibration: Calibration, design: Design) -> dict:
    """A concept section as evaluate writes it: 3 of 10 sampled images labelled cats, 9 of 25 copies."""
    return concept_section(ClassifierSpec("caption", "caption"), Tally(10, 3, 25, 9, 80, 30), FailureTally(),
                           design, (calibration, 1), "/labels/" + HOSTILE + ".csv")


def _schema_valid_concept(concept: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates report.json")
    schema = json.loads(resources.files("memgen.schemas").joinpath("report.schema.json").read_text())
    jsonschema.validate(concept, {"$ref": "#/$defs/concept", "$defs": schema["$defs"]})


def test_html_says_how_many_images_no_fraction_counts():
    """A census where the caption classifier could not label half the images (no caption): the
    page said "all 6 unique images classified" beside a zero-width interval over the other 3."""
    failures = FailureTally().add(Scored("a" * 64, 2, None, None, "no_caption", "no caption", "s.tar/1"))
    for _ in range(2):
        failures = failures.add(Scored("b" * 64, 1, None, None, "no_caption", "no caption", "s.tar/2"))
    concept = concept_section(ClassifierSpec("caption", "caption"), Tally(3, 2, 3, 2, 3, 2), failures,
                              Design("census", 6, 7, None, 0), None, None)
    _schema_valid_concept(concept)
    page = report_html.render({"concept": concept}, Figures())
    assert ("Census: all 6 unique images (7 input records) given to the classifier. <b>3 of them could not"
            " be labelled</b> (4 input records; reasons under Rejects by reason): the fractions and their"
            " intervals are over the images it labelled") in page
    assert "<td class=l>evaluate: classifier</td><td class=l>no_caption</td><td>3</td>" in page


def test_html_says_a_calibration_was_not_applied_and_why():
    concept = _calibrated(Calibration(5, 0, 0, 0), Design("census", 10, 25, None, 0))  # positives only
    _schema_valid_concept(concept)
    page = report_html.render({"concept": concept}, Figures())
    assert ("<b>Calibration not applied:</b> the calibration set needs both positive and negative images,"
            " got 5 positive and 0 negative. The fractions below are the classifier's apparent (uncorrected)"
            " ones.") in page
    assert page.index("Calibration not applied") < page.index("30.0%")  # read before the fractions
    assert "Census: all 10 unique images (25 input records) given to the classifier." in page
    assert "of them could not be labelled" not in page  # the census: every image labelled
    assert "Calibration measured, not applied" in page and "Calibration applied" not in page
    assert "<td class=l>sensitivity</td><td>100.0%</td><td>[56.6%, 100.0%]</td><td>5</td>" in page
    assert "<td class=l>specificity</td><td>—</td><td>[0.0%, 100.0%]</td><td>0</td>" in page
    assert "&lt;script&gt;" in page and "<script" not in page  # the file name is escaped


def test_html_shows_an_applied_calibration_beside_the_apparent_fractions_and_the_sample_design():
    concept = _calibrated(Calibration(8, 2, 9, 1), Design("sample", 26, 60, 10, 4))  # Se 0.8, Sp 0.9
    _schema_valid_concept(concept)
    page = report_html.render({"concept": concept}, Figures())
    assert ("Sample: 10 of 26 unique images sampled uniformly (seed 4); the intervals are for all 26 images"
            " (60 input records).") in page
    assert "Calibration applied: fractions Rogan-Gladen corrected" in page and "not applied" not in page
    assert "<th>corrected</th><th>95% CI</th><th>apparent (uncorrected)</th><th>95% CI</th>" in page
    # unique: corrected (0.3 + 0.9 - 1) / (0.8 + 0.9 - 1) = 28.6% beside the apparent 3 of 10 = 30.0%;
    # the corrected interval is Monte Carlo, so read from the section
    high = f"{100 * concept['unique']['ci_high']:.1f}%"
    assert (f"<span class=big>28.6%</span></td><td>[0.0%, {high}]</td>"
            "<td>30.0%</td><td>[11.5%, 57.7%]</td>") in page
    assert "Rogan-Gladen corrected (exact hypergeometric (finite population))" in page
    assert "<td class=l>sensitivity</td><td>80.0%</td><td>[49.0%, 94.3%]</td><td>10</td>" in page
    assert "<td class=l>specificity</td><td>90.0%</td><td>[59.6%, 98.2%]</td><td>10</td>" in page
    assert ("On 10 positive + 10 negative labelled images from /labels/&lt;script&gt;") in page
    assert ("(1 could not be labelled): true positives 8, false negatives 2, true negatives 9,"
            " false positives 1.") in page
    assert "taken whole" not in page


def test_html_says_which_images_a_sample_took_whole():
    concept = _calibrated(Calibration(8, 2, 9, 1), Design("sample", 26, 600, 10, 4, 2, 540))
    _schema_valid_concept(concept)
    page = report_html.render({"concept": concept}, Figures())
    assert ("(600 input records). Of them the 2 most copied images (540 input records) were taken whole,"
            " the rest drawn uniformly from the other images") in page
    assert "the 2 most copied images taken whole" in concept["unique"]["method"]


def test_html_says_an_uncalibrated_fraction_is_the_apparent_one():
    page = report_html.render({"concept": _report()["concept"]}, Figures())
    assert "Not calibrated: the fractions are the classifier's apparent ones" in page


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Appended by the test only: records every image's load state and any error or CSP violation.
_PROBE = """<script>
const problems = [];
addEventListener('error',
  e => problems.push('error: ' + (e.message || (e.target && e.target.outerHTML))), true);
addEventListener('securitypolicyviolation',
  e => problems.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI));
addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({images: images.length, broken, problems,
                                    width: document.body.scrollWidth, height: document.body.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--proxy-server=127.0.0.1:9", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_loads_in_headless_chromium(tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium not installed (Debian: apt-get update && apt-get install -y chromium)")
    page = report_html.render(_report(), _figures())
    # The report's CSP forbids all scripts; the probe alone is allowed in (a nonce would also do).
    probed = page.replace(report_html.CSP, report_html.CSP + "; script-src 'unsafe-inline'")
    probed = probed.replace("</body>", _PROBE + "</body>")
    target = tmp_path / "report.html"
    target.write_text(probed, encoding="utf-8")
    result = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", target.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout)
    assert match, result.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe == {**probe, "images": 19, "broken": 0, "problems": []}
    assert probe["height"] > 1000

    (tmp_path / "plain.html").write_text(page, encoding="utf-8")
    shot = tmp_path / "report.png"
    _chromium(f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}", "--window-size=1280,3600",
              "--hide-scrollbars", (tmp_path / "plain.html").as_uri())
    with Image.open(shot) as img:
        assert img.size == (1280, 3600)
        assert len(img.convert("RGB").getcolors(1 << 24)) > 1000  # photos rendered, not a blank page


def test_a_thumbnail_names_its_shard_and_its_whole_key():
    """A key holding "/" lost its shard and most of itself (`0001.tar#x/cat` was `cat`)."""
    from memgen.report_figures import short_source

    assert short_source("s3://b/crawl/0001.tar#x/cat") == "0001.tar#x/cat"
    assert short_source("/data/p/0002.parquet#row/7") == "0002.parquet#row/7"
    assert short_source("/photos/a#b.jpg") == "a#b.jpg"  # a folder image: its name, "#" and all


def test_a_uniform_samples_copy_rate_shows_its_interval_and_a_references_does_not():
    hist = copying.distance_histogram(np.array([0, 2, 5] + [30] * 17), 16)
    page = report_html.render({"copying": copying.copying_section(hist, hist, 10, sample_population=100)},
                              Figures())
    assert "among the 100 unique images the sample was drawn from, the share of copies is in [5.0%, 35.0%]" \
        in page and page.count("(95% CI)") == 1
