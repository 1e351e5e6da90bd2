"""WriteReport: {section name: PCollection of one dict} -> report.json, once all are done,
then report.html: both by the pipeline, so a job a service runs (a Flex Template's) writes
both."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from memgen.outputs import Claim
from memgen.report import write_report
from memgen.report_figures import ReportPage


class WriteReport(beam.PTransform):
    """{section name: PCollection of one dict} -> report.json, written once all are done,
    then report.html (`page`)."""

    def __init__(self, claim: Claim, static: dict[str, Any], page: ReportPage) -> None:
        super().__init__()
        self.claim = claim
        self.static = static
        self.page = page

    def expand(self, sections):
        named = [pcoll | f"Name{name.title()}" >> beam.Map(lambda v, n: (n, v), name)
                 for name, pcoll in sections.items()]
        return (named
                | "AllSections" >> beam.Flatten()
                | "Collect" >> beam.combiners.ToList()
                | "Write" >> beam.Map(_write_sections, self.claim, self.static, self.page))


def _write_sections(pairs: list[tuple[str, Any]], claim: Claim, static: dict[str, Any],
                    page: ReportPage) -> None:
    if claim.held():  # else another run took --out over; the command line says so
        page.write(claim.url, write_report(claim.url, {**static, **dict(pairs)}))
