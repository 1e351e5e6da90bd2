"""Per-image classifier results -> the `concept` section of report.json.

The Beam shell sums Scored rows into a Tally (memgen.prevalence) and a FailureTally,
both mergeable; the section is computed here from those sums (pure), and a --calibration
labels file is read and checked here.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import fsspec

from memgen.classify import ClassifierSpec
from memgen.prevalence import (
    Calibration,
    CalibrationError,
    Certain,
    Estimate,
    Tally,
    copy_weighted_fraction,
    corrected_copy_weighted,
    corrected_unique,
    unique_fraction,
)
from memgen.shards import open_input, url_fs
from memgen.text import decode_text

CONCEPT = "cat"
MAX_FAILURE_EXAMPLES = 10
_POSITIVE = {"1", "true", "yes", "cat", "cats", "positive"}
_NEGATIVE = {"0", "false", "no", "notcat", "not_cat", "not cat", "notcats", "negative"}


class Scored(NamedTuple):
    """One image's classifier result; p_cat and label are None when it could not be scored."""

    image_id: str
    copies: int
    p_cat: float | None
    label: bool | None
    error_type: str | None = None
    message: str | None = None
    source: str | None = None


def from_probability(image_id: str, copies: int, source: str, p: float, threshold: float) -> Scored:
    """An image's row from its model's P(concept). A NaN or infinite one (a broken or overflowing
    model) labels nothing: a failure, not a non-cat (`p >= threshold` is False for NaN)."""
    if not math.isfinite(p):
        return Scored(image_id, copies, None, None, "bad_score",
                      f"the model's P(concept) is {p}, not a probability", source)
    return Scored(image_id, copies, p, p >= threshold)


class FailureTally(NamedTuple):
    """Images that could not be scored: counts by error type and a few examples (mergeable)."""

    images: int = 0
    copies: int = 0
    by_type: tuple[tuple[str, int], ...] = ()
    examples: tuple[tuple[str, str, str, str], ...] = ()  # image_id, source, error_type, message

    def add(self, s: Scored) -> FailureTally:
        example = (s.image_id, s.source or "", s.error_type or "", s.message or "")
        return self.merge(FailureTally(1, s.copies, ((s.error_type or "unknown", 1),), (example,)))

    def merge(self, other: FailureTally) -> FailureTally:
        by_type = Counter(dict(self.by_type))
        by_type.update(dict(other.by_type))
        # the smallest image ids: the same examples whatever order the workers merged in
        examples = tuple(sorted(self.examples + other.examples)[:MAX_FAILURE_EXAMPLES])
        return FailureTally(self.images + other.images, self.copies + other.copies,
                            tuple(sorted(by_type.items())), examples)

    def row(self) -> dict:
        return {"images": self.images, "copies": self.copies, "by_type": dict(self.by_type),
                "examples": [dict(zip(("image_id", "source", "error_type", "message"), e, strict=True))
                             for e in self.examples]}


class Design(NamedTuple):
    """How the scored images were chosen from the memory."""

    kind: str  # census | sample
    population_images: int  # unique images in the memory
    population_copies: int  # input records they stand for
    sample_size: int | None  # requested --sample-size (None: none; census when >= the population)
    seed: int
    certain_images: int = 0  # of a sample, the most copied images taken whole (prevalence.take_all)
    certain_copies: int = 0  # the input records they stand for
    copies_each: int | None = None  # of a sample: the records every image stands for, when one number

    def row(self) -> dict:
        return self._asdict()


class LabelledFile(NamedTuple):
    url: str
    positive: bool
    caption: str | None


def read_calibration_labels(path: str) -> list[LabelledFile]:
    """labels.csv (file,label[,caption]) -> labelled files; paths relative to the CSV's folder.
    Each file once: a file listed twice would count twice, or against itself. Both classes:
    sensitivity and specificity need both. As spreadsheets save it: any encoding (a BOM, or
    Windows-1252), lines ended by CR alone (Excel for Mac's "CSV (Macintosh)"), the header in
    any case, cells padded with spaces, separated by commas or, as spreadsheets in locales with
    a decimal comma save CSV, by semicolons (or tabs)."""
    with open_input(path) as f:  # a local crawl::2024/labels.csv as named
        text = decode_text(f.read())
    header = next(iter(text.splitlines()), "")
    # newline="": a line ends at \r, \n or \r\n; a quoted caption keeps its line breaks
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_delimiter(header))
    try:
        rows = list(reader)
    except csv.Error as e:  # not a CSV (a tar named by mistake): refused as the rest is
        raise ValueError(f"{path}: not a CSV file ({e})") from None
    columns = {name.strip().lower(): name for name in reader.fieldnames or () if name}
    named = [name.strip().lower() for name in reader.fieldnames or () if name]
    twice = [name for name in ("file", "label", "caption") if named.count(name) > 1]
    if twice:  # `label` and `Label`: one would be taken silently, the other's labels lost
        raise ValueError(f"{path}: its header names the column {twice[0]} {named.count(twice[0])} times"
                         " (in any case)")
    if not {"file", "label"} <= set(columns):
        raise ValueError(f"{path}: needs a header with columns file,label")
    if not rows:
        raise ValueError(f"{path}: lists no labelled files under its header")
    base = posixpath.dirname(path)
    out = []
    lines: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        label = (row[columns["label"]] or "").strip().lower()
        if label not in _POSITIVE | _NEGATIVE:
            raise ValueError(f"{path}:{i}: label {row[columns['label']]!r} is neither positive "
                             f"({', '.join(sorted(_POSITIVE))}) nor negative")
        file = (row[columns["file"]] or "").strip()
        if not file:
            raise ValueError(f"{path}:{i}: no file named")
        url = _resolved(file if "://" in file else posixpath.join(base, file))
        if url in lines:
            raise ValueError(f"{path}:{i}: {file} is listed on line {lines[url]} too")
        lines[url] = i
        caption = row.get(columns["caption"]) if "caption" in columns else None
        out.append(LabelledFile(url, label in _POSITIVE, caption))
    positives = sum(item.positive for item in out)
    if positives in (0, len(out)):
        raise ValueError(f"{path}: lists {positives} positive and {len(out) - positives} negative files; "
                         "sensitivity and specificity need both")
    return out


