"""What a probe and a verified candidate cost in memgen's search, and the layout it picks.

`memgen.near.plan_search` chooses band widths and radii with a cost model: probes +
VERIFY_COST x candidates per hash (uniform hashes). This script times the
single-machine search (`planned_pairs`) on the planted hashes of bench_near with the
plan's own layout and with the even layouts of 3 to 6 bands, fits
CPU = a + b x probes + c x candidates by least squares, and prints the fitted ratio
c / b (the constant VERIFY_COST should hold) beside each layout's measured and
modelled time.

    .venv/bin/python -m benchmarks.bench_layouts [--sizes 100000 1000000] [--k 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import numpy as np

from benchmarks.bench_near import planted
from benchmarks.common import OUT, at_least, between, machine
from memgen.near import (
    DEFAULT_THRESHOLD,
    HASH_BITS,
    MAX_THRESHOLD,
    VERIFY_COST,
    SearchPlan,
    ball_size,
    plan_search,
    planned_pairs,
)


def even_layout(m: int, k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """m bands of (nearly) equal width; the k + 1 pigeonhole units spread evenly."""
    q, more = divmod(k + 1, m)
    widths = tuple(HASH_BITS // m + (i < HASH_BITS % m) for i in range(m))
    return widths, tuple(q if i < more else q - 1 for i in range(m))


def probes_and_candidates(n: int, widths: tuple[int, ...], radii: tuple[int, ...]) -> tuple[float, float]:
    balls = [(ball_size(w, r), w) for w, r in zip(widths, radii, strict=True) if r >= 0]
    return sum(b for b, _ in balls), sum(b * n / 2**w for b, w in balls)


def time_layouts(n: int, k: int, rounds: int) -> list[dict]:
    hashes = np.unique(planted(n, k)[0])
    picked = plan_search(len(hashes), k)
    layouts = {(picked.widths, picked.radii)} | {even_layout(m, k) for m in range(3, 7)}
    rows = []
    for widths, radii in sorted(layouts):
        plan = SearchPlan(k, widths, radii, picked.prefix_bits)
        cpu = []
        for _ in range(rounds):
            gc.collect()
            start = time.process_time()
            planned_pairs(hashes, plan)
            cpu.append(time.process_time() - start)
        probes, candidates = probes_and_candidates(len(hashes), widths, radii)
        rows.append({"n": n, "widths": widths, "radii": radii,
                     "picked": (widths, radii) == (picked.widths, picked.radii),
                     "probes": probes, "candidates": candidates,
                     "cpu_us_per_hash": 1e6 * min(cpu) / len(hashes)})
        print(rows[-1], flush=True)
    return rows


def fit(rows: list[dict]) -> dict:
    design = np.array([[1.0, r["probes"], r["candidates"]] for r in rows])
    per_hash, ns_probe, ns_candidate = np.linalg.lstsq(
        design, np.array([r["cpu_us_per_hash"] for r in rows]), rcond=None)[0] * [1, 1e3, 1e3]
    return {"us_per_hash": per_hash, "ns_per_probe": ns_probe, "ns_per_candidate": ns_candidate,
            "verify_cost": ns_candidate / ns_probe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=at_least(1), nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--k", type=between(0, MAX_THRESHOLD), default=DEFAULT_THRESHOLD)
    parser.add_argument("--rounds", type=at_least(1), default=2, help="best of this many runs per layout")
    args = parser.parse_args()
    rows = [row for n in args.sizes for row in time_layouts(n, args.k, args.rounds)]
    fitted = fit(rows)
    print(f"\nfitted: {fitted['ns_per_probe']:.2f} ns a probe, {fitted['ns_per_candidate']:.2f} ns a "
          f"candidate, {fitted['us_per_hash']:.2f} us a hash; verify cost {fitted['verify_cost']:.2f} "
          f"(memgen.near.VERIFY_COST = {VERIFY_COST})\n")
    print("| n | bands (bits) | radii | CPU µs / hash | modelled (fit) | picked by plan_search |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        model = fitted["us_per_hash"] + (r["probes"] * fitted["ns_per_probe"]
                                         + r["candidates"] * fitted["ns_per_candidate"]) / 1e3
        print(f"| {r['n']:,} | {'/'.join(map(str, r['widths']))} | {'/'.join(map(str, r['radii']))} "
              f"| {r['cpu_us_per_hash']:.1f} | {model:.1f} | {'yes' if r['picked'] else ''} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "layouts.json").write_text(json.dumps({"k": args.k, "rows": rows, "fit": fitted,
                                                  "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
