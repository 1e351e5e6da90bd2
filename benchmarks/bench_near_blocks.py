"""Search CPU per hash at sizes too large to run whole, from a sample of its blocks.

The Beam search (memgen.near: route -> GroupBlocks -> block_pairs) is a sum over
blocks, and for uniform hashes every block of a band's side is alike: its home hashes
(about n / 2^prefix_bits) plus visitors from each smaller key within the side's key
radius. So for each band and side, --blocks blocks are built as the plan for n would
build them (uniform random hashes with the block's key, Poisson counts), block_pairs is
timed on each, and the mean times the number of blocks, divided by n, is the side's CPU
per hash.
One full batch is also routed as the plan for n would route it, for the shuffle: bytes
per routed copy as Beam encodes the elements, and route's own CPU.
--check N also runs the whole single-machine search (near_pairs) at N to compare; a
smaller --block-target makes blocks at sizes where the whole search still runs.

    .venv/bin/python -m benchmarks.bench_near_blocks --sizes 10000000 896000000 [--thresholds 10 8 6]
    .venv/bin/python -m benchmarks.bench_near_blocks --sizes 4000000 --check 4000000 --block-target 1048576
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from apache_beam.coders.coders import FastPrimitivesCoder

from benchmarks.common import OUT, at_least, between, machine
from memgen.near import (
    BLOCK_TARGET,
    DEFAULT_THRESHOLD,
    MAX_THRESHOLD,
    SearchPlan,
    block_pairs,
    flip_masks,
    key_radii,
    near_pairs,
    plan_search,
    route,
)
from memgen.stages.dedup import BATCH


def with_key(rng: np.random.Generator, plan: SearchPlan, band: int, side: int, key: int,
             count: int) -> np.ndarray:
    """`count` uniform random hashes whose band has `key` in its top (side 0) or bottom
    (side 1) prefix_bits bits."""
    at = plan.shifts[band] + (plan.widths[band] - plan.prefix_bits if side == 0 else 0)
    mask = np.uint64(((1 << plan.prefix_bits) - 1) << at)
    hashes = rng.integers(0, 2**64, size=count, dtype=np.uint64)
    return (hashes & ~mask) | np.uint64(key << at)


def block_seconds(rng: np.random.Generator, plan: SearchPlan, n: int, band: int, side: int) -> float:
    """CPU seconds of block_pairs on one random block of a band's side, built as route would fill it."""
    per_key = n / 2**plan.prefix_bits
    home = int(rng.integers(0, 2**plan.prefix_bits))
    masks = flip_masks(plan.prefix_bits, key_radii(plan, band)[side])[1:]
    sources = [home] + [s for s in (home ^ masks).tolist() if s < home]
    parts = [with_key(rng, plan, band, side, s, int(rng.poisson(per_key))) for s in sources]
    start = time.process_time()
    block_pairs(plan, band, side, home, parts)
    return time.process_time() - start


def routing(plan: SearchPlan, seed: int = 0) -> dict:
    """Route one full batch (the stage's largest) as the plan for n would: route's CPU per hash,
    elements per hash, and bytes per routed copy as Beam encodes the untyped elements."""
    hashes = np.unique(np.random.default_rng(seed).integers(0, 2**64, BATCH[1], dtype=np.uint64))
    start = time.process_time()
    parts = list(route(hashes, plan))
    seconds = time.process_time() - start
    coder = FastPrimitivesCoder()
    encoded = sum(len(coder.encode(key)) + len(coder.encode(part)) for key, part in parts)
    copies = sum(len(part) for _, part in parts)
    return {"route_cpu_us_per_hash": 1e6 * seconds / len(hashes),
            "elements_per_hash": len(parts) / len(hashes),
            "copies_per_hash": copies / len(hashes), "bytes_per_copy": encoded / copies}


def estimate(n: int, k: int, blocks: int, block_target: int, seed: int = 0) -> dict:
    plan = plan_search(n, k, block_target)
    rng = np.random.default_rng(seed)
    per_band = []
    for band in range(len(plan.radii)):
        seconds = [np.mean([block_seconds(rng, plan, n, band, side) for _ in range(blocks)])
                   for side in range(len(key_radii(plan, band)))]
        per_band.append(1e6 * float(np.sum(seconds)) * 2**plan.prefix_bits / n)
    return {"n": n, "k": k, "plan": plan._asdict(), "blocks_per_band": blocks,
            "cpu_us_per_hash_by_band": per_band, "cpu_us_per_hash": sum(per_band), **routing(plan, seed)}


def whole(n: int, k: int, block_target: int, seed: int = 0) -> dict:
    hashes = np.unique(np.random.default_rng(seed).integers(0, 2**64, size=n, dtype=np.uint64))
    start = time.process_time()
    near_pairs(hashes, k, block_target)
    return {"n": len(hashes), "k": k, "cpu_us_per_hash": 1e6 * (time.process_time() - start) / len(hashes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=at_least(1), nargs="+", default=[10_000_000, 896_000_000])
    parser.add_argument("--thresholds", type=between(0, MAX_THRESHOLD), nargs="+",
                        default=[DEFAULT_THRESHOLD])
    parser.add_argument("--blocks", type=at_least(1), default=3, help="blocks timed per band")
    parser.add_argument("--check", type=at_least(1), nargs="*", default=[],
                        help="sizes at which to also time the whole near_pairs search")
    parser.add_argument("--block-target", type=at_least(1), default=BLOCK_TARGET,
                        help="hashes a block should hold (memgen.near.BLOCK_TARGET)")
    args = parser.parse_args()
    result: dict = {"machine_before": machine(), "estimates": [], "checks": []}
    for k in args.thresholds:
        for n in sorted(set(args.sizes) | set(args.check)):
            result["estimates"].append(estimate(n, k, args.blocks, args.block_target))
            print(json.dumps(result["estimates"][-1]), flush=True)
        for n in args.check:
            result["checks"].append(whole(n, k, args.block_target))
            print(json.dumps(result["checks"][-1]), flush=True)
    result["machine_after"] = machine()
    OUT.mkdir(exist_ok=True)
    (OUT / "near_blocks.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
