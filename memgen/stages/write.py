"""WriteMemory: dedup results + rejects -> Parquet parts per shard, then manifest.json.

References (small) are grouped by shard; each shard is re-read once, inside one
worker, to write its kept images with their bytes. The manifest is computed from
what the writers report and written last, so a memory is finished only when every
part is in place.
"""

from __future__ import annotations

from collections import Counter

import apache_beam as beam

from memgen.dedup import DuplicateRow, KeptImage, place
from memgen.manifest import build_manifest
from memgen.materialize import materialize_shard
from memgen.memory import TABLES, join, part_name, write_manifest, write_rows
from memgen.outputs import Claim
from memgen.readers import ReaderConfig
from memgen.records import Reject, Shard


class _MaterializeFn(beam.DoFn):
    def __init__(self, memory: str, shards: list[Shard], config: ReaderConfig) -> None:
        self.memory = memory
        self.shards = shards
        self.config = config

    def process(self, element):
        index, joined = element
        kept = [p for p in joined["placed"] if isinstance(p, KeptImage)]
        duplicates = [p for p in joined["placed"] if isinstance(p, DuplicateRow)]
        rejects: list[Reject] = list(joined["rejects"])
        yield materialize_shard(self.memory, self.shards[index], kept, duplicates, rejects,
                                self.config)


def _sum_counters(counters) -> Counter:
    total: Counter = Counter()
    for c in counters:
        total.update(c)
    return total


def _write_manifest(totals: Counter, records_in: int, claim: Claim, base: dict,
                    near_dedup: dict | None = None) -> dict | None:
    if not claim.held():
        return None  # another run took the memory over; the command line says so
    memory = claim.url
    for table in TABLES:  # a glob over a folder without a file fails in DuckDB, Polars and Spark
        if not totals[table]:
            write_rows(join(memory, table, part_name(0)), table, [], keep_empty=True)
            totals[f"parts:{table}"] = 1
    manifest = build_manifest(base, totals, records_in, near_dedup)
    write_manifest(memory, manifest)
    return manifest


class WriteMemory(beam.PTransform):
    """Input: dict with assigned ((ImageGroup, Assignment), NearDedup's output), rejects and
    read_counts PCollections, and optionally near_dedup (NearDedup's one-element report) for
    the manifest."""

    def __init__(self, claim: Claim, shards: list[Shard], config: ReaderConfig,
                 manifest_base: dict) -> None:
        super().__init__()
        self.claim = claim
        self.shards = shards
        self.config = config
        self.manifest_base = manifest_base

    def expand(self, pcolls):
        placed = pcolls["assigned"] | "Place" >> beam.FlatMapTuple(place)
        rejects = pcolls["rejects"] | "KeyRejects" >> beam.Map(lambda r: (r.shard, r))
        totals = (
            {"placed": placed, "rejects": rejects}
            | "GroupByShard" >> beam.CoGroupByKey()
            | "Materialize" >> beam.ParDo(_MaterializeFn(self.claim.url, self.shards, self.config))
            | "SumCounts" >> beam.CombineGlobally(_sum_counters)
        )
        records_in = pcolls["read_counts"] | "RecordsIn" >> beam.CombineGlobally(sum)
        near = ({"near_dedup": beam.pvalue.AsSingleton(pcolls["near_dedup"])}
                if "near_dedup" in pcolls else {})
        return totals | "WriteManifest" >> beam.Map(
            _write_manifest, beam.pvalue.AsSingleton(records_in), self.claim, self.manifest_base, **near)

