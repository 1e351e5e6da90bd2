"""End to end: `memgen memorize` vs imagededup PHash, and memorize's peak RSS vs corpus size.

speed: a crawl-like corpus of --images JPEGs (real photos re-encoded at 0.5-1.0x their
size, 10% byte-identical copies; benchmarks/corpus.py), as WebDataset tar shards for
memgen and as a folder of the same files for imagededup. Back to back on the same
machine: the `memgen memorize` command (FnApiRunner, --workers SDK worker processes)
and imagededup's encode_images + find_duplicates (benchmark venv, num_enc_workers =
num_dist_workers = --workers), both at the default threshold, alternating --repeats
times (this machine's speed drifts by a third within minutes, so a ratio comes from one
run and the medians of the runs' ratios are reported). Wall clock of each whole command,
Python start-up included.

rss: two corpora of large JPEGs (real photos re-encoded at 4-5x, long side <= 2500 px) of
--rss-gb sizes; `memgen memorize` (default in-process runner) under /usr/bin/time -v;
peak RSS of the larger over the smaller.

    .venv/bin/python -m benchmarks.bench_e2e speed [--images 10000] [--workers 2] [--repeats 3]
    .venv/bin/python -m benchmarks.bench_e2e rss [--rss-gb 1 4]
Corpora and memories go to benchmarks/out/e2e/ (gitignored); --keep keeps them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_PYTHON, HERE, OUT, at_least, machine, positive_float
from benchmarks.corpus import make_corpus
from memgen.near import DEFAULT_THRESHOLD

MEMGEN = str(Path(sys.executable).with_name("memgen"))
BIG_SCALE, BIG_QUALITY = (4.0, 5.0), (90, 96)  # 1.5-2 Mpixel JPEGs


def timed_command(argv: list[str]) -> dict:
    """Run argv under /usr/bin/time -v: wall seconds, peak RSS (MB) and stdout."""
    stats = OUT / "time-v.txt"
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", "-o", str(stats), *argv],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stats.read_text()).group(1))
    return {"wall_s": wall, "max_rss_mb": rss_kb / 1024, "stdout": done.stdout}


def memorize(shards: Path, memory: Path, workers: int, extra: tuple[str, ...] = ()) -> dict:
    """`memgen memorize shards --memory memory [extra flags]` timed, a fresh memory."""
    shutil.rmtree(memory, ignore_errors=True)
    argv = [MEMGEN, "memorize", str(shards), "--memory", str(memory), *extra]
    if workers > 1:
        argv += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    run = timed_command(argv)
    manifest = json.loads((memory / "manifest.json").read_text())
    return {"wall_s": run["wall_s"], "max_rss_mb": run["max_rss_mb"], "workers": workers,
            "pipeline_s": manifest.get("seconds"), "counts": manifest["counts"]}


def imagededup(folder: Path, workers: int) -> dict:
    run = timed_command([BENCH_PYTHON, str(HERE / "peer_imagededup.py"), "e2e", str(folder),
                         str(DEFAULT_THRESHOLD), str(workers)])
    return {"wall_s": run["wall_s"], "max_rss_mb": run["max_rss_mb"], **json.loads(run["stdout"])}


def speed(args: argparse.Namespace) -> dict:
    root = OUT / "e2e" / f"speed-{args.images}"
    if not (root / "shards").is_dir():
        corpus = make_corpus(root, args.images, folder=True)
        (root / "corpus.json").write_text(json.dumps(corpus))
    corpus = json.loads((root / "corpus.json").read_text())
    result = {"machine_before": machine(), "corpus": corpus, "threshold": DEFAULT_THRESHOLD,
              "workers": args.workers, "runs": []}
    for _ in range(args.repeats):  # the contenders alternate, so a slow spell of the machine hits both
        run = {"memgen": memorize(root / "shards", root / "memory", args.workers),
               "imagededup": imagededup(root / "folder", args.workers)}
        run["speedup"] = run["imagededup"]["wall_s"] / run["memgen"]["wall_s"]
        if args.workers > 1:  # also the default in-process runner (one worker), for reference
            run["memgen_1_worker"] = memorize(root / "shards", root / "memory", 1)
            run["speedup_1_worker"] = run["imagededup"]["wall_s"] / run["memgen_1_worker"]["wall_s"]
        result["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if "speedup" in k}), file=sys.stderr, flush=True)
    result["machine_after"] = machine()
    for key in ("speedup", "speedup_1_worker"):
        if key in result["runs"][0]:
            result[f"{key}_median"] = statistics.median(run[key] for run in result["runs"])
    if not args.keep:
        shutil.rmtree(root)
    return result


def rss(args: argparse.Namespace) -> dict:
    result: dict = {"machine_before": machine(), "runs": []}
    for gb in args.rss_gb:
        root = OUT / "e2e" / f"rss-{gb}gb"
        if not (root / "shards").is_dir():
            corpus = make_corpus(root, int(gb * 1e9 / 100e3), scale=BIG_SCALE, quality=BIG_QUALITY,
                                 shard_size=200, max_bytes=gb * 1e9)
            (root / "corpus.json").write_text(json.dumps(corpus))
        corpus = json.loads((root / "corpus.json").read_text())
        run = memorize(root / "shards", root / "memory", 1)
        result["runs"].append({"gb": gb, "corpus": corpus, **run})
        print(json.dumps(result["runs"][-1]), flush=True)
        if not args.keep:
            shutil.rmtree(root)
    result["machine_after"] = machine()
    first, last = result["runs"][0], result["runs"][-1]
    result["rss_ratio"] = last["max_rss_mb"] / first["max_rss_mb"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("speed", "rss"))
    parser.add_argument("--images", type=at_least(1), default=10_000)
    parser.add_argument("--workers", type=at_least(1), default=2)
    parser.add_argument("--repeats", type=at_least(1), default=3,
                        help="speed: runs of each contender, alternating")
    parser.add_argument("--rss-gb", type=positive_float, nargs="+", default=[1, 4])
    parser.add_argument("--keep", action="store_true", help="keep generated corpora and memories")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    result = speed(args) if args.what == "speed" else rss(args)
    (OUT / f"e2e_{args.what}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
