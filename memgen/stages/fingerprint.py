"""Fingerprint: PCollection[Record] -> fingerprints (main) and rejects (tagged)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue

from memgen.fingerprint import FingerprintConfig, fingerprint
from memgen.records import Reject

REJECTS = "rejects"


class _FingerprintFn(beam.DoFn):
    def __init__(self, config: FingerprintConfig) -> None:
        self.config = config
        self.rejected = beam.metrics.Metrics.counter("memgen", "records_rejected_fingerprint")

    def process(self, record):
        result = fingerprint(record, self.config)
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
