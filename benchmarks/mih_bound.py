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
Also printed: the modelled work of the layout memgen.near.plan_search picks (c = 1, s = 0).

    .venv/bin/python -m benchmarks.mih_bound [--sizes 100000 1000000 10000000] [--k 10]
"""

from __future__ import annotations

import argparse
import json
from functools import cache

from benchmarks.common import OUT
from memgen.near import HASH_BITS, ball_size, plan_search, search_cost

RELATIVE_VERIFY_COSTS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    first, *rest = args.sizes
    header = ["relative verify cost c", *(f"least work, n={n:,}" for n in args.sizes),
              *(f"{n:,} / {first:,}" for n in rest)]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = []
    for c in RELATIVE_VERIFY_COSTS:
        work = [least_work(n, args.k, c) for n in args.sizes]
        rows.append({"c": c, "work": [w for w, _ in work], "layouts": [layout for _, layout in work]})
        ratios = (f"**{w / work[0][0]:.2f}x**" for w, _ in work[1:])
        cells = [f"{c:g}", *(f"{w:,.0f}" for w, _ in work), *ratios]
        print("| " + " | ".join(cells) + " |")
    plans = {n: plan_search(n, args.k) for n in args.sizes}
    planned = {n: search_cost(n, p.widths, p.radii) for n, p in plans.items()}
    print("\nmemgen.near.plan_search (c = 1, classic MIH): "
          + ", ".join(f"n={n:,}: {planned[n]:,.0f} ({plans[n].widths} bits, radii {plans[n].radii})"
                      for n in args.sizes))
    by_k = {k: [least_work(n, k, 1.0)[0] for n in args.sizes[:2]] for k in range(1, args.k + 1)}
    print(f"\nc = 1, least work at {args.sizes[1]:,} / at {first:,}, by threshold k: "
          + ", ".join(f"k={k}: {b / a:.2f}x" for k, (a, b) in by_k.items()))
    OUT.mkdir(exist_ok=True)
    (OUT / "mih_bound.json").write_text(json.dumps(
        {"k": args.k, "sizes": args.sizes, "rows": rows, "memgen_plan_work": planned,
         "ratio_by_k_c1": {k: b / a for k, (a, b) in by_k.items()}}, indent=1))


if __name__ == "__main__":
    main()