def _delimiter(header: str) -> str:
    """The header's separator: a comma, else a semicolon or a tab (column names hold none)."""
    return next((d for d in ",;\t" if d in header), ",")


def missing_labelled(labelled: Sequence[LabelledFile]) -> list[str]:
    """The labelled files that do not exist, or are folders (a typo would otherwise count as
    an image the classifier failed on), from one listing per folder: one request for a folder of an object
    store, not one per file. http(s) has no listing: those are taken as given."""
    by_folder: dict[tuple[fsspec.AbstractFileSystem, str], list[tuple[str, str]]] = defaultdict(list)
    for item in labelled:
        if not item.url.startswith(("http://", "https://")):
            fs, path = url_fs(item.url)
            by_folder[fs, posixpath.dirname(path)].append((item.url, path))
    missing = []
    for (fs, folder), files in by_folder.items():
        try:  # files only: a folder named as a labelled file would be scored as a failed image;
            # a local symbolic link is listed as neither: what it points to decides
            present = {entry["name"].rstrip("/") for entry in fs.ls(folder, detail=True)
                       if entry.get("type") == "file" or (entry.get("islink") and fs.isfile(entry["name"]))}
        except FileNotFoundError:
            present = set()
        except PermissionError:  # a bucket that lets files be read but not listed: not asked
            continue
        missing += [url for url, path in files if path.rstrip("/") not in present]
    return missing


def _resolved(url: str) -> str:
    """./x.png is x.png, a/../x.png is x.png, on disk and in buckets alike (an object store
    takes `./` as part of the key: every labelled file was missing)."""
    scheme, sep, path = url.rpartition("://")
    if scheme in ("http", "https"):
        return url  # a query string may hold slashes
    return f"{scheme}{sep}{posixpath.normpath(path)}"


def calibration_from(scored: list[Scored], truth: dict[str, bool]) -> tuple[Calibration, int]:
    """Confusion counts of scored calibration files (image_id = url) and how many failed."""
    tp = fn = tn = fp = failed = 0
    for s in scored:
        if s.label is None:
            failed += 1
        elif truth[s.image_id]:
            tp, fn = tp + s.label, fn + (not s.label)
        else:
            tn, fp = tn + (not s.label), fp + s.label
    return Calibration(tp, fn, tn, fp), failed


def _fraction(e: Estimate, **extra) -> dict:
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in e.row().items()}
    return {**row, **extra}


def concept_section(spec: ClassifierSpec, t: Tally, failures: FailureTally, design: Design,
                    calibration: tuple[Calibration, int] | None, calibration_file: str | None,
                    certain: Tally | None = None) -> dict:
    """The `concept` section of report.json; `t`: the tally of the images drawn (or of all),
    `certain`: of the sample's take-all stratum."""
    population = t.n if design.kind == "census" else design.population_images
    copies = t.copies if design.kind == "census" else design.population_copies
    certain = certain or Tally()
    stratum = Certain(certain, design.certain_images, design.certain_copies)
    unique = unique_fraction(t, population, stratum)
    weighted = copy_weighted_fraction(t, population, copies, stratum, design.copies_each)
    whole = t.merge(certain)
    section = {
        "name": CONCEPT,
        "classifier": spec.row(),
        "design": design.row(),
        "unique": _fraction(unique, positives=whole.positives),
        "copy_weighted": _fraction(weighted, copies=whole.copies, positive_copies=whole.positive_copies),
        "uncorrected": None,
        "calibration": None,
        "failures": failures.row(),
    }
    if calibration is not None:
        cal, failed = calibration
        section["calibration"] = {
            "file": calibration_file, "positives": cal.positives, "negatives": cal.negatives,
            "failed": failed, "sensitivity": _fraction(cal.sensitivity()),
            "specificity": _fraction(cal.specificity()), "confusion": cal._asdict(), "error": None,
        }
        if not t.n:  # nothing to correct (a census, or the uniform draw, labelled no image)
            if certain.n:
                section["calibration"]["error"] = ("no image of the uniform draw could be labelled, only "
                                                   f"{certain.n} of those taken whole")
            return section
        try:
            corrected = (corrected_unique(t, population, cal, design.seed, stratum),
                         corrected_copy_weighted(t, population, cal, design.seed, copies, stratum,
                                                 design.copies_each))
        except CalibrationError as e:  # reported beside the uncorrected fractions, not fatal
            section["calibration"]["error"] = str(e)
            return section
        section["uncorrected"] = {"unique": section["unique"], "copy_weighted": section["copy_weighted"]}
        section["unique"] = _fraction(corrected[0], positives=whole.positives)
        section["copy_weighted"] = _fraction(corrected[1], copies=whole.copies,
                                             positive_copies=whole.positive_copies)
    return section
