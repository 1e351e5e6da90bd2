"""Near-duplicate search scaling on synthetic 64-bit hashes with planted near-duplicates.

For each n: n - n/100 uniform random hashes plus n/100 planted copies of random ones,
each with 1..k random bits flipped (k = the default threshold). memgen.near.near_pairs
runs on the distinct values (as NearDedup does); recall = planted pairs found / planted.
Wall and CPU time are both reported: near_pairs is one thread, so on a loaded machine
its CPU time is the fairer per-item figure.
imagededup's PHash.find_duplicates (brute force, default 'brute_force_cython', same
worker count) runs in the benchmark venv (peer_imagededup.py) at the sizes it can
finish in --peer-budget seconds; its time at larger n is extrapolated as quadratic
(brute force: n^2/2 comparisons) from its largest measured size, a lower bound since
its measured curve grows faster than n^2; the output keeps measured and extrapolated
figures apart.

    .venv/bin/python -m benchmarks.bench_near [--sizes 100000 1000000] [--workers 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time

import numpy as np

from benchmarks.common import OUT, at_least, between, machine, peer
from memgen.near import DEFAULT_THRESHOLD, MAX_THRESHOLD, near_pairs

PEER_SIZES = (1000, 2000, 4000, 8000, 16000, 32000)


def planted(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hashes, i, j): n hashes where hashes[j] is hashes[i] with 1..k bits flipped."""
    rng = np.random.default_rng(seed)
    n_copies = n // 100
    base = rng.integers(0, 2**64, size=n - n_copies, dtype=np.uint64)
    i = rng.choice(len(base), size=n_copies, replace=False)
    flips = np.zeros(n_copies, dtype=np.uint64)
    for row, d in enumerate(rng.integers(1, k + 1, size=n_copies)):
        for bit in rng.choice(64, size=d, replace=False):
            flips[row] |= np.uint64(1) << np.uint64(bit)
    hashes = np.concatenate([base, base[i] ^ flips])
    return hashes, i, np.arange(len(base), n)


def bench_memgen(n: int, k: int) -> dict:
    hashes, pi, pj = planted(n, k)
    values, inverse = np.unique(hashes, return_inverse=True)
    gc.collect()
    t0, cpu0 = time.perf_counter(), time.process_time()
    i, j, _ = near_pairs(values, k)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    a, b = inverse[pi], inverse[pj]
    hit = sum((min(x, y), max(x, y)) in found or x == y for x, y in zip(a.tolist(), b.tolist(), strict=True))
    return {"n": n, "distinct": len(values), "seconds": seconds, "us_per_item": 1e6 * seconds / n,
            "cpu_seconds": cpu, "cpu_us_per_item": 1e6 * cpu / n,
            "pairs": len(i), "planted": len(pi), "planted_found": hit,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_imagededup(n: int, k: int, workers: int) -> dict:
    hashes, _, _ = planted(n, k)
    path = OUT / f"near_hashes_{n}.json"
    path.write_text(json.dumps({f"{x:08d}.jpg": f"{int(h):016x}" for x, h in enumerate(hashes)}))
    result = peer("search", str(path), str(k), str(workers))
    path.unlink()
    return {**result, "us_per_item": 1e6 * result["search_s"] / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=at_least(1), nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--threshold", type=between(0, MAX_THRESHOLD), default=DEFAULT_THRESHOLD)
    parser.add_argument("--workers", type=at_least(1), default=2)
    parser.add_argument("--peer-budget", type=float, default=120.0,
                        help="stop growing imagededup's n once one run takes this long")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    k = args.threshold
    result: dict = {"machine_before": machine(), "threshold": k, "workers": args.workers}
    peer_runs, memgen_small = [], []
    for n in PEER_SIZES:
        run = bench_imagededup(n, k, args.workers)
        peer_runs.append(run)
        memgen_small.append(bench_memgen(n, k))
        print("imagededup", run, "memgen", memgen_small[-1], flush=True)
        # the next size takes ~4x as long; two sizes at least, for the fitted exponent
        if len(peer_runs) >= 2 and run["search_s"] > args.peer_budget / 4:
            break
    (n1, t1), (n2, t2) = ((r["n"], r["search_s"]) for r in peer_runs[-2:])
    exponent = float(np.log(t2 / t1) / np.log(n2 / n1))
    memgen_runs = []
    for n in args.sizes:
        run = bench_memgen(n, k)
        run["imagededup_s_extrapolated"] = t2 * (n / n2) ** 2
        run["speedup_vs_imagededup_extrapolated"] = run["imagededup_s_extrapolated"] / run["seconds"]
        memgen_runs.append(run)
        print("memgen", run, flush=True)
    result.update({"imagededup_measured": peer_runs, "memgen_at_imagededup_sizes": memgen_small,
                   "imagededup_fit_exponent": exponent, "memgen": memgen_runs,
                   "machine_after": machine()})
    if len(memgen_runs) >= 2:
        last, first = memgen_runs[-1], memgen_runs[0]
        result["per_item_ratio_last_vs_first"] = last["us_per_item"] / first["us_per_item"]
        result["cpu_per_item_ratio_last_vs_first"] = last["cpu_us_per_item"] / first["cpu_us_per_item"]
    (OUT / "near.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
