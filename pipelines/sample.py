"""sample: a finished memory -> a reproducible sample of its images. Options + wiring only."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from memgen.manifest import now, versions
from memgen.memory import (
    absolute,
    check_memory,
    finished_manifest,
    image_parts,
    manifest_digest,
    memorized_fingerprint,
)
from memgen.outputs import Claim
from memgen.pipelines.errors import UsageError
from memgen.pipelines.options import add_shared, boolean
from memgen.sample_output import FORMATS
from memgen.sampling import MAX_SEED, uniform_inclusion_probability
from memgen.stages.sample import ChooseSample, WriteSample

log = logging.getLogger("memgen.sample")

INCLUSION_DOC = {
    "uniform": "simple random sample without replacement: pi = min(1, n/N) for every image",
    "weighted": "A-Res (Efraimidis-Spirakis) with weight = copies: successive sampling "
                "proportional to weight; pi is not n*w/W (see memgen.sampling."
                "ares_inclusion_probabilities)",
}


class SampleOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_shared(parser, "--memory")
        parser.add_argument("--n", type=int, help="number of images to sample")
        add_shared(parser, "--seed")
        parser.add_argument("--weighted", type=boolean, nargs="?", const=True, default=False,
                            help="weight images by copies (the crawl's distribution, duplicates included) "
                                 "instead of uniformly over unique images (also --weighted=true|false)")
        add_shared(parser, "--out")
        parser.add_argument("--format", choices=FORMATS, default="webdataset",
                            help="webdataset tar shards (default), parquet, a folder of files, or mds "
                                 "(MosaicML Streaming shards with their index.json)")


@dataclass(frozen=True)
class SampleConfig:
    memory: str
    out: str
    n: int
    seed: int
    mode: str  # uniform | weighted
    fmt: str

    @classmethod
    def from_options(cls, options: PipelineOptions) -> SampleConfig:
        o = options.view_as(SampleOptions)
        for name in ("memory", "out", "n"):
            if getattr(o, name) is None:
                raise UsageError(f"--{name} is required")
        if o.n <= 0:
            raise UsageError(f"--n must be positive, got {o.n}")
        if not 0 <= o.seed <= MAX_SEED:
            raise UsageError(f"--seed must be between 0 and {MAX_SEED}, got {o.seed}")
        return cls(o.memory, o.out, o.n, o.seed, "weighted" if o.weighted else "uniform", o.format)

    def recorded(self) -> dict[str, Any]:
        """What a sample's manifest records of the command that drew it: a finished sample
        that records the same is this command's."""
        return {"job": "sample", "memory_manifest_sha256": manifest_digest(self.memory), "format": self.fmt,
                "mode": self.mode, "seed": self.seed, "n_requested": self.n}

    def urls(self) -> list[tuple[str, str]]:
        """(flag, URL) of every location the job reads or writes."""
        return [("--memory", self.memory), ("--out", self.out)]


def build(pipeline: beam.Pipeline, config: SampleConfig, claim: Claim) -> None:
    """Wire the sample stages onto `pipeline` (checks the memory; writes nothing); `claim`:
    the run's claim on config.out (sample_output.sample_claim)."""
    memorized = finished_manifest(config.memory)
    check_memory(config.memory)  # all its tables, as evaluate: a damaged memory is refused whole
    population = memorized["counts"]["images"]  # the parts hold as many rows (checked)
    # the contact sheet's thumbnails decode what the memory took in: up to its --max_pixels
    max_pixels = memorized_fingerprint(config.memory).max_pixels  # it reads no shard: no reader option
    if not population:  # every record a duplicate or a reject: its summary said why
        log.warning("%s holds no image: the sample is empty", config.memory)
    elif config.n > population:
        log.warning("--n %d is more than the memory's %d image%s: the sample is all of %s", config.n,
                    population, "s" if population > 1 else "", "them" if population > 1 else "it")
    manifest_base = {
        **config.recorded(),  # memory_manifest_sha256 finds the memory if it moves
        "memory": absolute(config.memory),
        "out": config.out,
        "population": population,
        "inclusion": INCLUSION_DOC[config.mode],
        "inclusion_probability": (uniform_inclusion_probability(config.n, population)
                                  if config.mode == "uniform" else None),
        "versions": versions(),
        "started_at": now(),
    }
    _ = (
        pipeline
        | "Parts" >> beam.Create(image_parts(config.memory))
        | "ChooseSample" >> ChooseSample(config.seed, config.mode, config.n)
        | "WriteSample" >> WriteSample(claim, config.fmt, manifest_base, max_pixels)
    )

