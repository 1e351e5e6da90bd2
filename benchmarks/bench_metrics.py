"""Set distances: memgen.metrics vs torch-fidelity, clean-fid and prdc on the same feature arrays.

What `memgen evaluate` computes for each pair of image sets and feature space, at its
sizes: a subset of 2,000 vectors from the "real" set and 1,000 from the other (a
1,000-image sample), KID over 100 subsets of 1,000, FD from the two covariances, k-NN
precision/recall (k = 3) and density/coverage (k = 5); feature widths as the report's
(64: pHash bits and colour histogram, 192: thumbnail, 1280: the EfficientNet-Lite0
embedding). Vectors are correlated Gaussians (timings do not depend on the values). The
contenders alternate within each round; medians of --rounds. memgen's numbers are
checked against torch-fidelity's on the same rows (relative 1e-6; clean-fid's KID draws
its own subsets, so it is timed only).

    .venv/bin/python -m benchmarks.bench_metrics [--rounds 3] [--dims 64 192 1280]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import numpy as np

from benchmarks.common import OUT, at_least, machine, stub_torchvision
from memgen import metrics
from memgen.metrics import Moments

REAL, FAKE = 2000, 1000  # evaluate's subset cap, and a 1,000-image sample


def _sets(d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(REAL, d)) @ mix + 2.0, rng.normal(size=(FAKE, d)) @ (mix * 1.1) + 2.1


def contenders(real: np.ndarray, fake: np.ndarray) -> dict[str, dict[str, callable]]:
    """metric -> contender -> a call returning its value (a float or a tuple of floats)."""
    import torch
    import torch_fidelity.metric_fid as tf_fid
    import torch_fidelity.metric_kid as tf_kid
    import torch_fidelity.metric_prc as tf_prc
    from cleanfid import fid as clean_fid
    from prdc import compute_prdc

    a, b = Moments.of(real), Moments.of(fake)
    stats = {"mu": a.mean, "sigma": a.cov}, {"mu": b.mean, "sigma": b.cov}
    t_real, t_fake = torch.from_numpy(real), torch.from_numpy(fake)

    def tf_kid_call():
        out = tf_kid.kid_features_to_metric(t_real, t_fake, kid_subsets=metrics.KID_SUBSETS, rng_seed=0,
                                            kid_subset_size=metrics.KID_SUBSET_SIZE, verbose=False)
        return out[tf_kid.KEY_METRIC_KID_MEAN], out[tf_kid.KEY_METRIC_KID_STD]

    def prdc_call():
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
            out = compute_prdc(real, fake, nearest_k=metrics.DC_K)
        return out["density"], out["coverage"]

    return {
        "kid": {"memgen": lambda: metrics.kid(real, fake, seed=0), "torch-fidelity": tf_kid_call,
                "clean-fid": lambda: clean_fid.kernel_distance(real, fake)},
        "fd": {"memgen": lambda: metrics.fd_from_moments(a, b),
               "torch-fidelity": lambda: tf_fid.fid_statistics_to_metric(*stats, verbose=False)[
                   tf_fid.KEY_METRIC_FID],
               "clean-fid": lambda: float(clean_fid.frechet_distance(
                   stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"]))},
        "precision_recall": {
            "memgen": lambda: metrics.precision_recall(real, fake, k=metrics.PR_K),
            # torch-fidelity's order: generated first, then real
            "torch-fidelity": lambda: tuple(tf_prc.calculate_precision_recall_full(
                t_fake, t_real, neighborhood=metrics.PR_K))},
        "density_coverage": {"memgen": lambda: metrics.density_coverage(real, fake, k=metrics.DC_K),
                             "prdc": prdc_call},
    }


def _agree(ours, theirs) -> bool:
    ours, theirs = np.atleast_1d(ours).astype(float), np.atleast_1d(theirs).astype(float)
    return bool(np.allclose(ours, theirs, rtol=1e-6, atol=0))


def run(dims: list[int], rounds: int) -> list[dict]:
    rows = []
    for d in dims:
        calls = contenders(*_sets(d))
        for metric, by_name in calls.items():
            seconds: dict[str, list[float]] = {name: [] for name in by_name}
            values = {}
            for _ in range(rounds):
                for name, call in by_name.items():
                    t0 = time.perf_counter()
                    values[name] = call()
                    seconds[name].append(time.perf_counter() - t0)
            medians = {name: statistics.median(s) for name, s in seconds.items()}
            checked = "torch-fidelity" if "torch-fidelity" in values else "prdc"
            row = {"d": d, "metric": metric, "seconds": medians,
                   "agrees_with": checked, "agrees": _agree(values["memgen"], values[checked]),
                   "speedup": {n: s / medians["memgen"] for n, s in medians.items() if n != "memgen"}}
            rows.append(row)
            print(f"d={d:5d} {metric:17s} " + "  ".join(f"{n} {s:.3f}s" for n, s in medians.items())
                  + "  " + "  ".join(f"{n}/memgen {r:.1f}x" for n, r in row["speedup"].items())
                  + f"  agrees with {checked}: {row['agrees']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=at_least(1), default=3)
    parser.add_argument("--dims", type=at_least(1), nargs="+", default=[64, 192, 1280])
    args = parser.parse_args()
    stub_torchvision()
    print(machine())
    result = {"machine": machine(), "rounds": args.rounds, "rows": run(args.dims, args.rounds)}
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_metrics.json").write_text(json.dumps(result, indent=1))
    if not all(row["agrees"] for row in result["rows"]):
        raise SystemExit("memgen's numbers differ from a reference's: see the rows above")


if __name__ == "__main__":
    main()
