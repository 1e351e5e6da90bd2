"""memorize: web image shards -> a deduplicated Parquet memory. Options + wiring only."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from memgen.fingerprint import MODES, ORIENTATIONS, FingerprintConfig
from memgen.known import known_parts
from memgen.manifest import now, versions
from memgen.memory import MemoryDirError, check_memory, manifest_digest, memorized_fingerprint
from memgen.near import DEFAULT_THRESHOLD, MAX_THRESHOLD
from memgen.outputs import Claim
from memgen.pipelines.errors import UsageError
from memgen.pipelines.options import add_shared, refuse_inside
from memgen.readers import ReaderConfig, named_columns
from memgen.records import printable
from memgen.shards import discover, listing_digest
from memgen.stages.dedup import ExactDedup, NearDedup
from memgen.stages.fingerprint import Fingerprint
from memgen.stages.read import ReadKnown, ReadShards
from memgen.stages.write import WriteMemory

MAX_RECORD_BYTES = 1 << 40  # --max_bytes above this overflowed the reads (OverflowError on a worker)


class MemorizeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", action="append", default=[],
                            help="shard URL, glob, brace range or folder (repeatable)")
        add_shared(parser, "--memory")
        parser.add_argument("--known", action="extend", nargs="+", default=[],
                            help="finished memories of earlier runs (several after one --known, or the "
                                 "flag repeated): records that are exact or near copies of their images "
                                 "become duplicates of those, and only new images are kept")
        parser.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD,
                            help=f"near-duplicate pHash Hamming distance, 0..{MAX_THRESHOLD} "
                                 f"(default {DEFAULT_THRESHOLD}; 0 = identical hashes only)")
        parser.add_argument("--hash_mode", choices=MODES, default="fast",
                            help="fast: JPEG draft decode; exact: bit-for-bit imagehash.phash")
        parser.add_argument("--orientations", choices=ORIENTATIONS, default=FingerprintConfig.orientations,
                            help="any: a mirrored copy, or one turned by 90, 180 or 270 degrees, is a near "
                                 "duplicate too (each image's pHash is of its canonical orientation); "
                                 "upright (default): as imagehash, orientation counts")
        parser.add_argument("--max_bytes", type=int, default=ReaderConfig.max_bytes,
                            help="records larger than this are rejected unread (default %(default)s)")
        parser.add_argument("--max_pixels", type=int, default=FingerprintConfig.max_pixels,
                            help="images with more pixels are rejected undecoded (default %(default)s)")
        parser.add_argument("--min_side", type=int, default=FingerprintConfig.min_side,
                            help="images narrower or lower than this many pixels (icons, tracking "
                                 "pixels) become too_small rejects (default 0: none; img2dataset's "
                                 "--min_image_size)")
        parser.add_argument("--reject_data_cap", type=int, default=ReaderConfig.reject_data_cap,
                            help="bytes of a rejected record kept in rejects/ (default %(default)s)")
        parser.add_argument("--image_column", default=None,
                            help="image-bytes column of Parquet, Arrow and MDS shards, feature of TFRecords "
                                 "(default: jpg, image, img, ...)")
        parser.add_argument("--caption_column", default=ReaderConfig.caption_column,
                            help="caption column or feature (default %(default)s; a table without it: "
                                 "text, a TFRecord: txt)")
        parser.add_argument("--url_column", default=ReaderConfig.url_column,
                            help="source-URL column or feature (default %(default)s)")
        parser.add_argument("--key_column", default=ReaderConfig.key_column,
                            help="record-key column or feature (default %(default)s)")
        parser.add_argument("--http_timeout", type=float, default=ReaderConfig.http_timeout,
                            help="seconds an http(s) server may send nothing before its shard "
                                 "becomes a reject (default %(default)s; a slow download is never cut)")


# fingerprint options added after memories were made: recorded only when not their default
_ADDED_LATER = {"min_side": FingerprintConfig.min_side, "orientations": FingerprintConfig.orientations}


@dataclass(frozen=True)
class MemorizeConfig:
    inputs: tuple[str, ...]
    memory: str
    threshold: int
    reader: ReaderConfig
    fingerprint: FingerprintConfig
    known: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: PipelineOptions) -> MemorizeConfig:
        o = options.view_as(MemorizeOptions)
        if not o.input:  # `--known OLD in/*.tar`: argparse gives --known every name after it
            took = " (--known took every name after it: give the INPUTs before --known)" if o.known else ""
            raise UsageError(f"no INPUT given{took}")
        if not o.memory:
            raise UsageError("--memory is required")
        if not 0 <= o.threshold <= MAX_THRESHOLD:
            raise UsageError(f"--threshold must be between 0 and {MAX_THRESHOLD}, got {o.threshold}")
        for name in ("max_bytes", "max_pixels"):
            if getattr(o, name) <= 0:
                raise UsageError(f"--{name} must be positive")
        if o.max_bytes > MAX_RECORD_BYTES:  # a record is read whole into memory
            raise UsageError(f"--max_bytes must be at most {MAX_RECORD_BYTES} (1 TiB), got {o.max_bytes}")
        if not 0 < o.http_timeout < float("inf"):
            raise UsageError(f"--http_timeout must be a positive number of seconds, got {o.http_timeout}")
        for name in ("reject_data_cap", "min_side"):
            if getattr(o, name) < 0:
                raise UsageError(f"--{name} must be 0 or more, got {getattr(o, name)}")
        reader = ReaderConfig(o.max_bytes, o.reject_data_cap, o.image_column, o.caption_column,
                              o.url_column, o.key_column, o.http_timeout)
        return cls(tuple(o.input), o.memory, o.threshold, reader,
                   FingerprintConfig(o.hash_mode, o.max_pixels, o.min_side, o.orientations), tuple(o.known))

    def recorded(self) -> dict[str, Any]:
        """What a memory's manifest records of the command that made it (as JSON reads it back):
        a finished memory that records the same is this command's."""
        # a memory made before --min_side or --orientations is this command's without them
        fingerprint = {name: value for name, value in asdict(self.fingerprint).items()
                       if name not in _ADDED_LATER or value != _ADDED_LATER[name]}
        options = {"threshold": self.threshold, "reader": asdict(self.reader), "fingerprint": fingerprint}
        if self.known:  # only then: a memory made before --known is this command's without it
            options["known"] = list(self.known)
        inputs = [printable(i) for i in self.inputs]  # a name given that is not UTF-8: \xNN escapes
        return json.loads(json.dumps({"job": "memorize", "inputs": inputs, "options": options}))

    def urls(self) -> list[tuple[str, str]]:
        """(flag, URL) of every location the job reads or writes."""
        return [*(("INPUT", url) for url in self.inputs), *(("--known", url) for url in self.known),
                ("--memory", self.memory)]

    def known_digests(self) -> list[str | None]:
        """The --known memories' manifest digests: a retry over a memory made against them
        has nothing to run only while they are as then."""
        return [manifest_digest(memory) for memory in self.known]


