"""ReadShards: PCollection[Shard] -> records (with bytes), rejects, per-shard counts."""

from __future__ import annotations

import logging
from collections import Counter

import apache_beam as beam
from apache_beam import pvalue

from memgen.known import known_fingerprints
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Shard

LOG = logging.getLogger("memgen")
REJECTS = "rejects"
COUNTS = "counts"
FILE_PROGRESS = 100  # image files read between two progress lines (each file is a shard)


class _ReadShardFn(beam.DoFn):
    def __init__(self, config: ReaderConfig, n_shards: int) -> None:
        self.config = config
        self.n_shards = n_shards
        self.records = beam.metrics.Metrics.counter("memgen", "records_read")
        self.shards_done = beam.metrics.Metrics.counter("memgen", "shards_read")

    def process(self, shard: Shard):
        n_records, rejected = 0, Counter()
        for item in read_shard(shard, self.config, first_read=True):
            if isinstance(item, Record):
                n_records += 1
                yield item
            else:
                rejected[item.error_type] += 1
                # bytes are attached again when the tables are written: never shuffled
                yield pvalue.TaggedOutput(REJECTS, item._replace(data=None))
        self.records.inc(n_records)
        self.shards_done.inc()
        yield pvalue.TaggedOutput(COUNTS, n_records + rejected.total())
        # a line an image file (each is a shard) drowned the rest in a folder of photos
        if shard.kind != "file" or rejected or (shard.index + 1) % FILE_PROGRESS == 0:
            # by reason: "missing" is not "unreadable" (worth a retry), as every one was called
            why = f" ({', '.join(f'{k} {v}' for k, v in sorted(rejected.items()))})" if rejected else ""
            # records as the summary's "records in" counts them: rejects among them
            records = n_records + rejected.total()
            LOG.info("read shard %d/%d %s: %d record%s, %d rejected%s", shard.index + 1, self.n_shards,
                     shard.uri, records, "" if records == 1 else "s", rejected.total(), why)


class ReadShards(beam.PTransform):
    """Reads every shard; outputs tagged `records` (main), `rejects` and `counts`."""

    def __init__(self, config: ReaderConfig, n_shards: int) -> None:
        super().__init__()
        self.config = config
        self.n_shards = n_shards

    def expand(self, shards):
        return shards | "ReadShard" >> beam.ParDo(
            _ReadShardFn(self.config, self.n_shards)).with_outputs(REJECTS, COUNTS, main="records")


class ReadKnown(beam.PTransform):
    """PBegin -> PCollection[Fingerprint] of the images of --known memories' parts, given as
    memgen.known.known_parts lists them."""

    def __init__(self, parts: list[tuple[int, str]]) -> None:
        super().__init__()
        self.parts = parts

    def expand(self, pbegin):
        return (pbegin
                | "KnownParts" >> beam.Create(self.parts)
                | "KnownFingerprints" >> beam.FlatMapTuple(known_fingerprints))
