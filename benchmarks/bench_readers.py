"""What each input format costs to read: the same real photos as a folder, a WebDataset tar
(plain, gzip and zstd at their tools' default levels), a zip (stored and deflated), a WARC
(gzip per record), a TFRecord (img2dataset's layout), Parquet (bytes, a list per row,
base64 text), an Arrow IPC stream (as Hugging Face datasets writes one) and MDS shards
(MosaicML Streaming's MDSWriter's, plain and zstd), read by
memgen's reader alone (read_shard: bytes, captions, metadata; no decode). Records per
second, the best of --rounds, and each format's time over the tar's.

    .venv/bin/python -m benchmarks.bench_readers [--copies 8] [--rounds 3]
Inputs go to benchmarks/out/readers/ (gitignored): --copies times the photos under other
names, so that a read is long enough to time.

    .venv/bin/python -m benchmarks.bench_readers --metadata-rows 1000000
instead reads an ImageFolder metadata.jsonl of that many rows (imagefolder.named_rows): the
seconds to read it, the memory its rows hold once read (tracemalloc and pyarrow's), and the
microseconds an image's row takes to find.
"""

from __future__ import annotations

import argparse
import base64
import gc
import gzip
import io
import json
import shutil
import sys
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import tfrecord
import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from benchmarks.common import IMAGE_SUFFIXES, OUT, at_least, machine, require_realimages
from memgen.imagefolder import named_rows, row_in
from memgen.readers import ReaderConfig, read_shard
from memgen.shards import discover

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from shardkit import write_mds  # noqa: E402 - the tests' MDS writer (streaming's own, loaded without torch)


def photos(copies: int) -> list[tuple[str, bytes]]:
    root = require_realimages()
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    # a.gif beside a.png: each its own stem, so each has its own caption file and tar sample
    return [(f"c{c}/{p.parent.relative_to(root)}/{p.stem}_{p.suffix[1:]}{p.suffix}", p.read_bytes())
            for c in range(copies) for p in found]


