"""report.json + thumbnails -> one self-contained report.html (opens offline; no external URLs).

In: the report dict (schemas/report.schema.json: concept, distances, copying, inputs,
versions) and `Figures` (small JPEG thumbnails made by `make_thumb`). Out: an HTML
string. Images are inlined as base64 data: URIs, charts are inline SVG, the style is
inline, and a Content-Security-Policy forbids loading anything else, so the file is
the whole report. Every string from the data (captions, paths, names) is escaped.
Sections: concept fraction with its CI, the sampling design and the calibration
(applied, or why not); the distance table (Figure 1); reference and sample thumbnails
side by side (Figure 2); the sample contact sheet (Figure 3); the largest duplicate
clusters as galleries; histograms of nearest-memory distances; rejects by reason.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memgen.contact_sheet import jpeg_thumbnail
from memgen.decode import DEFAULT_MAX_PIXELS

THUMB_SIDE = 160
THUMB_QUALITY = 80
# a thumbnail's caption shows in one line under it, and its tooltip: a crawl's caption can be
# megabytes of spam, written three times per thumbnail it would make the page as large
CAPTION_CHARS = 300
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:6px}.grid figure{margin:0;width:160px;font-size:.7em;overflow:hidden}
.grid img{width:160px;height:160px;object-fit:cover;display:block;background:#eee}
.side{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}.big{font-size:2em;font-weight:600}
.cluster{margin:.8em 0;padding:.4em;border:1px solid #eee}.muted{color:#777}
.warn{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .8em}
figcaption{white-space:nowrap;text-overflow:ellipsis;overflow:hidden}
"""


@dataclass(frozen=True)
class Thumb:
    jpeg: bytes  # a small JPEG, as make_thumb writes it
    caption: str


@dataclass(frozen=True)
class Cluster:
    images: int  # the representative's copies: what the cluster holds, shown or not
    thumbs: Sequence[Thumb]  # representative first
    unread: int = 0  # duplicates to show whose input shards could not be re-read (deleted since)


@dataclass(frozen=True)
class Figures:
    reference: Sequence[Thumb] = ()
    sample: Sequence[Thumb] = ()
    contact_sheet: Sequence[Thumb] = ()
    clusters: Sequence[Cluster] = field(default_factory=tuple)


