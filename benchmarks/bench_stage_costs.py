"""Per-record CPU cost of each memorize stage, and shuffle bytes per record.

These are the inputs of the cost and time model in deploy/README.md.

Corpus: real photos (../shared/data/realimages: cats, notcats, misc) cropped, resized to
web sizes (longest side 320-800 px) and re-encoded as JPEG, some mirrored or rotated, with
10% byte-identical copies; written once as WebDataset tar shards under
benchmarks/out/stage_costs/ and reused.
Stages are timed with the pure core (what each Beam stage calls) in this process with
time.process_time: read (memgen.readers.read_shard), fingerprint (fast and exact mode),
dedup (exact groups, hash nodes, clustering, assignment, placement), materialize (the
shard re-read + Parquet writes). Then the whole `memgen memorize` pipeline in-process
(FnApiRunner; its threads count in process_time) gives the Beam overhead.
Shuffle bytes: the elements each GroupByKey/CoGroupByKey of memorize moves, encoded with
Beam's coder for them (FastPrimitivesCoder, the coder of an untyped PCollection).
NearDedup clusters every distinct pHash on one worker: its CPU and memory per node are
measured on --cluster_nodes synthetic random hashes. evaluate's classifier: EfficientNet-
Lite0 under onnxruntime on one thread, per image (needs the vision extra).

usage: .venv/bin/python -m benchmarks.bench_stage_costs [--records 3000] [--shards 6]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import time
import tracemalloc
import typing
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import numpy as np
from PIL import Image, ImageOps

from benchmarks.common import OUT, machine, photos
from memgen.dedup import (
    DuplicateRow,
    HashNode,
    KeptImage,
    Member,
    assign_members,
    cluster_nodes,
    exact_group,
    hash_node,
    member,
    place,
)
from memgen.fingerprint import FingerprintConfig, fingerprint
from memgen.materialize import materialize_shard
from memgen.pipelines.cli import main as memgen_main
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject
from memgen.shards import discover

HERE = OUT / "stage_costs"
THRESHOLD = 10
EXACT_SUBSET = 500  # exact mode decodes at full size: time it on fewer records
SIDES = (320, 480, 640, 800)
QUALITIES = (75, 85, 90)


def _unit(i: int, salt: str) -> float:
    """A deterministic number in [0, 1) for record i (no `random`)."""
    digest = hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def web_jpeg(photo: Path, i: int) -> bytes:
    """Record i's variant of a photo: a crop, a web size, a JPEG quality, maybe a flip/turn."""
    with Image.open(photo) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        w, h = img.size
        keep = 0.8 + 0.2 * _unit(i, "crop")
        cw, ch = int(w * keep), int(h * keep)
        x, y = int((w - cw) * _unit(i, "x")), int((h - ch) * _unit(i, "y"))
        img = img.crop((x, y, x + cw, y + ch))
        side = SIDES[int(_unit(i, "side") * len(SIDES))]
        img.thumbnail((side, side))
        turn = int(_unit(i, "turn") * 4)
        if turn == 1:
            img = ImageOps.mirror(img)
        elif turn == 2:
            img = img.rotate(90, expand=True)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=QUALITIES[int(_unit(i, "q") * len(QUALITIES))])
        return out.getvalue()