def write_inputs(root: Path, images: list[tuple[str, bytes]]) -> dict[str, Path]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    folder = root / "folder"
    for name, data in images:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        (folder / name).with_suffix(".txt").write_text(f"caption of {name}")
    with tarfile.open(root / "photos.tar", "w") as tar:
        for name, data in images:
            caption = (str(Path(name).with_suffix(".txt")), f"caption of {name}".encode())
            for member, body in ((name, data), caption):
                info = tarfile.TarInfo(member)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    plain = (root / "photos.tar").read_bytes()
    (root / "photos.tar.gz").write_bytes(gzip.compress(plain, compresslevel=6))  # gzip's and tar -z's level
    (root / "photos.tar.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(plain))  # zstd's
    for label, method in (("stored", zipfile.ZIP_STORED), ("deflated", zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(root / f"photos-{label}.zip", "w", method) as archive:
            for name, data in images:
                archive.writestr(name, data)
                archive.writestr(str(Path(name).with_suffix(".txt")), f"caption of {name}")
    with open(root / "crawl.warc.gz", "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for name, data in images:
            http = StatusAndHeaders("200 OK", [("Content-Type", "image/jpeg")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(f"http://site/{name}", "response",
                                                          payload=io.BytesIO(data), http_headers=http))
    examples = tfrecord.TFRecordWriter(str(root / "photos.tfrecord"))
    for name, data in images:  # as img2dataset writes a sample
        examples.write({"key": (name.encode(), "byte"), "jpg": (data, "byte"),
                        "txt": (f"caption of {name}".encode(), "byte")})
    examples.close()
    datas = [data for _, data in images]
    table = pa.table({"jpg": datas, "caption": [f"caption of {n}" for n, _ in images]})
    pq.write_table(table, root / "bytes.parquet")
    with pa.ipc.new_stream(root / "bytes.arrow", table.schema) as stream:
        stream.write_table(table, max_chunksize=100)  # datasets' batch of an image dataset
    pq.write_table(pa.table({"images": pa.array([datas[i: i + 4] for i in range(0, len(datas), 4)],
                                                pa.list_(pa.binary()))}), root / "lists.parquet")
    pq.write_table(pa.table({"b64": [base64.b64encode(d).decode() for d in datas]}), root / "base64.parquet")
    rows = [{"jpg": data, "caption": f"caption of {name}"} for name, data in images]
    for compression in (None, "zstd"):  # MDSWriter's default shard size, 64 MiB before compression
        write_mds(root / f"mds-{compression or 'plain'}", {"jpg": "bytes", "caption": "str"}, rows,
                  compression=compression)
    return {"folder": folder, "tar": root / "photos.tar", "tar.gz": root / "photos.tar.gz",
            "tar.zst": root / "photos.tar.zst", "zip (stored)": root / "photos-stored.zip",
            "zip (deflated)": root / "photos-deflated.zip", "WARC (.warc.gz)": root / "crawl.warc.gz",
            "TFRecord": root / "photos.tfrecord",
            "Parquet (bytes)": root / "bytes.parquet", "Parquet (a list a row)": root / "lists.parquet",
            "Parquet (base64)": root / "base64.parquet", "Arrow IPC stream": root / "bytes.arrow",
            "MDS (.mds)": root / "mds-plain", "MDS (.mds.zstd)": root / "mds-zstd"}


def read_seconds(path: Path, config: ReaderConfig) -> tuple[float, int]:
    shards = discover([str(path)])
    t0 = time.perf_counter()
    n = sum(1 for shard in shards for _ in read_shard(shard, config))
    return time.perf_counter() - t0, n


def metadata_jsonl(n: int) -> bytes:
    """A diffusers-style metadata.jsonl: a file_name, a caption and two numbers a row."""
    return "\n".join(json.dumps({"file_name": f"train/{i:08d}.jpg", "text": f"a photo of a cat number {i} "
                                 "sitting on a mat in the sun", "width": 512, "aesthetic": 5.5})
                     for i in range(n)).encode()


def held_bytes(n: int) -> tuple[int, int]:
    """(bytes that the rows of an n-row metadata.jsonl hold once read, the file's bytes
    included; the most that reading them took beside the file), by tracemalloc (Python objects,
    numpy) and pyarrow's pool. Traced alone: tracemalloc slows a read ~3x."""
    gc.collect()
    tracemalloc.start()
    data, arrow = metadata_jsonl(n), pa.total_allocated_bytes()
    tracemalloc.reset_peak()
    rows = named_rows("m/metadata.jsonl", data)
    peak = tracemalloc.get_traced_memory()[1] - len(data)
    del data
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - arrow
    tracemalloc.stop()
    assert len(rows) == n
    return held, peak


def metadata_rows(n: int, rounds: int) -> None:
    named_rows("warm/metadata.jsonl", metadata_jsonl(100))  # imports and first calls not timed
    data = metadata_jsonl(n)
    seconds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        rows = named_rows("m/metadata.jsonl", data)
        seconds.append(time.perf_counter() - t0)
    images = [f"m/train/{i:08d}.jpg" for i in range(0, n, max(1, n // 10_000))]
    t0 = time.perf_counter()
    found = sum(row_in(rows, "m/metadata.jsonl", image) is not None for image in images)
    lookup = (time.perf_counter() - t0) / len(images)
    assert found == len(images)
    del rows
    held, peak = held_bytes(n)
    print(f"metadata.jsonl of {n} rows, {len(data) / 1e6:.0f} MB; {machine()}")
    print(f"read {min(seconds):.2f} s (best of {rounds}); rows held {held / 1e6:.0f} MB "
          f"({held / n:.0f} B a row), {peak / 1e6:.0f} MB more at most while read; "
          f"{lookup * 1e6:.1f} us an image's row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=at_least(1), default=8)
    parser.add_argument("--rounds", type=at_least(1), default=3)
    parser.add_argument("--metadata-rows", type=at_least(1), default=None,
                        help="read an ImageFolder metadata.jsonl of this many rows instead of the photos")
    args = parser.parse_args()
    if args.metadata_rows:
        metadata_rows(args.metadata_rows, args.rounds)
        return
    images = photos(args.copies)
    inputs = write_inputs(OUT / "readers", images)
    configs = {"Parquet (base64)": ReaderConfig(image_column="b64"),
               "Parquet (a list a row)": ReaderConfig(image_column="images")}
    best = {}
    for label, path in inputs.items():
        runs = [read_seconds(path, configs.get(label, ReaderConfig())) for _ in range(args.rounds)]
        best[label] = min(runs)
    tar = best["tar"][0]
    print(f"{len(images)} photos, {sum(len(d) for _, d in images) / 1e6:.0f} MB; {machine()}")
    print(f"{'format':24s} {'records':>8s} {'records/s':>10s} {'x tar':>6s}")
    for label, (seconds, n) in best.items():
        print(f"{label:24s} {n:8d} {n / seconds:10.0f} {seconds / tar:6.2f}")


if __name__ == "__main__":
    main()
