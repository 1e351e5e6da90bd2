"""Benchmark `memgen sample` on a large fingerprint-only memory (local runner).

Builds (once, reused) a memory of --rows image rows in --parts Parquet parts whose
image bytes are empty (fingerprint-only rows: the sampler reads image_id and copies
only; the writers then copy whatever bytes there are), then times the `memgen sample`
command line for each format asked.

    .venv/bin/python benchmarks/bench_sample.py --rows 1000000 --n 100000
    .venv/bin/python benchmarks/bench_sample.py --formats webdataset,parquet --beam \
        "--direct_num_workers=2 --direct_running_mode=multi_processing"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memgen.memory import read_manifest, write_manifest
from memgen.schema import table_schema

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a path too, as its README line does
from benchmarks.common import at_least  # noqa: E402


def build_memory(memory: Path, rows: int, parts: int) -> None:
    """Fingerprint-only rows: real ids and heavy-tailed copies, empty image bytes."""
    if read_manifest(str(memory)) is not None:
        return
    shutil.rmtree(memory, ignore_errors=True)
    rng = np.random.default_rng(0)  # seeded: the same memory every time
    schema = table_schema("images")
    bounds = np.linspace(0, rows, parts + 1).astype(int)
    for k in range(parts):
        lo, hi = bounds[k], bounds[k + 1]
        count = hi - lo
        ids = [hashlib.sha256(i.to_bytes(8, "big")).hexdigest() for i in range(lo, hi)]
        table = pa.table({
            "image_id": ids,
            "phash": rng.integers(-(2**63), 2**63 - 1, count, dtype=np.int64),
            "dhash": rng.integers(-(2**63), 2**63 - 1, count, dtype=np.int64),
            "width": np.full(count, 256, np.int32),
            "height": np.full(count, 256, np.int32),
            "format": ["JPEG"] * count,
            "n_bytes": np.zeros(count, np.int64),
            "image": pa.array([b""] * count, pa.binary()),
            "caption": [f"caption {i}" for i in range(lo, hi)],
            "url": [f"https://example.com/{i}.jpg" for i in range(lo, hi)],
            "metadata": ["{}"] * count,
            "source": [f"shard-{k:05d}.tar#{i:09d}" for i in range(lo, hi)],
            "copies": np.minimum(rng.zipf(2.0, count), 10_000).astype(np.int64),
            "exact_copies": np.ones(count, np.int64),
        }, schema=schema)
        out = memory / "images" / f"part-{k:06d}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out, compression="zstd")
    write_manifest(str(memory), {"job": "memorize", "counts": {"images": rows}})


def _children_cpu() -> float:
    """CPU seconds of finished child processes: a fair figure when the machine is shared."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=at_least(1), default=1_000_000)
    parser.add_argument("--parts", type=at_least(1), default=20)
    parser.add_argument("--n", type=at_least(1), default=100_000)
    parser.add_argument("--formats", default="webdataset", help="comma-separated")
    parser.add_argument("--weighted", action="store_true")
    parser.add_argument("--beam", default="", help="extra Beam flags, one string")
    parser.add_argument("--work", default="/tmp/memgen-bench-sample")
    args = parser.parse_args()
    work = Path(args.work)
    memory = work / f"memory-{args.rows}-{args.parts}"
    started = time.perf_counter()
    build_memory(memory, args.rows, args.parts)
    print(f"memory: {args.rows} rows in {args.parts} parts ({time.perf_counter() - started:.1f} s)")
    memgen = Path(sys.executable).with_name("memgen")
    for fmt in args.formats.split(","):
        out = work / f"sample-{fmt}"
        shutil.rmtree(out, ignore_errors=True)
        command = [str(memgen), "sample", "--memory", str(memory), "--n", str(args.n), "--seed", "0",
                   "--out", str(out), "--format", fmt, *(["--weighted"] if args.weighted else []),
                   *shlex.split(args.beam)]
        started, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
        manifest = json.loads((out / "manifest.json").read_text())
        print(json.dumps({"format": fmt, "rows": args.rows, "n": args.n, "weighted": args.weighted,
                          "beam": args.beam, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                          "pipeline_s": manifest["seconds"], "sampled": manifest["counts"]["images"],
                          "files": len(manifest["files"]), "command": shlex.join(command)}))


if __name__ == "__main__":
    main()
