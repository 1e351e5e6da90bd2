"""Near-duplicate threshold calibration: pairwise precision/recall vs pHash distance.

Ground truth: realimages/neardup/groups.csv; two files are duplicates when they share
a picture_id. Every unordered pair of the neardup files is one trial; a method calls
it a duplicate when the Hamming distance of the two 64-bit pHashes is <= t. Hashes:
memgen's fingerprint() in fast (default) and exact mode, fast mode with `--orientations
any` (each image's canonical orientation), and imagededup's PHash (benchmark venv, see
peer_imagededup.py). Distances are computed brute force (193
files), so the table measures the hashes, not a search structure.

Per transform: the share of its files that have some other file of the same picture
within t, i.e. that would be caught as a copy (pairs with the picture's original alone
would miss e.g. a PNG of the Pillow crop of Grace Hopper, whose twin is the Pillow JPEG).

Extra evidence for precision at scale: how many pairs of the ~450 cats/notcats/misc
photos (no ground truth, almost all different pictures) fall within t.

    .venv/bin/python -m benchmarks.calibrate     # writes benchmarks/out/calibration.{json,md}
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import OUT, hex_to_uint64, machine, peer, photos, require_realimages
from memgen.fingerprint import FingerprintConfig, fingerprint, int64_to_uint64
from memgen.records import Fingerprint, Record

THRESHOLDS = range(0, 13)
METHODS = ("memgen-fast", "memgen-exact", "memgen-any", "imagededup")


@dataclass(frozen=True)
class Truth:
    files: list[str]
    picture: list[str]
    label: list[str]  # "kind: transform" of each file
    original: list[bool]  # the picture's reference file


def load_truth(root: Path) -> Truth:
    with open(root / "neardup" / "groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return Truth(
        files=[str(root / "neardup" / r["file"]) for r in rows],
        picture=[r["picture_id"] for r in rows],
        label=[f"{r['kind']}: {r['transform']}" for r in rows],
        original=[r["transform"].startswith("original") for r in rows],
    )


def distance_matrix(hashes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances; 65 (never within any threshold) where a hash is missing."""
    h = np.asarray(hashes, dtype=np.uint64)
    d = np.bitwise_count(h[:, None] ^ h[None, :]).astype(np.int64)
    d[~valid, :] = 65
    d[:, ~valid] = 65
    return d


def pair_metrics(dist: np.ndarray, same: np.ndarray, t: int) -> dict:
    """Precision/recall over unordered pairs i < j: predicted = dist <= t, truth = same."""
    iu = np.triu_indices(len(dist), k=1)
    predicted, truth = dist[iu] <= t, same[iu]
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"t": t, "tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def partner_distance(dist: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Each file's distance to its nearest other file of the same picture (65: none)."""
    masked = np.where(same & ~np.eye(len(dist), dtype=bool), dist, 65)
    return masked.min(axis=1)


def collisions(dist: np.ndarray, t: int) -> int:
    return int(np.sum(dist[np.triu_indices(len(dist), k=1)] <= t))


def memgen_hashes(files: list[str], mode: str,
                  orientations: str = "upright") -> tuple[np.ndarray, np.ndarray]:
    config = FingerprintConfig(mode, orientations=orientations)
    values, valid = [], []
    for n, path in enumerate(files):
        result = fingerprint(Record(0, n, path, Path(path).read_bytes()), config)
        ok = isinstance(result, Fingerprint)
        values.append(result.phash if ok else 0)
        valid.append(ok)
    return int64_to_uint64(np.array(values, dtype=np.int64)), np.array(valid)


def imagededup_hashes(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    result = peer("hash", *files)
    return hex_to_uint64([result[f] for f in files])


def calibrate() -> dict:
    root = require_realimages()
    truth = load_truth(root)
    others = [str(p) for p in photos(("cats", "notcats", "misc"))]
    same = np.array(truth.picture)[:, None] == np.array(truth.picture)[None, :]
    labels = sorted(set(truth.label))
    hashers = {
        "memgen-fast": lambda fs: memgen_hashes(fs, "fast"),
        "memgen-exact": lambda fs: memgen_hashes(fs, "exact"),
        "memgen-any": lambda fs: memgen_hashes(fs, "fast", "any"),
        "imagededup": imagededup_hashes,
    }
    result: dict = {"machine": machine(), "n_files": len(truth.files), "n_other": len(others),
                    "true_pairs": int(np.triu(same, k=1).sum()), "methods": {}}
    for method, hasher in hashers.items():
        dist = distance_matrix(*hasher(truth.files))
        other_dist = distance_matrix(*hasher(others))
        result["methods"][method] = {
            "overall": [pair_metrics(dist, same, t) for t in THRESHOLDS],
            "other_collisions": [collisions(other_dist, t) for t in THRESHOLDS],
            "per_transform": {
                label: sorted(int(d) for d, lab in zip(partner_distance(dist, same), truth.label,
                                                       strict=True) if lab == label)
                for label in labels
            },
            "false_pairs": _false_pairs(dist, same, truth),
        }
    return result


def _false_pairs(dist: np.ndarray, same: np.ndarray, truth: Truth) -> list[tuple[int, str, str]]:
    """Different-picture pairs within the largest threshold (distance, file, file)."""
    i, j = np.nonzero(np.triu((dist <= max(THRESHOLDS)) & ~same, k=1))
    return sorted((int(dist[a, b]), Path(truth.files[a]).name, Path(truth.files[b]).name)
                  for a, b in zip(i, j, strict=True))


def recall_at(distances: list[int], t: int) -> float:
    return sum(d <= t for d in distances) / len(distances)


def markdown(result: dict) -> str:
    lines = [f"Files: {result['n_files']} neardup ({result['true_pairs']} true pairs); "
             f"{result['n_other']} other photos for the collision count. Machine: {result['machine']}.",
             "", "Overall pairwise precision / recall (collisions = pairs within t among the other photos):",
             "", "| t | " + " | ".join(f"{m} P | {m} R | {m} coll." for m in METHODS) + " |",
             "|---|" + "---|" * (3 * len(METHODS))]
    for t in THRESHOLDS:
        cells = []
        for m in METHODS:
            row = result["methods"][m]["overall"][t]
            cells += [f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                      str(result["methods"][m]["other_collisions"][t])]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    for m in METHODS:
        lines.append(f"\nFalse pairs of {m} within {max(THRESHOLDS)} (distance, files): "
                     + "; ".join(f"{d} {a} {b}" for d, a, b in result["methods"][m]["false_pairs"]))
    shown = ("memgen-fast", "memgen-any", "imagededup")
    lines += ["", "Share of files caught (some other file of the same picture within t), per transform, "
              f"{' / '.join(shown)}, in % (n = files):", "",
              "| transform | n | " + " | ".join(f"t={t}" for t in THRESHOLDS) + " |",
              "|---|---|" + "---|" * len(THRESHOLDS)]
    for label, ours in result["methods"]["memgen-fast"]["per_transform"].items():
        each = [result["methods"][m]["per_transform"][label] for m in shown]
        cells = ["/".join(f"{100 * recall_at(d, t):.0f}" for d in each) for t in THRESHOLDS]
        lines.append(f"| {label.split(' (')[0]} | {len(ours)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help only
    result = calibrate()
    OUT.mkdir(exist_ok=True)
    (OUT / "calibration.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (OUT / "calibration.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
