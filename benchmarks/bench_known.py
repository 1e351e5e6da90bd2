"""What `memgen memorize --known` costs: a new batch memorized without and with a known memory.

One crawl-like corpus (benchmarks/corpus.py, as bench_e2e speed makes it) of the largest
--known-images plus --new-images records: the first records make the known memories (one
for each --known-images size, memorized once, untimed but reported), the last
--new-images records are the new batch. A record copies or re-renders an earlier one at
random, so about 10% of the new batch are exact copies and ~20% near copies of earlier
records, nearly all of them in the known memory, as a nightly crawl overlaps the nights
before. The new batch is memorized without --known and with each known memory, on the
same --workers processes (bench_e2e's `memgen memorize` command under /usr/bin/time -v),
alternating --repeats times; medians of the walls and of the ratios with/without are
reported, with peak RSS, the pipeline's own seconds (manifest) and the counts. Also the
seconds this process takes to read the known memory's ids and hashes alone
(memgen.known), the part of the cost that is not dedup.

    .venv/bin/python -m benchmarks.bench_known [--known-images 20000] [--new-images 2000]
        [--workers 2] [--repeats 3]
Corpus and memories go to benchmarks/out/known/ (gitignored); --keep keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks.bench_e2e import memorize
from benchmarks.common import OUT, machine
from benchmarks.corpus import make_corpus
from memgen.known import known_fingerprints, known_parts

SHARD = 500  # records a shard: every size is a multiple of it


def split_corpus(root: Path, known_sizes: list[int], new: int) -> dict:
    """Generate the corpus once; hard-link its shards into known-N/ (first N records) and new/."""
    total = max(known_sizes) + new
    if not (root / "corpus.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        corpus = make_corpus(root, total, shard_size=SHARD)
        (root / "corpus.json").write_text(json.dumps(corpus))
    shards = sorted((root / "shards").glob("*.tar"))
    groups = {f"known-{n}": shards[: n // SHARD] for n in known_sizes} | {"new": shards[-(new // SHARD):]}
    for name, members in groups.items():
        shutil.rmtree(root / name, ignore_errors=True)
        (root / name).mkdir()
        for shard in members:  # hard links: regular files, no copies of the bytes
            os.link(shard, root / name / shard.name)
    return json.loads((root / "corpus.json").read_text())


def read_known_s(memory: Path) -> float:
    """Seconds to read every known image's ids and hashes (what ReadKnown emits), in this process."""
    t0 = time.perf_counter()
    n = sum(1 for shard, part in known_parts([str(memory)]) for _ in known_fingerprints(shard, part))
    assert n > 0, f"no images read from {memory}"
    return time.perf_counter() - t0


def brief(run: dict) -> dict:
    return {k: run[k] for k in ("wall_s", "max_rss_mb", "pipeline_s")} | {
        "images": run["counts"].get("images"), "duplicates_known": run["counts"].get("duplicates_known", 0)}


def measure(args: argparse.Namespace) -> dict:
    root = OUT / "known" / f"{max(args.known_images)}+{args.new_images}"
    result: dict = {"machine_before": machine(), "workers": args.workers,
                    "corpus": split_corpus(root, args.known_images, args.new_images), "known": {}}
    for n in args.known_images:
        built = memorize(root / f"known-{n}", root / f"memory-known-{n}", args.workers)
        read_s = read_known_s(root / f"memory-known-{n}")
        result["known"][n] = {"memorize": brief(built), "read_ids_hashes_s": read_s}
        print(json.dumps({n: result["known"][n]}), file=sys.stderr, flush=True)
    runs = []
    for _ in range(args.repeats):  # alternate, so a slow spell of the machine hits every variant
        run = {"without": brief(memorize(root / "new", root / "memory-new", args.workers))}
        for n in args.known_images:
            run[f"known-{n}"] = brief(memorize(root / "new", root / "memory-new", args.workers,
                                               ("--known", str(root / f"memory-known-{n}"))))
            run[f"ratio-{n}"] = run[f"known-{n}"]["wall_s"] / run["without"]["wall_s"]
        runs.append(run)
        ratios = {k: v for k, v in run.items() if k.startswith("ratio")}
        print(json.dumps(ratios), file=sys.stderr, flush=True)
    result["runs"] = runs
    result["machine_after"] = machine()
    result["median_wall_s"] = {k: statistics.median(r[k]["wall_s"] for r in runs)
                               for k in runs[0] if not k.startswith("ratio")}
    result["median_ratio"] = {n: statistics.median(r[f"ratio-{n}"] for r in runs) for n in args.known_images}
    if not args.keep:
        shutil.rmtree(root)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--known-images", type=int, nargs="+", default=[20_000],
                        help=f"records of each known memory (several: one memory each), multiples of {SHARD}")
    parser.add_argument("--new-images", type=int, default=2_000,
                        help=f"records of the new batch, a multiple of {SHARD}")
    parser.add_argument("--workers", type=int, default=2, help="SDK worker processes of every memorize run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternating")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpus and memories")
    args = parser.parse_args()
    if any(n <= 0 or n % SHARD for n in [*args.known_images, args.new_images]):
        parser.error(f"--known-images and --new-images must be positive multiples of {SHARD}")
    OUT.mkdir(exist_ok=True)
    result = measure(args)
    (OUT / "known.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
