"""The least work per hash any exact pigeonhole (multi-index hashing) search can do.

Section 3 of benchmarks/README.md asks for a per-item search time at 1M hashes within
1.5x of that at 100k (k = 10). This computes, for uniform random 64-bit hashes, the
expected work per hash of the best layout in the whole family that keeps recall exact,
found exhaustively (dynamic programming over bits and pigeonhole units):
- the 64 bits split into bands of any widths w_i (bits may also be left out);
- radii r_i with sum(r_i + 1) = k + 1 over the probed bands (the generalized
  pigeonhole principle: a pair within k agrees on some band within r_i);
- each band's radius split between the indexed side (s) and the probing side (r_i - s):
  s = 0 is classic MIH (memgen.near), larger s indexes every hash under V(w_i, s) keys
  and probes fewer.
Work per hash of a band: V(w, s) + V(w, r - s) key operations plus
c * n * V(w, s) * V(w, r - s) / 2^w candidates verified by popcount, where V(w, r) is the
number of w-bit values within r bits of one (memgen.near.ball_size) and c the cost of a
verification relative to a key operation, swept because it depends on the implementation.
Then, at web scale (--plan-sizes) and for several thresholds: the layout
memgen.near.plan_search picks, its modelled work per hash (c = memgen.near.VERIFY_COST,
the measured cost; s = 0), the least possible at that c, and how many copies of each
hash the Beam search routes to blocks (its shuffle).

    .venv/bin/python -m benchmarks.mih_bound [--sizes 100000 1000000 10000000] [--k 10]
"""

from __future__ import annotations

import argparse
import json
from functools import cache

from benchmarks.common import OUT, at_least, between
from memgen.near import (
    HASH_BITS,
    MAX_THRESHOLD,
    VERIFY_COST,
    ball_size,
    plan_search,
    routed_copies,
    search_cost,
)

# 0.4: the search's measured c before its padded-row tables, which benchmarks/README.md's table cites
RELATIVE_VERIFY_COSTS = tuple(sorted({0.03, 0.1, 0.3, 0.4, VERIFY_COST, 1.0, 3.0, 10.0}))


def band_work(width: int, radius: int, n: float, c: float) -> tuple[float, int]:
    """(least expected work per hash, indexed radius s) of one band, over the splits of its radius."""
    return min((ball_size(width, s) + ball_size(width, radius - s)
                + c * n * ball_size(width, s) * ball_size(width, radius - s) / 2**width, s)
               for s in range(radius // 2 + 1))


def least_work(n: float, k: int, c: float) -> tuple[float, tuple[tuple[int, int, int], ...]]:
    """(work per hash, ((width, radius, indexed radius), ...)) of the best exact layout for n hashes."""

    @cache
    def best(bits: int, units: int) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        if units == 0:
            return 0.0, ()
        options = []
        for width in range(1, bits + 1):
            for radius in range(units):
                rest, layout = best(bits - width, units - radius - 1)
                work, indexed = band_work(width, radius, n, c)
                options.append((work + rest, ((width, radius, indexed), *layout)))
        return min(options, default=(float("inf"), ()))

    return best(HASH_BITS, k + 1)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def bound(sizes: list[int], k: int) -> dict:
    """The least work per hash at each size, for each relative verification cost."""
    first, *rest = sizes
    rows, cells = [], []
    for c in RELATIVE_VERIFY_COSTS:
        work = [least_work(n, k, c) for n in sizes]
        rows.append({"c": c, "work": [w for w, _ in work], "layouts": [layout for _, layout in work]})
        cells.append([f"{c:g}", *(f"{w:,.0f}" for w, _ in work),
                      *(f"**{w / work[0][0]:.2f}x**" for w, _ in work[1:])])
    print(table(["relative verify cost c", *(f"least work, n={n:,}" for n in sizes),
                 *(f"{n:,} / {first:,}" for n in rest)], cells))
    by_k = {t: least_work(rest[0], t, 1.0)[0] / least_work(first, t, 1.0)[0] for t in range(1, k + 1)}
    print(f"\nc = 1, least work at {rest[0]:,} / at {first:,}, by threshold: "
          + ", ".join(f"k={t}: {ratio:.2f}x" for t, ratio in by_k.items()))
    return {"rows": rows, "ratio_by_k_c1": by_k}


def plans(sizes: list[int], thresholds: list[int]) -> list[dict]:
    """What memgen.near.plan_search picks: modelled work (c = VERIFY_COST) and the search's shuffle."""
    rows = []
    for n in sizes:
        for k in thresholds:
            plan = plan_search(n, k)
            rows.append({"n": n, "k": k, "widths": plan.widths, "radii": plan.radii,
                         "prefix_bits": plan.prefix_bits,
                         # search_cost counts probes; least_work also the key that indexes each
                         # hash in a band: the same units here, so least <= memgen's plan
                         "work": search_cost(n, plan.widths, plan.radii) + sum(r >= 0 for r in plan.radii),
                         "least_work": least_work(n, k, VERIFY_COST)[0],
                         "routed_copies": routed_copies(plan)})
    print("\n" + table(
        ["n", "k", "bands (bits)", "radii", "prefix bits", "work per hash",
         f"least possible (c = {VERIFY_COST:g})", "copies of a hash routed"],
        [[f"{r['n']:,}", str(r["k"]), "/".join(map(str, r["widths"])), "/".join(map(str, r["radii"])),
          str(r["prefix_bits"]), f"{r['work']:,.0f}", f"{r['least_work']:,.0f}", f"{r['routed_copies']:,.0f}"]
         for r in rows]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=at_least(1), nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--k", type=between(0, HASH_BITS - 1), default=10,
                        help="its k + 1 pigeonhole bands take a bit or more each")
    parser.add_argument("--plan-sizes", type=at_least(1), nargs="*", default=[10**7, 10**8, 10**9],
                        help="sizes at which to show memgen's own plan")
    parser.add_argument("--plan-thresholds", type=between(0, MAX_THRESHOLD), nargs="*", default=[4, 6, 8, 10])
    args = parser.parse_args()
    if len(args.sizes) < 2:
        parser.error("--sizes needs at least two sizes to compare")
    result = {"k": args.k, "sizes": args.sizes, **bound(args.sizes, args.k),
              "memgen_plans": plans(args.plan_sizes, args.plan_thresholds)}
    OUT.mkdir(exist_ok=True)
    (OUT / "mih_bound.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