def write_corpus(folder: Path, n_records: int, n_shards: int) -> list[Path]:
    files = photos(("cats", "notcats", "misc"))
    folder.mkdir(parents=True, exist_ok=True)
    made: list[bytes] = []
    per_shard = -(-n_records // n_shards)
    paths = []
    for s in range(n_shards):
        path = folder / f"shard-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s * per_shard, min(n_records, (s + 1) * per_shard)):
                if made and _unit(i, "copy") < 0.10:  # a byte-identical copy of an earlier record
                    data = made[int(_unit(i, "which") * len(made))]
                else:
                    data = web_jpeg(files[i % len(files)], i)
                made.append(data)
                for ext, payload in (("jpg", data), ("txt", f"photo {i}".encode()),
                                     ("json", json.dumps({"url": f"https://example.com/{i}.jpg"}).encode())):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        paths.append(path)
    return paths


def corpus(n_records: int, n_shards: int) -> Path:
    folder = HERE / f"corpus-{n_records}-{n_shards}"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_corpus(folder, n_records, n_shards)
        (folder / "done").write_text("")
    return folder


def timed(fn, *args):
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def encoded_bytes(elements) -> int:
    coder = beam.coders.registry.get_coder(typing.Any)
    return sum(len(coder.encode(e)) for e in elements)


def measure(folder: Path) -> dict:
    shards = discover([str(folder / "*.tar")])
    reader = ReaderConfig()
    items, t_read = timed(lambda: [item for shard in shards for item in read_shard(shard, reader)])
    records = [r for r in items if isinstance(r, Record)]
    n = len(items)

    fast = FingerprintConfig("fast")
    results, t_fast = timed(lambda: [fingerprint(r, fast) for r in records])
    _, t_exact = timed(lambda: [fingerprint(r, FingerprintConfig("exact")) for r in records[:EXACT_SUBSET]])
    fps = [f for f in results if not isinstance(f, Reject)]
    rejects = [f for f in results if isinstance(f, Reject)]

    def dedup():
        by_sha = defaultdict(list)
        for fp in fps:
            by_sha[fp.image_id].append(fp)
        groups = [exact_group(v) for v in by_sha.values()]
        by_phash = defaultdict(list)
        for g in groups:
            by_phash[g.kept.phash].append(member(g))
        nodes = [hash_node(p, m) for p, m in by_phash.items()]
        reps = dict(cluster_nodes(nodes, THRESHOLD))
        assignments = {a.image_id: a for p, m in by_phash.items() for a in assign_members(p, m, reps[p])}
        placed = [row for g in groups for row in place(g, assignments[g.kept.image_id])]
        return by_sha, groups, by_phash, nodes, reps, assignments, placed

    (by_sha, groups, by_phash, nodes, reps, assignments, placed), t_dedup = timed(dedup)
    _, t_cluster = timed(cluster_nodes, nodes, THRESHOLD)

    by_shard = defaultdict(lambda: ([], []))
    for shard_index, row in placed:
        by_shard[shard_index][0 if isinstance(row, KeptImage) else 1].append(row)
    with tempfile.TemporaryDirectory() as tmp:
        memory = str(Path(tmp) / "memory")
        _, t_write = timed(lambda: [materialize_shard(
            memory, shard, by_shard[shard.index][0], by_shard[shard.index][1],
            [r for r in rejects if r.shard == shard.index], reader) for shard in shards])
        images_bytes = sum(p.stat().st_size for p in (Path(memory) / "images").glob("*.parquet"))

        pipeline_memory = str(Path(tmp) / "pipeline")
        wall = time.perf_counter()
        _, t_pipeline = timed(memgen_main, ["memorize", str(folder / "*.tar"), "--memory", pipeline_memory,
                                            "--threshold", str(THRESHOLD)])
        wall = time.perf_counter() - wall
        manifest = json.loads((Path(pipeline_memory) / "manifest.json").read_text())

    shuffles = {
        "GroupBySha256 (image_id, Fingerprint)": encoded_bytes((fp.image_id, fp) for fp in fps),
        "GroupByPhash (phash, Member)": encoded_bytes((g.kept.phash, member(g)) for g in groups),
        "AllNodes -> one worker (HashNode)": encoded_bytes(nodes),
        "JoinNodeRep (phash, NodeRep)": encoded_bytes(reps.items()),
        "JoinAssignment (image_id, ImageGroup | Assignment)": encoded_bytes(
            [(g.kept.image_id, g) for g in groups] + list(assignments.items())),
        "GroupByShard (shard, KeptImage | DuplicateRow | Reject)": encoded_bytes(
            placed + [(r.shard, r) for r in rejects]),
    }
    n_kept = sum(isinstance(row, KeptImage) for _, row in placed)
    n_dups = sum(isinstance(row, DuplicateRow) for _, row in placed)
    per = 1 / n
    return {
        "machine": machine(),
        "records": n,
        "shards": len(shards),
        "input_bytes_per_record": sum(len(r.data) for r in records) / n,
        "kept_images": n_kept, "duplicates": n_dups, "rejects": len(rejects),
        "distinct_phash_nodes": len(nodes),
        "cpu_s_per_record": {
            "read": t_read * per,
            "fingerprint_fast": t_fast * per,
            "fingerprint_exact": t_exact / min(EXACT_SUBSET, len(records)),
            "dedup_total": t_dedup * per,
            "dedup_cluster_only (one worker)": t_cluster * per,
            "materialize (re-read + parquet)": t_write * per,
            "pure_stages_sum": (t_read + t_fast + t_dedup + t_write) * per,
            "memorize_pipeline_in_process": t_pipeline * per,
        },
        "pipeline_wall_s": wall,
        "pipeline_counts": manifest["counts"],
        "images_parquet_bytes_per_kept_image": images_bytes / max(n_kept, 1),
        "shuffle_bytes_per_record": {k: v * per for k, v in shuffles.items()},
        "shuffle_bytes_per_record_total": sum(shuffles.values()) * per,
    }


def synthetic_nodes(n_nodes: int) -> list[HashNode]:
    """n distinct random pHashes, each a node standing for one image."""
    nodes = []
    for i in range(n_nodes):
        digest = hashlib.blake2b(i.to_bytes(8, "big"), digest_size=40).digest()
        image_id = digest[8:].hex()
        preference = (-250_000, -30_000, image_id, i // 500, i % 500)
        nodes.append(HashNode(int.from_bytes(digest[:8], "big", signed=True),
                              Member(preference, image_id, 1), 1))
    return nodes


def measure_cluster(n_nodes: int) -> dict:
    """NearDedup's one-worker step at scale: cluster_nodes on n distinct random pHashes.

    CPU seconds per node (plain run), and peak Python + numpy memory per node (a second
    run under tracemalloc, which numpy reports to): the node list plus the clustering.
    """
    nodes = synthetic_nodes(n_nodes)
    _, seconds = timed(cluster_nodes, nodes, THRESHOLD)
    del nodes
    tracemalloc.start()
    cluster_nodes(synthetic_nodes(n_nodes), THRESHOLD)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"nodes": n_nodes, "cpu_s_per_node": seconds / n_nodes, "peak_bytes_per_node": peak / n_nodes}


def measure_classifier(batch: int = 32, batches: int = 6) -> dict:
    """evaluate's per-image model cost: EfficientNet-Lite0 (ONNX, one thread) on 224x224 pixels.

    Model only (the decode and resize to 224 px come on top, about a fingerprint's cost).
    Needs the vision extra; {} without it.
    """
    try:
        import onnxruntime as ort

        from memgen.classify.onnx_model import efficientnet_onnx_path, inspect_input, to_model_input
        path = str(efficientnet_onnx_path())
    except ImportError:
        return {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # cost per vCPU
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    spec = inspect_input(path)
    pixels = np.frombuffer(hashlib.shake_256(b"pixels").digest(batch * 224 * 224 * 3), dtype=np.uint8)
    x = to_model_input(pixels.reshape(batch, 224, 224, 3), spec)
    name = session.get_inputs()[0].name
    session.run(None, {name: x})  # warm-up
    _, seconds = timed(lambda: [session.run(None, {name: x}) for _ in range(batches)])
    return {"images": batch * batches, "cpu_s_per_image": seconds / (batch * batches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--cluster_nodes", type=int, default=200_000,
                        help="distinct pHash nodes for the one-worker clustering measurement")
    args = parser.parse_args()
    result = measure(corpus(args.records, args.shards))
    result["cluster_at_scale"] = measure_cluster(args.cluster_nodes)
    result["evaluate_classifier"] = measure_classifier()
    HERE.mkdir(parents=True, exist_ok=True)
    (HERE / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
