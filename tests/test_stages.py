"""Each memorize stage on a handful of elements, with Beam's test utilities."""

from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from memgen import records
from memgen.fingerprint import FingerprintConfig
from memgen.readers import ReaderConfig
from memgen.records import Record, Shard
from memgen.stages.dedup import ExactDedup
from memgen.stages.fingerprint import Fingerprint
from memgen.stages.read import ReadShards
from shardkit import jpeg, sample, write_tar


def pipeline() -> TestPipeline:
    return TestPipeline(runner="FnApiRunner")


def test_read_shards_outputs_records_rejects_and_counts(tmp_path):
    write_tar(tmp_path / "a.tar", [sample("x", jpeg(1)), ("t", {"txt": b"no image"})])
    shards = [Shard(0, str(tmp_path / "a.tar"), "tar"), Shard(1, str(tmp_path / "gone.tar"), "tar")]
    with pipeline() as p:
        read = p | beam.Create(shards) | ReadShards(ReaderConfig(), len(shards))
        assert_that(read.records | beam.Map(lambda r: (r.shard, r.source.rsplit("#")[1], len(r.data))),
                    equal_to([(0, "x", len(jpeg(1)))]), label="records")
        assert_that(read.rejects | beam.Map(lambda r: (r.shard, r.error_type, r.data)),
                    equal_to([(0, "no_image", None), (1, "missing", None)]), label="rejects")
        assert_that(read.counts, equal_to([2, 1]), label="counts")


def test_fingerprint_splits_usable_records_from_rejects():
    records = [Record(0, 0, "s0#a", jpeg(1), locator="#a"), Record(0, 1, "s0#b", b"junk", locator="#b"),
               Record(1, 0, "s1#c", jpeg(1), locator="#c")]
    with pipeline() as p:
        out = p | beam.Create(records) | Fingerprint(FingerprintConfig())
        assert_that(out.fingerprints | beam.Map(lambda f: (f.shard, f.locator, f.width)),
                    equal_to([(0, "#a", 160), (1, "#c", 160)]), label="fingerprints")
        assert_that(out.rejects | beam.Map(lambda r: (r.source, r.stage, r.error_type)),
                    equal_to([("s0#b", "fingerprint", "not_an_image")]), label="rejects")


def test_a_hundred_thousand_copies_of_one_image_are_one_small_group():
    """The records of one sha256 were gathered into one element (~76 bytes a copy: a million
    copies of a logo, one element of 76 MB); now they are summed: the group holds the one
    kept, the count and the shards."""
    image_id = hashlib.sha256(b"logo").digest()

    def copies(shard: int):
        return [records.Fingerprint(shard, i, f"#{i}", image_id, 7, 0, 10, 10, "PNG", 99)
                for i in range(2_000)]

    with pipeline() as p:
        groups = p | beam.Create(range(50, 0, -1), reshuffle=False) | beam.FlatMap(copies) | ExactDedup()
        assert_that(groups | beam.Map(lambda g: (g.kept.shard, g.kept.ordinal, g.exact_copies, g.shards)),
                    equal_to([(1, 0, 100_000, tuple(range(1, 51)))]))


def test_exact_dedup_groups_same_bytes_and_keeps_first_read():
    records = [Record(2, 0, "s2#late", jpeg(1), locator="#late"),
               Record(0, 3, "s0#early", jpeg(1), locator="#early"),
               Record(1, 0, "s1#other", jpeg(2), locator="#other")]
    with pipeline() as p:
        groups = (p | beam.Create(records) | Fingerprint(FingerprintConfig())).fingerprints | ExactDedup()
        summary = groups | beam.Map(lambda g: (g.kept.locator, g.exact_copies, g.shards))
        assert_that(summary, equal_to([("#early", 2, (0, 2)), ("#other", 1, (1,))]))
