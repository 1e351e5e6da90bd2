"""Beam stages of `memgen sample`: choose the sample by keys, then write its bytes.

ChooseSample: memory part URLs -> one (chosen, tau) element. Each part contributes
its n+1 largest keys (image_id and copies columns only, never bytes); TopCandidates,
a CombineFn, merges these partial top lists, so the result does not depend on the
runner, worker count or the order of parts.
WriteSample: the chosen references, grouped by output file (consecutive memory parts
share one); each file is written by one worker, which reads each of its parts once; the
small index rows and thumbnails then meet in one step that writes index.parquet, the
contact sheet and manifest.json, last.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from memgen import sampling
from memgen.decode import DEFAULT_MAX_PIXELS
from memgen.memory import read_columns
from memgen.outputs import Claim
from memgen.sample_output import file_numbers, finish_sample, write_file


class TopCandidates(beam.CombineFn):
    """The `capacity` largest candidates; inputs are partial top lists (one per part).

    Accumulators are lists of plain (key, image_id, part, weight, copies) tuples: Beam
    encodes those natively, where Candidate NamedTuples would be pickled. Inputs are added
    as they come and cut to the `capacity` largest once twice as many are held (a merge per
    input cost O(parts x n): 48 s for 20,000 parts and n = 90,000)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def create_accumulator(self) -> list[tuple]:
        return []

    def add_input(self, accumulator, candidates):
        accumulator.extend(candidates)
        if len(accumulator) > 2 * self.capacity:
            return sampling.merge([accumulator], self.capacity)
        return accumulator

    def merge_accumulators(self, accumulators):
        return sampling.merge(accumulators, self.capacity)

    def extract_output(self, accumulator) -> list[tuple]:
        return sampling.merge([accumulator], self.capacity)  # largest first


def part_top(part: str, seed: int, mode: str, capacity: int) -> list[tuple]:
    """A part's `capacity` largest candidates, read from its image_id and copies columns."""
    table = read_columns(part, ["image_id", "copies"])
    found = sampling.candidates(seed, mode, part, table.column("image_id").to_pylist(),
                                table.column("copies").to_pylist())
    return [tuple(c) for c in sampling.top(found, capacity)]


class ChooseSample(beam.PTransform):
    """Part URLs -> a single (Chosen tuples in rank order, tau or None)."""

    def __init__(self, seed: int, mode: str, n: int) -> None:
        super().__init__()
        self.seed, self.mode, self.n = seed, mode, n

    def expand(self, parts):
        return (
            parts
            | "PartTop" >> beam.Map(part_top, self.seed, self.mode, self.n + 1)
            | "TopCandidates" >> beam.CombineGlobally(TopCandidates(self.n + 1))
            | "Choose" >> beam.Map(choose, self.n, self.seed)
        )


def choose(top: list[tuple], n: int, seed: int) -> tuple[list[tuple], float | None]:
    """sampling.choose, with the chosen as plain tuples (see TopCandidates)."""
    chosen, tau = sampling.choose(top, n, seed)
    return [tuple(c) for c in chosen], tau


def by_file(choice: tuple[list[tuple], float | None]) -> Iterator[tuple[int, tuple]]:
    """(output file number, chosen) for every chosen image (sample_output.file_numbers)."""
    parts = [sampling.Chosen._make(x).part for x in choice[0]]
    numbers = file_numbers(parts)
    for part, x in zip(parts, choice[0], strict=True):
        yield numbers[part], x


class WriteSample(beam.PTransform):
    """(chosen, tau) -> files per part, index.parquet, contact sheet, manifest.json."""

    def __init__(self, claim: Claim, fmt: str, manifest_base: dict,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__()
        self.claim, self.fmt, self.manifest_base, self.max_pixels = claim, fmt, manifest_base, max_pixels

    def expand(self, choice):
        out, fmt, max_pixels = self.claim.url, self.fmt, self.max_pixels
        tau = choice | "Threshold" >> beam.Map(lambda c: c[1])  # the side input stays small
        return (
            choice
            | "ByFile" >> beam.FlatMap(by_file)
            | "GroupByFile" >> beam.GroupByKey()
            | "WriteFile" >> beam.MapTuple(lambda number, chosen: write_file(number, chosen, out, fmt,
                                                                            max_pixels))
            | "Collect" >> beam.combiners.ToList()
            | "Finish" >> beam.Map(finish_sample, self.claim, beam.pvalue.AsSingleton(tau),
                                   self.manifest_base)
        )
