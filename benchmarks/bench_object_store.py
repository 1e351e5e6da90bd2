"""Requests each job sends to an object store, counted on a loopback S3 server (moto).

    .venv/bin/python -m benchmarks.bench_object_store [--parts 120]

Writes PARTS one-shard tars of 3 JPEGs, memorizes them into s3://bench/memory (one images
part a shard), then runs sample and evaluate (caption classifier, no embedding) on it and
counts the server's requests by method and object during each job. On a real object store
each request is a round trip of 10-50 ms, so a job that asks several times per part is
slow before it computes anything. Result: benchmarks/out/object_store.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import OUT, at_least, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from shardkit import jpeg, sample, write_tar  # noqa: E402 - the tests' shard writer

# "HEAD /bench HTTP/1.1": the bucket ends at a space too, or the protocol reads as the object
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) /[^/? ]+/?([^? ]*)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int) -> None:
    """Until the server takes connections (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"the S3 server on port {port} did not start")


def _requests(log: Path, start: int) -> tuple[int, dict[str, int]]:
    """(lines read, requests by 'METHOD object kind') in the server's log from line `start`."""
    lines = log.read_text().splitlines()
    counts: collections.Counter[str] = collections.Counter()
    for line in lines[start:]:
        found = _REQUEST.search(re.sub(r"\x1b\[[0-9;]*m", "", line))  # the log is coloured
        if found:
            method, key = found.groups()
            counts[f"{method} {re.sub(r'part-[0-9]+', 'part-N', key.split('/', 1)[-1]) or '(bucket)'}"] += 1
    return len(lines), dict(counts.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=at_least(1), default=120)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-object-store-"))
    shards = work / "shards"
    shards.mkdir()
    for i in range(args.parts):
        write_tar(shards / f"shard-{i:04d}.tar", [sample(f"s{i}k{j}", jpeg(1000 * i + j)) for j in range(3)])
    port, log = _free_port(), work / "server.log"
    with log.open("w") as sink:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=sink, stderr=sink)
    env = dict(os.environ, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
               AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        _wait_for(port)
        subprocess.run([sys.executable, "-c", "import fsspec; fsspec.filesystem('s3').mkdir('bench')"],
                       env=env, check=True)
        cli = [sys.executable, "-m", "memgen.pipelines.cli"]
        jobs = {"memorize": ["memorize", str(shards / "*.tar"), "--memory", "s3://bench/memory"],
                "sample": ["sample", "--memory", "s3://bench/memory", "--n", "10", "--out", str(work / "s")],
                "evaluate": ["evaluate", "--memory", "s3://bench/memory", "--out", str(work / "r"),
                             "--classifier", "caption", "--embedding=false"]}
        results, seen = {}, _requests(log, 0)[0]
        for name, argv in jobs.items():
            started = time.perf_counter()
            subprocess.run(cli + argv, env=env, check=True, capture_output=True)
            wall = time.perf_counter() - started
            seen, counts = _requests(log, seen)
            results[name] = {"wall_s": round(wall, 1), "requests": sum(counts.values()),
                             "per_part": round(sum(counts.values()) / args.parts, 2), "by_kind": counts}
            print(f"{name}: {wall:.1f} s, {sum(counts.values())} requests "
                  f"({sum(counts.values()) / args.parts:.2f} a part): {counts}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "object_store.json").write_text(json.dumps(
        {"parts": args.parts, "machine": machine(), "jobs": results}, indent=2))


if __name__ == "__main__":
    main()
