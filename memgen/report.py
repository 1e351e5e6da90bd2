"""report.json: written atomically once every section is done, read back, summarized.

Pure I/O through fsspec (no Beam); the sections come from the evaluate stages.
"""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any

import fsspec

from memgen.manifest import now
from memgen.memory import MemoryDirError, join, read_json_object
from memgen.outputs import Claim, claim_output, temporaries, write_atomic

REPORT = "report.json"
REPORT_HTML = "report.html"  # written after report.json, by the pipeline's last step


def check_report_output(out: str) -> None:
    """Refuse an --out that already holds a finished report."""
    fs, path = fsspec.core.url_to_fs(join(out, REPORT))
    if fs.exists(path):
        raise MemoryDirError(f"{out} already holds a finished report ({REPORT}); "
                             "choose another --out or delete it")


def page_missing(out: str, inputs: dict[str, Any]) -> bool:
    """Whether `out` holds report.json of these inputs but no report.html: a run killed
    between the two, which a rerun finishes by writing the page only."""
    written = _report_inputs(out, page=False)
    return written is not None and all(written.get(key) == value for key, value in inputs.items())


def finished_inputs(out: str) -> dict[str, Any] | None:
    """The inputs of the finished report in `out` (report.json and report.html), or None."""
    return _report_inputs(out, page=True)


def _report_inputs(out: str, page: bool) -> dict[str, Any] | None:
    """The inputs report.json in `out` records, when there is one and report.html is there
    as `page` says; else None."""
    fs, path = fsspec.core.url_to_fs(out)
    if not fs.exists(posixpath.join(path, REPORT)) or fs.exists(posixpath.join(path, REPORT_HTML)) != page:
        return None
    return read_report(out).get("inputs") or {}


def report_claim(out: str) -> Claim:
    """A new evaluate run's claim on `out` (memgen.outputs)."""
    return Claim(out, "evaluate", "--out", REPORT)


def prepare_report_output(claim: Claim, check_only: bool = False) -> None:
    """Claim --out for a real run (memgen.outputs; `check_only`: refuse only, for a dry run)."""
    check_report_output(claim.url)
    claim_output(claim, (temporaries(REPORT), temporaries(REPORT_HTML)), check_only)


def write_report(out: str, report: dict[str, Any]) -> dict[str, Any]:
    """report.json under a temporary name, then renamed: a reader never sees half of it;
    returns what it holds, as read back (keys sorted: the page drawn from it is the one a
    rerun draws after a run killed before the page, byte for byte)."""
    report = {**report, "inputs": {**report["inputs"], "finished_at": now()}}
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    write_atomic(join(out, REPORT), lambda f: f.write(text))
    return json.loads(text)


def read_report(out: str) -> dict[str, Any]:
    with fsspec.open(join(out, REPORT), "rb") as f:
        return read_json_object(f.read(), f"{out} is damaged: its {REPORT}")


def _percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


# (set, its flag, its copying section): set names as memgen.stages.image_sets names them
COMPARED_SETS = (("sample", "--sample", "copy"), ("reference", "--reference", "contamination"))


def sets_not_compared(report: dict[str, Any]) -> list[str]:
    """A line for each set given that gave no image to compare (every reference shard
    unreadable, say: its distances and rate are then empty, which a summary would not show),
    or gave images but also records it could not compare (a tar member that is no image: the
    terminal's "1 of 2" rate said nothing of the records left out, only report.html did)."""
    lines = []
    failures = report["distances"]["failures"]
    for name, flag, section in COMPARED_SETS:
        found = report["copying"].get(section)
        failed = failures.get(name, {})
        why = ", ".join(f"{kind} {n}" for kind, n in sorted(failed.items()))
        if found is not None and found["n"] == 0:
            lines.append(f"{flag} gave no image to compare ({why or 'it holds none'}): its distances and "
                         f"{section} rate are empty")
        elif found is not None and failed:
            lines.append(f"{flag}: {sum(failed.values())} of its records could not be compared ({why}; "
                         "report.json's distances.failures)")
    return lines


def copying_summary(copying: dict[str, Any]) -> list[str]:
    """A line for each rate measured: the terminal said nothing of copies or leakage."""
    lines = []
    for key, label in (("copy", "copy rate (sample vs memory)"),
                       ("contamination", "contamination (reference vs memory)")):
        stats = copying.get(key)
        if stats:
            interval = (f"; 95% CI [{_percent(stats['ci_low'])}, {_percent(stats['ci_high'])}] of the "
                        f"{stats['population']} unique images drawn from" if stats.get("population") else "")
            turned = " in any orientation" if copying.get("orientations") == "any" else ""
            lines.append(f"{label}: {_percent(stats['rate'])} ({stats['n_within']} of {stats['n']} within "
                         f"{stats['threshold']} bits of a memory image{turned}{interval})")
    return lines


def concept_summary(concept: dict[str, Any]) -> str:
    """A few readable lines about the concept section."""
    design = concept["design"]
    how = ("all images" if design["kind"] == "census"
           else f"a uniform sample of {design['sample_size']} of {design['population_images']} images")
    if design.get("certain_images"):
        how += f" (the {design['certain_images']} most copied taken whole)"
    lines = [f"{concept['name']} fraction by {concept['classifier']['name']} over {how}:"]
    for key, label in (("unique", "unique images"), ("copy_weighted", "input records (by copies)")):
        f = concept[key]
        lines.append(f"  {label:<26} {_percent(f['estimate']):>7}  95% CI [{_percent(f['ci_low'])}, "
                     f"{_percent(f['ci_high'])}]  n={f['n']}  ({f['method']})")
    cal = concept["calibration"]
    if cal:
        se, sp = cal["sensitivity"], cal["specificity"]
        lines.append(f"  calibration: sensitivity {_percent(se['estimate'])} "
                     f"[{_percent(se['ci_low'])}, {_percent(se['ci_high'])}], specificity "
                     f"{_percent(sp['estimate'])} [{_percent(sp['ci_low'])}, {_percent(sp['ci_high'])}]"
                     f" on {cal['positives']}+{cal['negatives']} labelled images"
                     + (f" ({cal['failed']} more could not be labelled)" if cal["failed"] else ""))
        if cal["error"]:
            lines.append(f"  calibration not applied: {cal['error']}")
    if concept.get("uncorrected") is None:  # the intervals cover the classifier's labels, not the truth
        lines.append("  (the classifier's labels, uncorrected: the intervals leave out its errors; "
                     "--calibration labels.csv corrects for them)")
    failures = concept["failures"]
    if failures["images"]:
        kinds = ", ".join(f"{k} {v}" for k, v in failures["by_type"].items())
        lines.append(f"  {failures['images']} images could not be labelled ({kinds}); not counted")
    return "\n".join(lines)
