"""WriteMemory: dedup results + rejects -> Parquet parts, then manifest.json.

References (small) are grouped by part (a shard, or consecutive image files:
memgen.materialize.Parts); each part's shards are re-read once, inside one worker, to
write its kept images with their bytes; its duplicates are written once every part's
images are (memgen.materialize says why). The manifest is computed from
what the writers report and written last, so a memory is finished only when every
part is in place.
"""

from __future__ import annotations

from collections import Counter

import apache_beam as beam

from memgen.dedup import CopiesOf, DuplicateRow, KeptImage, exact_rows, place
from memgen.manifest import build_manifest
from memgen.materialize import Parts, write_duplicates, write_images
from memgen.memory import TABLES, join, part_name, write_manifest, write_rows
from memgen.outputs import Claim
from memgen.readers import ReaderConfig
from memgen.records import Shard


class _PartWriter(beam.DoFn):
    def __init__(self, memory: str, parts: Parts, config: ReaderConfig) -> None:
        self.memory = memory
        self.parts = parts
        self.config = config


class _WriteImagesFn(_PartWriter):
    """(part, placed and rejects) -> counts; the ids of representatives lost to a shard that
    changed between its two reads go to the LOST output."""

    LOST = "lost"

    def process(self, element):
        part, joined = element
        kept = [row for _, row in joined["placed"] if isinstance(row, KeptImage)]
        counts, lost = write_images(self.memory, self.parts.shards_of(part), kept, list(joined["rejects"]),
                                    self.config)
        yield counts
        for image_id in lost:
            yield beam.pvalue.TaggedOutput(self.LOST, image_id)


class _WriteDuplicatesFn(_PartWriter):
    """(part, placed, fingerprints and rejects), every lost representative -> counts."""

    def process(self, element, lost):
        part, joined = element
        duplicates = [(shard, row) for shard, row in joined["placed"] if isinstance(row, DuplicateRow)]
        copies = (row for _, row in joined["placed"] if isinstance(row, CopiesOf))
        duplicates += exact_rows(joined["fingerprints"], copies)
        yield write_duplicates(self.memory, self.parts.shards_of(part), duplicates, frozenset(lost),
                               self.config)


def _sum_counters(counters) -> Counter:
    total: Counter = Counter()
    for c in counters:
        total.update(c)
    return total


def _write_manifest(totals: Counter, records_in: int, claim: Claim, base: dict,
                    near_dedup: dict) -> dict | None:
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
    """Input: dict with assigned ((ImageGroup, Assignment), NearDedup's output), fingerprints
    (every record's: the exact copies' rows are made from them), rejects, read_counts and
    near_dedup (NearDedup's one-element report, for the manifest)."""

    def __init__(self, claim: Claim, shards: list[Shard], config: ReaderConfig,
                 manifest_base: dict) -> None:
        super().__init__()
        self.claim = claim
        self.shards = shards
        self.config = config
        self.manifest_base = manifest_base

    def expand(self, pcolls):
        parts = Parts(self.shards)
        placed = (pcolls["assigned"] | "Place" >> beam.FlatMapTuple(place)
                  | "KeyPlaced" >> beam.Map(lambda placed: (parts.of(placed[0]), placed)))
        rejects = pcolls["rejects"] | "KeyRejects" >> beam.Map(lambda r: (parts.of(r.shard), r))
        fingerprints = (pcolls["fingerprints"]
                        | "KeyFingerprints" >> beam.Map(lambda fp: (parts.of(fp.shard), fp)))
        by_part = ({"placed": placed, "fingerprints": fingerprints, "rejects": rejects}
                   | "GroupByPart" >> beam.CoGroupByKey())
        images = by_part | "Materialize" >> beam.ParDo(
            _WriteImagesFn(self.claim.url, parts, self.config)).with_outputs(
            _WriteImagesFn.LOST, main="counts")
        # the side input holds the duplicates back until every part's images are written
        duplicates = by_part | "WriteDuplicates" >> beam.ParDo(
            _WriteDuplicatesFn(self.claim.url, parts, self.config),
            beam.pvalue.AsList(images[_WriteImagesFn.LOST]))
        totals = ((images.counts, duplicates) | "AllCounts" >> beam.Flatten()
                  | "SumCounts" >> beam.CombineGlobally(_sum_counters))
        records_in = pcolls["read_counts"] | "RecordsIn" >> beam.CombineGlobally(sum)
        return totals | "WriteManifest" >> beam.Map(
            _write_manifest, beam.pvalue.AsSingleton(records_in), self.claim, self.manifest_base,
            beam.pvalue.AsSingleton(pcolls["near_dedup"]))