def make_thumb(data: bytes, caption: str, side: int = THUMB_SIDE,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Thumb:
    """A report thumbnail (contact_sheet.jpeg_thumbnail); raises ImageError on undecodable
    bytes or an image over `max_pixels`."""
    return Thumb(jpeg_thumbnail(data, side, max_pixels, THUMB_QUALITY), caption)


def render(report: dict[str, Any], figures: Figures) -> str:
    body = [
        "<h1>memgen evaluation report</h1>",
        _inputs(report.get("inputs", {})),
        _concept(report.get("concept")),
        _distances(report.get("distances") or {}),
        _side_by_side(figures, report.get("inputs", {})),
        _section("Figure 3: sample contact sheet",
                 _grid(figures.contact_sheet, _not_given(report.get("inputs", {}), "sample"))),
        _clusters(figures.clusters),
        _copying(report.get("copying")),
        _rejects(report),
        _versions(report.get("versions", {})),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<title>memgen report</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(title: str, content: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{content}</section>"


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Cells are already escaped; the first `left` columns are left-aligned."""
    def cells(tag: str, row: Sequence[str]) -> str:
        return "".join(f"<{tag}{' class=l' if i < left else ''}>{c}</{tag}>" for i, c in enumerate(row))
    return ("<table><tr>" + cells("th", [_e(h) for h in header]) + "</tr>"
            + "".join("<tr>" + cells("td", row) + "</tr>" for row in rows) + "</table>")


def _inputs(inputs: dict[str, Any]) -> str:
    rows = [[_e(key), _e(", ".join(map(str, value)) if isinstance(value, list) else value)]
            for key, value in inputs.items()
            if isinstance(value, str | int | float) or (isinstance(value, list) and value)]
    return _table(["input", "value"], rows, left=2) if rows else ""


def _concept(concept: dict[str, Any] | None) -> str:
    """The fractions with the facts that qualify them, as concept_summary prints them: how the
    images were chosen, and whether a calibration corrected the fractions (or why it did not)."""
    if not concept:
        return ""
    classifier = concept.get("classifier", {})
    name = classifier.get("name", classifier) if isinstance(classifier, dict) else classifier
    calibration = concept.get("calibration")
    uncorrected = concept.get("uncorrected")
    parts = [f"<p>Classifier: <b>{_e(name)}</b></p>", _design(concept.get("design"), concept.get("failures")),
             _not_applied(calibration, uncorrected), _fractions(concept, uncorrected),
             _calibration(calibration, uncorrected is not None)]
    return _section(f"{concept.get('name', 'concept')} fraction", "".join(parts))


_FRACTIONS = (("unique", "unique images"), ("copy_weighted", "input records (by copies)"))


def _ci(value: dict[str, Any]) -> str:
    return f"[{_percent(value.get('ci_low'))}, {_percent(value.get('ci_high'))}]"


def _fractions(concept: dict[str, Any], uncorrected: dict[str, Any] | None) -> str:
    """One row per fraction; when calibrated, the classifier's apparent values beside the corrected
    ones, so the size of the correction is visible."""
    header = (["fraction", "corrected", "95% CI", "apparent (uncorrected)", "95% CI"] if uncorrected
              else ["fraction", "estimate", "95% CI"]) + ["n", "method"]
    rows = []
    for key, label in _FRACTIONS:
        value = concept.get(key)
        if not isinstance(value, dict):
            continue
        row = [_e(label), f"<span class=big>{_percent(value.get('estimate'))}</span>", _ci(value)]
        if uncorrected and isinstance(uncorrected.get(key), dict):
            row += [_percent(uncorrected[key].get("estimate")), _ci(uncorrected[key])]
        elif uncorrected:
            row += ["—", "—"]
        rows.append(row + [_number(value.get("n")), _e(value.get("method", ""))])
    return _table(header, rows)


def _design(design: dict[str, Any] | None, failures: dict[str, Any] | None) -> str:
    """Census or sample: a sample's intervals are for the whole memory, from n of N images;
    and how many images the classifier could not label, which no fraction counts."""
    if not design:
        return ""
    images, copies = _number(design.get("population_images")), _number(design.get("population_copies"))
    if design.get("kind") == "sample":
        text = (f"Sample: {_number(design.get('sample_size'))} of {images} unique images sampled uniformly"
                f" (seed {_e(design.get('seed'))}); the intervals are for all {images} images"
                f" ({copies} input records).")
        if design.get("certain_images"):
            text += (f" Of them the {_number(design['certain_images'])} most copied images"
                     f" ({_number(design.get('certain_copies'))} input records) were taken whole, the rest"
                     " drawn uniformly from the other images: a few images holding many records would"
                     " otherwise decide the copy-weighted fraction by chance.")
    else:
        asked = design.get("sample_size")
        covers = f" (--sample_size {_number(asked)} covers them all)" if asked else ""
        text = f"Census: all {images} unique images ({copies} input records) given to the classifier{covers}."
    unlabelled = (failures or {}).get("images")
    if unlabelled:
        text += (f" <b>{_number(unlabelled)} of them could not be labelled</b>"
                 f" ({_number(failures.get('copies'))} input records; reasons under Rejects by reason):"
                 " the fractions and their intervals are over the images it labelled, and say nothing"
                 " of those.")
    return f"<p>{text}</p>"


def _not_applied(calibration: dict[str, Any] | None, uncorrected: dict[str, Any] | None) -> str:
    """A calibration that was asked for but corrected nothing, stated above the fractions: the
    inputs table still names its file, and the fractions would pass for corrected ones."""
    if not calibration or uncorrected is not None:
        return ""
    why = calibration.get("error") or "no memory image could be classified"
    return (f"<p class=warn><b>Calibration not applied:</b> {_e(why)}. The fractions below are the"
            " classifier's apparent (uncorrected) ones.</p>")


def _calibration(calibration: dict[str, Any] | None, applied: bool) -> str:
    if not calibration:
        return ("<p class=muted>Not calibrated: the fractions are the classifier's apparent ones"
                " (--calibration labels.csv corrects them for its sensitivity and specificity).</p>")
    rows = [[_e(label), _percent(value.get("estimate")), _ci(value), _number(value.get("n")),
             _e(value.get("method", ""))]
            for label, value in ((key, calibration.get(key)) for key in ("sensitivity", "specificity"))
            if isinstance(value, dict)]
    title = ("Calibration applied: fractions Rogan-Gladen corrected" if applied
             else "Calibration measured, not applied")
    return (f"<h3>{_e(title)}</h3>" + _table(["", "estimate", "95% CI", "n", "method"], rows)
            + _labelled(calibration))


def _labelled(calibration: dict[str, Any]) -> str:
    """What Se and Sp were measured on: the labelled set and its confusion counts."""
    c = calibration.get("confusion") or {}
    failed = calibration.get("failed") or 0
    unread = f" ({_number(failed)} could not be labelled)" if failed else ""
    return (f"<p class=muted>On {_number(calibration.get('positives'))} positive + "
            f"{_number(calibration.get('negatives'))} negative labelled images from "
            f"{_e(calibration.get('file'))}{unread}: true positives {_number(c.get('true_positives'))},"
            f" false negatives {_number(c.get('false_negatives'))}, true negatives"
            f" {_number(c.get('true_negatives'))}, false positives {_number(c.get('false_positives'))}.</p>")


_DISTANCE_COLUMNS = (("fd", "FD"), ("kid_mean", "KID"), ("kid_std", "KID std"), ("precision", "precision"),
                     ("recall", "recall"), ("density", "density"), ("coverage", "coverage"),
                     ("c2st_accuracy", "C2ST acc."), ("c2st_p_value", "C2ST p"))


def _distances(distances: dict[str, Any]) -> str:
    rows = distances.get("rows")
    if not rows:
        return _section("Figure 1: distances", "<p class=muted>No pair of image sets to compare.</p>")
    body = [[_e(r["space"]), _e(f"{r['a']} vs {r['b']}"), _e(f"{r['n_a']:,} / {r['n_b']:,}"),
             *(_number(r.get(key)) for key, _ in _DISTANCE_COLUMNS)] for r in rows]
    pr_k, dc_k, cap = (_e(distances.get(key))
                       for key in ("precision_recall_k", "density_coverage_k", "subset_cap"))
    note = (f"<p class=muted>FD on all images; KID, precision/recall (k={pr_k}), density/coverage (k={dc_k})"
            f" and the 1-NN classifier two-sample test on seeded subsets of at most {cap} images per set."
            " Lower FD/KID and C2ST accuracy near 0.5 mean closer sets (KID is an unbiased estimate: close"
            " sets can give small negative values); C2ST accuracy well below 0.5 means copies.")
    if any(r.get(key) is None for r in rows for key, _ in _DISTANCE_COLUMNS):
        note += (" — : a set too small for the metric (FD and KID need 2 images in each, the two-sample"
                 f" test 4, precision/recall more than {pr_k}, density/coverage more than {dc_k}); KID std"
                 " also when each KID subset holds both sets whole, so that it cannot vary.")
    note += "</p>"
    return _section("Figure 1: distances", _table(
        ["feature space", "sets (real vs other)", "images", *(label for _, label in _DISTANCE_COLUMNS)],
        body, left=2) + note)


def _img(thumb: Thumb) -> str:
    data = base64.b64encode(thumb.jpeg).decode("ascii")
    text = thumb.caption
    caption = _e(text if len(text) <= CAPTION_CHARS else text[:CAPTION_CHARS - 1] + "…")
    return (f"<figure><img src=\"data:image/jpeg;base64,{data}\" alt=\"{caption}\" title=\"{caption}\">"
            f"<figcaption>{caption}</figcaption></figure>")


def _grid(thumbs: Sequence[Thumb], empty: str = "No images.") -> str:
    if not thumbs:
        return f"<p class=muted>{_e(empty)}</p>"
    return "<div class=grid>" + "".join(_img(t) for t in thumbs) + "</div>"


def _not_given(inputs: dict[str, Any], name: str) -> str:
    """What an empty figure of the sample or the references says: not asked for, or none shown."""
    given = inputs.get("references") if name == "reference" else inputs.get(name)
    return "No images." if given else f"No --{name} given."


def _side_by_side(figures: Figures, inputs: dict[str, Any]) -> str:
    return _section("Figure 2: reference vs sample", (
        f"<div class=side><div><h3>reference</h3>{_grid(figures.reference, _not_given(inputs, 'reference'))}"
        f"</div><div><h3>sample</h3>{_grid(figures.sample, _not_given(inputs, 'sample'))}</div></div>"))


def _unread(n: int) -> str:
    """Why duplicates are missing from a gallery: they are read from their input shards, not
    kept in the memory, and those may be gone."""
    if not n:
        return ""
    return (f"; {n} duplicate not shown: its input shard cannot be read now" if n == 1 else
            f"; {n} duplicates not shown: their input shards cannot be read now")


def _clusters(clusters: Sequence[Cluster]) -> str:
    if not clusters:
        return _section("Largest duplicate clusters", "<p class=muted>No duplicate clusters.</p>")
    parts = []
    for c in clusters:
        shown = "" if len(c.thumbs) == c.images else f", {len(c.thumbs)} shown"
        parts.append(f"<div class=cluster><p>{_number(c.images)} images{shown} (representative first"
                     f"{_unread(c.unread)})</p>"
                     f"{_grid(c.thumbs)}</div>")
    return _section("Largest duplicate clusters", "".join(parts))


def _copying(copying: dict[str, Any] | None) -> str:
    if not copying:
        return ""
    parts = []
    hashed = ("pHash of each image in its canonical orientation: mirrored and turned copies count"
              if copying.get("orientations") == "any" else "pHash")
    for key, title in (("copy", "copy rate: sample vs memory"),
                       ("contamination", "contamination rate: reference vs memory")):
        stats = copying.get(key)
        if stats:
            interval = ""
            if stats.get("population"):  # a uniform sample: its share estimates its memory's
                interval = (f"; among the {_number(stats['population'])} unique images the sample was drawn"
                            f" from, the share of copies is in {_ci(stats)} (95% CI)")
            parts.append(
                f"<h3>{_e(title)}: {_percent(stats['rate'])}</h3>"
                f"<p>{_number(stats['n_within'])} of {_number(stats['n'])} images have a memory image within "
                f"Hamming distance {stats['threshold']} ({hashed}; red bars){interval}.</p>"
                + _histogram_svg(stats["histogram"], stats["threshold"]))
    if not parts:
        return ""
    return _section("Copying and contamination: nearest memory image distances", "".join(parts))


def _histogram_svg(counts: Sequence[int], threshold: int, width: int = 640, height: int = 180) -> str:
    """Bars for distance 0..radius and "> radius"; bars within the threshold are highlighted."""
    n_bins, top = len(counts), max(max(counts), 1)
    pad, base = 30, height - 24
    bar = (width - pad) / n_bins
    shapes = [f"<line x1=\"{pad}\" y1=\"{base}\" x2=\"{width}\" y2=\"{base}\" stroke=\"#999\"/>"]
    for i, count in enumerate(counts):
        h = (base - 10) * count / top
        x = pad + i * bar
        colour = "#c0392b" if i <= threshold else "#7f8c8d"
        label = str(i) if i < n_bins - 1 else f">{n_bins - 2}"
        shapes.append(f"<rect x=\"{x + 1:.1f}\" y=\"{base - h:.1f}\" width=\"{bar - 2:.1f}\" "
                      f"height=\"{h:.1f}\" fill=\"{colour}\"><title>distance {label}: {count}</title></rect>")
        shapes.append(f"<text x=\"{x + bar / 2:.1f}\" y=\"{base + 14}\" font-size=\"10\" "
                      f"text-anchor=\"middle\">{label}</text>")
    shapes.append(f"<text x=\"2\" y=\"12\" font-size=\"10\">{top:,}</text>")
    return (f"<svg width=\"{width}\" height=\"{height}\" role=\"img\">"
            + "".join(shapes) + "</svg>")


def _rejects(report: dict[str, Any]) -> str:
    rows = []
    memory_counts = report.get("inputs", {}).get("memory_counts") or {}
    for reason, n in (memory_counts.get("rejects_by_reason") or {}).items():
        rows.append([_e("memorize"), _e(reason), _number(n)])
    failures = (report.get("concept") or {}).get("failures") or {}
    for reason, n in (failures.get("by_type") or {}).items():
        rows.append([_e("evaluate: classifier"), _e(reason), _number(n)])
    for set_name, by_type in ((report.get("distances") or {}).get("failures") or {}).items():
        for reason, n in by_type.items():
            rows.append([_e(f"evaluate: {set_name} features"), _e(reason), _number(n)])
    content = _table(["stage", "reason", "records"], rows, left=2) if rows else "<p class=muted>None.</p>"
    return _section("Rejects by reason", content)


def _versions(versions: dict[str, Any]) -> str:
    if not versions:
        return ""
    return "<p class=muted>" + _e(", ".join(f"{k} {v}" for k, v in sorted(versions.items()))) + "</p>"
