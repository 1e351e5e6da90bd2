"""Memorize over img2dataset-style shards built from every file in ../shared/data/realimages."""

from __future__ import annotations

import csv
import hashlib
import time
from collections import defaultdict
from pathlib import Path

import pytest

from memgen.memory import open_table, read_manifest
from memgen.pipelines.cli import main
from memgen.summary import memorize_summary
from shardkit import sample, write_tar

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realimages"
N_SHARDS = 4


def real_files() -> list[Path]:
    if not REAL.is_dir():
        pytest.skip(f"real photos not found at {REAL} (the shared data folder is absent)")
    return sorted(p for p in REAL.rglob("*") if p.is_file() and p.suffix.lower() not in (".csv", ".md"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    files = real_files()
    root = tmp_path_factory.mktemp("real")
    keys = {}
    for s in range(N_SHARDS):
        part = files[s::N_SHARDS]
        samples = []
        for n, path in enumerate(part):
            key = f"{s:02d}{n:05d}"  # img2dataset-style numeric keys; the file name goes in json
            keys[key] = path
            samples.append(sample(key, path.read_bytes(), caption=path.stem, ext=path.suffix.lower()[1:]))
        write_tar(root / f"{s:05d}{'.tar.gz' if s == N_SHARDS - 1 else '.tar'}", samples)
    started = time.perf_counter()
    assert main(["memorize", str(root / "*.tar*"), "--memory", str(root / "memory")]) == 0
    seconds = time.perf_counter() - started
    manifest = read_manifest(str(root / "memory"))
    print(f"\nrealimages: {len(files)} files, wall {seconds:.1f} s\n{memorize_summary(manifest)}")
    return root / "memory", keys, manifest


def key_of(source: str) -> str:
    return source.rsplit("#", 1)[1]


def test_every_file_is_memorized_a_duplicate_or_rejected_once(run):
    memory, keys, manifest = run
    placed = defaultdict(list)
    for table in ("images", "duplicates", "rejects"):
        for row in open_table(str(memory), table).to_table(columns=["source"]).to_pylist():
            placed[key_of(row["source"])].append(table)
    assert set(placed) == set(keys)
    assert all(len(tables) == 1 for tables in placed.values())
    assert manifest["balanced"] and manifest["counts"]["records_in"] == len(keys)


def test_only_broken_files_are_rejected_and_with_a_reason(run):
    memory, keys, _ = run
    broken = {row["file"] for row in csv.DictReader(open(REAL / "PROVENANCE.csv"))
              if "load_error" in row["flags"] or "cannot identify" in row["notes"].lower()}
    rejects = open_table(str(memory), "rejects").to_table().to_pylist()
    rejected = {str(keys[key_of(r["source"])].relative_to(REAL)) for r in rejects}
    assert rejected and rejected <= broken
    assert all(r["error_type"] in ("decode_error", "not_an_image") and r["message"] for r in rejects)


def test_byte_identical_copies_collapse(run):
    memory, keys, _ = run
    by_sha = defaultdict(set)
    for key, path in keys.items():
        by_sha[hashlib.sha256(path.read_bytes()).hexdigest()].add(key)
    copies = {sha: ks for sha, ks in by_sha.items() if len(ks) > 1}
    assert copies, "the shared photos include byte-identical copies"
    images = open_table(str(memory), "images").to_table(columns=["image_id", "exact_copies"]).to_pylist()
    exact = {key_of(r["source"]): r for r in open_table(str(memory), "duplicates").to_table().to_pylist()
             if r["kind"] == "exact"}
    kept_ids = {r["image_id"]: r["exact_copies"] for r in images}
    for sha, ks in copies.items():
        assert sum(k in exact for k in ks) == len(ks) - 1
        if sha in kept_ids:
            assert kept_ids[sha] == len(ks)
