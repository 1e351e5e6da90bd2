"""NearDedup on a dense group: hashes all within k of each other, the n(n-1)/2 pairs that a
popular image's many re-encodings make. 0 and every hash with one or two of its 64 bits
set (2,081 hashes, 2,164,240 pairs at k = 4), on the in-process FnApiRunner.

    .venv/bin/python -m benchmarks.bench_near_dense
"""
import argparse
import itertools
import time

import apache_beam as beam

from memgen.dedup import ImageGroup
from memgen.records import Fingerprint
from memgen.stages.dedup import NearDedup

K = 4


def groups() -> list[ImageGroup]:
    hashes = [0, *(1 << i for i in range(64)),
              *((1 << i) | (1 << j) for i, j in itertools.combinations(range(64), 2))]
    out = []
    for i, h in enumerate(hashes):
        signed = h - (1 << 64) if h >= 1 << 63 else h
        fp = Fingerprint(0, i, f"#{i}", f"{i:06d}".encode(), signed, 0, 100, 100, "JPEG", 1000 + i)
        out.append(ImageGroup(fp, 1, (fp.shard,)))
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help only
    started = time.perf_counter()
    with beam.Pipeline(runner="FnApiRunner") as p:
        near = p | beam.Create(groups()) | NearDedup(K)
        _ = near["report"] | beam.Map(lambda r: print("pairs", r["pairs"], "components", r["components"]))
        _ = (near["assigned"] | beam.Map(lambda ga: ga[1].representative) | beam.Distinct()
             | beam.combiners.Count.Globally() | beam.Map(lambda n: print("clusters", n)))
    print(f"hashes {len(groups())} wall {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