def build(pipeline: beam.Pipeline, config: MemorizeConfig, claim: Claim) -> None:
    """Wire the memorize stages onto `pipeline` (discovers the shards; writes nothing);
    `claim`: the run's claim on config.memory (memory.memory_claim)."""
    refuse_inside("--memory", config.memory, "input", config.inputs)  # said before the inputs are listed
    known = known_parts_of(config)
    shards = discover(list(config.inputs), config.reader.http_timeout)
    columns = named_columns(shards, config.reader)
    if columns.unnamed_images:
        raise UsageError(columns.unnamed_images)
    if any(flag.startswith("--image_column") for flag in columns.missing):  # every record a reject
        raise UsageError(f"{', '.join(columns.missing)}: no such column in {columns.shard}")
    if columns.image_holds:
        raise UsageError(f"--image_column {config.reader.image_column} holds {columns.image_holds}")
    if columns.missing:  # optional text: another shard may have it
        logging.getLogger("memgen").warning("%s: no such column in the first Parquet, Arrow or MDS shard, %s",
                                            ", ".join(columns.missing), columns.shard)
    manifest_base = {
        **config.recorded(),
        "shards": len(shards),
        "listing_digest": listing_digest(shards),  # a retry over the same listing has nothing to run
        **({"known_digests": config.known_digests()} if config.known else {}),
        "versions": versions(),
        "started_at": now(),
    }
    read = pipeline | "Shards" >> beam.Create(shards) | "ReadShards" >> ReadShards(config.reader, len(shards))
    fingerprinted = read.records | "Fingerprint" >> Fingerprint(config.fingerprint)
    seen = fingerprinted.fingerprints
    if known:
        seen = (seen, pipeline | "ReadKnown" >> ReadKnown(known)) | "WithKnown" >> beam.Flatten()
    groups = seen | "ExactDedup" >> ExactDedup()
    near = groups | "NearDedup" >> NearDedup(config.threshold)
    rejects = (read.rejects, fingerprinted.rejects) | "AllRejects" >> beam.Flatten()
    _ = {
        "assigned": near["assigned"], "fingerprints": fingerprinted.fingerprints, "rejects": rejects,
        "read_counts": read.counts,
        "near_dedup": near["report"],  # search plan and connected-components convergence
    } | "WriteMemory" >> WriteMemory(claim, shards, config.reader, manifest_base)


def known_parts_of(config: MemorizeConfig) -> list[tuple[int, str]]:
    """The --known memories' image parts (memgen.known); UsageError for one that is not a
    finished memory, is --memory itself, or hashed otherwise (fast and exact pHashes of an
    image differ by up to 2 bits: a copy would be found or missed by chance; one of another
    --orientations is of another orientation)."""
    for memory in config.known:
        if memory.rstrip("/") == config.memory.rstrip("/"):
            raise UsageError(f"--known {memory} is --memory itself")
        try:
            check_memory(memory)
            fingerprint = memorized_fingerprint(memory)
        except MemoryDirError as e:
            raise UsageError(f"--known {e}") from None
        for flag, name in (("--hash_mode", "mode"), ("--orientations", "orientations")):
            theirs, ours = getattr(fingerprint, name), getattr(config.fingerprint, name)
            if theirs != ours:
                raise UsageError(f"--known {memory} was memorized with {flag} {theirs}, this run uses "
                                 f"{ours}: give the same {flag}")
    return known_parts(list(config.known))
