"""Fingerprint: PCollection[Record] -> fingerprints (main) and rejects (tagged)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue

from memgen.fingerprint import FingerprintConfig, SeenBytes, fingerprint
from memgen.records import Reject

REJECTS = "rejects"


class _FingerprintFn(beam.DoFn):
    def __init__(self, config: FingerprintConfig) -> None:
        self.config = config
        self.rejected = beam.metrics.Metrics.counter("memgen", "records_rejected_fingerprint")
        self.seen = None

    def setup(self) -> None:
        self.seen = SeenBytes()

    def process(self, record):
        result = fingerprint(record, self.config, self.seen)
        if isinstance(result, Reject):
            self.rejected.inc()
            yield pvalue.TaggedOutput(REJECTS, result)
        else:
            yield result


class Fingerprint(beam.PTransform):
    def __init__(self, config: FingerprintConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, records):
        return records | "Fingerprint" >> beam.ParDo(
            _FingerprintFn(self.config)).with_outputs(REJECTS, main="fingerprints")
