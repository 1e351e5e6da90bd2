"""The connected-components stage on its worst shape, a path: how many rounds it takes and
how much the one-worker finishing step joins when the rounds (MAX_ROUNDS, 12) run out (the manifest's
near_dedup.components.finishing), on the in-process FnApiRunner. The path's nodes are
0..n-1 in order, or shuffled (a seeded permutation); the record is checked against the
one-machine reference (memgen.components.connected_components).

    .venv/bin/python -m benchmarks.bench_components --nodes 4000 8192
    .venv/bin/python -m benchmarks.bench_components --nodes 64000 --shuffled
"""
from __future__ import annotations

import argparse
import random
import time

import apache_beam as beam

from benchmarks.common import at_least
from memgen.components import MAX_ROUNDS, Convergence, Edge, connected_components
from memgen.stages.dedup import ConnectedComponents


def path(n: int, shuffled: bool) -> list[Edge]:
    nodes = list(range(n))
    if shuffled:
        random.Random(0).shuffle(nodes)
    return list(zip(nodes, nodes[1:], strict=False))


def print_row(record: Convergence, reference: Convergence, shape: str, started: float) -> None:
    """The table row of the stage's record, once it equals the one-machine reference's."""
    if record != reference:
        raise ValueError(f"the stage's record {record} is not the reference's {reference}")
    print(f"| {shape} | {record.rounds}, {record.converged} | {record.finishing.links:,} "
          f"| {record.finishing.labels:,} | {time.perf_counter() - started:.1f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=at_least(2), nargs="+", default=[4000, 8192])
    parser.add_argument("--shuffled", action="store_true", help="the path's nodes in a random order")
    args = parser.parse_args()
    print("| path | rounds, converged | links joined by one worker | labels | wall |\n|---|---|---|---|---|")
    for n in args.nodes:
        edges = path(n, args.shuffled)
        reference = connected_components(edges)[1]
        shape = f"{'shuffled' if args.shuffled else 'sorted'} {n:,}"
        started = time.perf_counter()  # the stage's run, from building its pipeline to its record
        with beam.Pipeline(runner="FnApiRunner") as p:
            out = p | beam.Create(edges) | ConnectedComponents(MAX_ROUNDS)
            _ = out["convergence"] | beam.Map(print_row, reference, shape, started)


if __name__ == "__main__":
    main()
