"""Scaling of the NearDedup stage (the whole Beam transform) on the in-process FnApiRunner.

n distinct synthetic 64-bit hashes, 10% of them planted copies 1-10 bits from a base,
k = 10. Prints wall and CPU time per item, peak RSS, the search plan and convergence
record, and how many planted pairs end with one representative (chain splits can
separate two copies of one base: they may be up to 2k bits apart).

    .venv/bin/python -m benchmarks.bench_near_pipeline 100000
    .venv/bin/python -m benchmarks.bench_near_pipeline 1000000
"""
import argparse
import resource
import time

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from memgen.dedup import ImageGroup
from memgen.records import Fingerprint
from memgen.stages.dedup import NearDedup

K = 10
CHUNK = 10_000

def chunk(c):
    rng = np.random.default_rng(c)
    n_copy = CHUNK // 10
    base = rng.integers(0, 2**64, CHUNK - n_copy, dtype=np.uint64)
    src = rng.integers(0, len(base), n_copy)
    copies = base[src].copy()
    for j in range(n_copy):
        for bit in rng.choice(64, rng.integers(1, K + 1), replace=False):
            copies[j] ^= np.uint64(1) << np.uint64(bit)
    hashes = np.concatenate([base, copies]).view(np.int64).tolist()
    w = rng.integers(50, 500, CHUNK).tolist()
    out = []
    for i, h in enumerate(hashes):
        fp = Fingerprint(c, i, f"#{i}", f"{c:05d}{i:06d}".encode(), h, 0, w[i], 100, "JPEG", 1000 + i)
        out.append(ImageGroup(fp, 1, (fp.shard,)))
    planted = [(f"{c:05d}{int(s):06d}".encode(), f"{c:05d}{len(base) + j:06d}".encode())
               for j, s in enumerate(src)]
    return out, planted

def groups_of(c): return chunk(c)[0]
def planted_keys(c):
    for pid, (b, cp) in enumerate(chunk(c)[1]):
        yield b, (c, pid)
        yield cp, (c, pid)

def main(n):
    chunks = n // CHUNK
    opts = PipelineOptions(["--direct_num_workers=1"])
    t = time.perf_counter()
    p = beam.Pipeline(runner="FnApiRunner", options=opts)
    seeds = p | beam.Create(list(range(chunks)), reshuffle=False)
    groups = seeds | "Gen" >> beam.FlatMap(groups_of)
    near = groups | NearDedup(K)
    assignments = near["assigned"] | "Assignments" >> beam.Values()
    reps = assignments | beam.Map(lambda a: (a.image_id, a.representative))
    pairs = seeds | "Planted" >> beam.FlatMap(planted_keys)
    same = ({"rep": reps, "pair": pairs} | "JoinPlanted" >> beam.CoGroupByKey()
            | beam.FlatMap(lambda kv: [(pid, kv[1]["rep"][0]) for pid in kv[1]["pair"]])
            | "ByPair" >> beam.GroupByKey()
            | beam.Map(lambda kv: len(set(kv[1])) == 1)
            | beam.combiners.Count.PerElement())
    same | "PrintSame" >> beam.Map(lambda x: print("planted pair same representative:", x, flush=True))
    near["report"] | beam.Map(lambda r: print("report:", r, flush=True))
    assignments | beam.combiners.Count.Globally() | beam.Map(lambda x: print("assignments:", x, flush=True))
    result = p.run()
    result.wait_until_finish()
    dt = time.perf_counter() - t
    for c in result.metrics().query()["counters"]:
        if c.key.metric.name.startswith("near_"):
            print(c.key.metric.name, c.committed)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    print(f"n={n} wall={dt:.1f}s per_item={dt / n * 1e6:.1f}us cpu={cpu:.1f}s "
          f"cpu_per_item={cpu / n * 1e6:.1f}us "
          f"maxrss={ru.ru_maxrss / 1e6:.2f}GB", flush=True)

def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help=f"distinct synthetic hashes, a multiple of {CHUNK:,} "
                                            "(e.g. 100000, 1000000)")
    args = parser.parse_args(argv)
    if args.n < CHUNK or args.n % CHUNK:  # made in chunks: another n would time fewer hashes than n
        parser.error(f"n must be a positive multiple of {CHUNK:,}")
    return args

if __name__ == "__main__":
    main(arguments().n)
