"""Per-record CPU cost of each memorize stage, and shuffle bytes per record.

These are the inputs of the cost and time model in deploy/README.md.

Corpus: real photos (../shared/data/realimages: cats, notcats, misc) cropped, resized to
web sizes (longest side 320-800 px) and re-encoded as JPEG, some mirrored or rotated, with
10% byte-identical copies; written once as WebDataset tar shards under
benchmarks/out/stage_costs/ and reused.
Stages are timed with the pure core (what each Beam stage calls) in this process with
time.process_time: read (memgen.readers.read_shard), fingerprint (fast and exact mode),
materialize (the shard re-read + Parquet writes; the rows it writes come from the
single-machine reference dedup, untimed). Then the whole memorize pipeline in-process
(FnApiRunner; its threads count in process_time) gives the rest: dedup and Beam's own
work. NearDedup's cost per distinct hash at scale is bench_near_pipeline.py's, its
search's at web scale mih_bound.py's.
Shuffle bytes: from that run, Beam's own metrics for the input of every GroupByKey
(element count x mean sampled encoded size); the GroupByKeys inside combiners are left
out, since runners (this one and Dataflow) lift them to one accumulator per bundle.
evaluate's classifier: EfficientNet-Lite0 under onnxruntime on one thread, per image
(needs the vision extra).

The pipeline also runs on a tenth of the corpus: the difference of the two runs is the
CPU per record without the runner's fixed start-up.

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
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.metrics import monitoring_infos
from apache_beam.portability.api import beam_runner_api_pb2, metrics_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from PIL import Image, ImageOps

from benchmarks.common import OUT, at_least, machine, photos
from memgen.dedup import (
    CopiesOf,
    DuplicateRow,
    KeptImage,
    assign_groups,
    cluster_nodes,
    exact_group,
    exact_rows,
    hash_node,
    member,
    place,
)
from memgen.fingerprint import FingerprintConfig, fingerprint
from memgen.materialize import write_duplicates, write_images
from memgen.memory import memory_claim, prepare_output, read_manifest
from memgen.pipelines.memorize import MemorizeConfig, build
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Fingerprint, Record, Reject
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


GROUP_BY_KEY = "beam:transform:group_by_key:v1"
COMBINE_PER_KEY = "beam:transform:combine_per_key:v1"
COMBINED = " (combine input, at most)"


def shuffle_bytes(proto: beam_runner_api_pb2.Pipeline,
                  infos: Iterable[metrics_pb2.MonitoringInfo]) -> dict[str, float]:
    """Estimated encoded bytes into each GroupByKey of a finished run, by its name.

    Beam reports, per PCollection, an element count and the encoded sizes of a sample of
    its elements. GroupByKeys inside CombinePerKey are left out (the runner lifts them):
    a combine's input is given instead, under "NAME (combine input, at most)" (COMBINED), the
    bytes it shuffles when nothing combines before the shuffle; totals leave those out.
    """
    counts, sampled = defaultdict(int), defaultdict(lambda: [0, 0])
    for info in infos:
        pcollection = info.labels.get("PCOLLECTION")
        if info.urn == monitoring_infos.ELEMENT_COUNT_URN:
            counts[pcollection] += monitoring_infos.extract_counter_value(info)
        elif info.urn == monitoring_infos.SAMPLED_BYTE_SIZE_URN:
            count, total, _, _ = monitoring_infos.extract_distribution(info)
            sampled[pcollection][0] += count
            sampled[pcollection][1] += total
    transforms = proto.components.transforms
    lifted = {sub for t in transforms.values() if t.spec.urn == COMBINE_PER_KEY for sub in t.subtransforms}
    result = {}
    for transform_id, transform in transforms.items():
        shuffled = transform.spec.urn == GROUP_BY_KEY and transform_id not in lifted
        if shuffled or transform.spec.urn == COMBINE_PER_KEY:
            (pcollection,) = transform.inputs.values()
            n_sampled, total = sampled[pcollection]
            name = transform.unique_name + ("" if shuffled else COMBINED)
            result[name] = counts[pcollection] * total / max(n_sampled, 1)
    return result


def reference_placement(fps: list[Fingerprint], k: int) -> list[tuple[int, KeptImage | DuplicateRow]]:
    """(shard, row) for every fingerprinted record, from the single-machine reference dedup
    (memgen.dedup.cluster_nodes; the pipeline's distributed NearDedup gives the same rows)."""
    by_sha = defaultdict(list)
    for fp in fps:
        by_sha[fp.image_id].append(fp)
    groups = [exact_group(v) for v in by_sha.values()]
    by_phash = defaultdict(list)
    for g in groups:
        by_phash[g.kept.phash].append(g)
    reps = dict(cluster_nodes([hash_node(p, map(member, gs)) for p, gs in by_phash.items()], k))
    placed = [row for p, gs in by_phash.items() for ga in assign_groups(p, gs, reps[p]) for row in place(*ga)]
    copies = [row for _, row in placed if isinstance(row, CopiesOf)]
    return [(s, row) for s, row in placed if not isinstance(row, CopiesOf)] + list(exact_rows(fps, copies))


def run_memorize(folder: Path, memory: str) -> tuple[float, dict[str, float], dict]:
    """(CPU seconds, shuffle bytes by GroupByKey, manifest) of memorize in-process."""
    config = MemorizeConfig((str(folder / "*.tar"),), memory, THRESHOLD, ReaderConfig(), FingerprintConfig())
    claim = memory_claim(memory)
    prepare_output(claim)
    pipeline = beam.Pipeline(runner=FnApiRunner())
    build(pipeline, config, claim)
    proto = pipeline.to_runner_api()  # the ids the run's metrics name PCollections by
    start = time.process_time()
    result = pipeline.run()
    result.wait_until_finish()
    cpu = time.process_time() - start
    return cpu, shuffle_bytes(proto, result.monitoring_infos()), read_manifest(memory)


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
    placed = reference_placement(fps, THRESHOLD)

    by_shard = defaultdict(lambda: ([], []))
    for shard_index, row in placed:
        kept = isinstance(row, KeptImage)
        by_shard[shard_index][0 if kept else 1].append(row if kept else (shard_index, row))
    with tempfile.TemporaryDirectory() as tmp:
        memory = str(Path(tmp) / "memory")
        _, t_write = timed(lambda: [(
            write_images(memory, [shard], by_shard[shard.index][0],
                         [r for r in rejects if r.shard == shard.index], reader),
            write_duplicates(memory, [shard], by_shard[shard.index][1], (), reader)) for shard in shards])
        images_bytes = sum(p.stat().st_size for p in (Path(memory) / "images").glob("*.parquet"))
        wall = time.perf_counter()
        t_pipeline, shuffles, manifest = run_memorize(folder, str(Path(tmp) / "pipeline"))
        wall = time.perf_counter() - wall

    n_kept = sum(isinstance(row, KeptImage) for _, row in placed)
    n_dups = sum(isinstance(row, DuplicateRow) for _, row in placed)
    per = 1 / n
    return {
        "machine": machine(),
        "records": n,
        "shards": len(shards),
        "input_bytes_per_record": sum(len(r.data) for r in records) / n,
        "kept_images": n_kept, "duplicates": n_dups, "rejects": len(rejects),
        "distinct_phashes": len({fp.phash for fp in fps}),
        "cpu_s_per_record": {
            "read": t_read * per,
            "fingerprint_fast": t_fast * per,
            "fingerprint_exact": t_exact / min(EXACT_SUBSET, len(records)),
            "materialize (re-read + parquet)": t_write * per,
            "pure_stages_sum": (t_read + t_fast + t_write) * per,
            "memorize_pipeline_in_process": t_pipeline * per,
        },
        "pipeline_wall_s": wall,
        "pipeline_counts": manifest["counts"],
        "images_parquet_bytes_per_kept_image": images_bytes / max(n_kept, 1),
        "shuffle_bytes_per_record": {k: v * per for k, v in sorted(shuffles.items(), key=lambda kv: -kv[1])},
        "shuffle_bytes_per_record_total": sum(v for k, v in shuffles.items()
                                              if not k.endswith(COMBINED)) * per,
    }


def measure_classifier(batch: int = 32, batches: int = 6) -> dict:
    """evaluate's per-image model cost: EfficientNet-Lite0 (ONNX, one thread) on 224x224 pixels.

    Model only (the decode and resize to 224 px come on top, about a fingerprint's cost).
    Needs the vision extra; {} without it.
    """
    try:
        import onnxruntime as ort

        from memgen.classify.onnx_model import (
            EFFICIENTNET_CAT_CLASSES,
            efficientnet_onnx_path,
            inspect_model,
            to_model_input,
        )
        path = str(efficientnet_onnx_path())
    except ImportError:
        return {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # cost per vCPU
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    spec, _ = inspect_model(path, EFFICIENTNET_CAT_CLASSES)
    pixels = np.frombuffer(hashlib.shake_256(b"pixels").digest(batch * 224 * 224 * 3), dtype=np.uint8)
    x = to_model_input(pixels.reshape(batch, 224, 224, 3), spec)
    name = session.get_inputs()[0].name
    session.run(None, {name: x})  # warm-up
    _, seconds = timed(lambda: [session.run(None, {name: x}) for _ in range(batches)])
    return {"images": batch * batches, "cpu_s_per_image": seconds / (batch * batches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=at_least(10), default=3000,
                        help="at least 10: a tenth of them is timed apart")
    parser.add_argument("--shards", type=at_least(1), default=6)
    args = parser.parse_args()
    result = measure(corpus(args.records, args.shards))
    # A tenth of the corpus through the same pipeline: the difference is the cost per record
    # without the runner's fixed start-up, which a 3,000-record run spreads thinly.
    small = corpus(args.records // 10, max(1, args.shards // 2))
    with tempfile.TemporaryDirectory() as tmp:
        cpu_small = run_memorize(small, str(Path(tmp) / "memory"))[0]
    n_small, n_big, costs = args.records // 10, result["records"], result["cpu_s_per_record"]
    marginal = (costs["memorize_pipeline_in_process"] * n_big - cpu_small) / (n_big - n_small)
    costs["memorize_pipeline_marginal"] = marginal
    result["pipeline_cpu_s_fixed"] = cpu_small - n_small * marginal
    result["evaluate_classifier"] = measure_classifier()
    HERE.mkdir(parents=True, exist_ok=True)
    (HERE / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
