"""WriteReport: {section name: PCollection of one dict} -> report.json, once all are done."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from memgen.outputs import Claim
from memgen.report import write_report


class WriteReport(beam.PTransform):
    """{section name: PCollection of one dict} -> report.json, written once all are done."""

    def __init__(self, claim: Claim, static: dict[str, Any]) -> None:
        super().__init__()
        self.claim = claim
        self.static = static

    def expand(self, sections):
        named = [pcoll | f"Name{name.title()}" >> beam.Map(lambda v, n: (n, v), name)
                 for name, pcoll in sections.items()]
        return (named
                | "AllSections" >> beam.Flatten()
                | "Collect" >> beam.combiners.ToList()
                | "Write" >> beam.Map(_write_sections, self.claim, self.static))


def _write_sections(pairs: list[tuple[str, Any]], claim: Claim, static: dict[str, Any]) -> None:
    if claim.held():  # else another run took --out over; the command line says so
        write_report(claim.url, {**static, **dict(pairs)})
