"""imagededup's PHash, run inside the separate benchmark venv (never the project's).

Set the venv up once (outside the repository):

    python3.11 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install imagededup --no-deps
    /work/bench-venv/bin/pip install numpy scipy pillow PyWavelets tqdm matplotlib scikit-learn

`--no-deps` because imagededup requires torch/torchvision for its CNN method, and
PyPI's torchvision does not import beside this project's CPU torch; the CNN modules
are stubbed below so that `imagededup.methods` imports, and its hashing and search
code then run unmodified. The project-venv benchmark scripts call this file as a
subprocess (BENCH_PYTHON, default /work/bench-venv/bin/python) and read JSON from stdout.

    hash FILE...                      {file: 16-hex pHash} (imagededup.encode_image)
    search HASHES.json K WORKERS      time find_duplicates(encoding_map=...)
    e2e DIR K WORKERS                 time encode_images(DIR) + find_duplicates
"""

from __future__ import annotations

import json
import sys
import time
import types


def _import_phash():
    for name in ("imagededup.utils.models", "imagededup.methods.cnn"):
        stub = types.ModuleType(name)
        stub.CNN = stub.CustomModel = None  # the names the package __init__ files import
        sys.modules[name] = stub
    from imagededup.methods import PHash

    return PHash(verbose=False)


def _pairs(duplicates: dict) -> int:
    """Unordered pairs reported (find_duplicates lists each pair from both sides)."""
    return sum(len(v) for v in duplicates.values()) // 2


def main(argv: list[str]) -> dict:
    phasher = _import_phash()
    command, args = argv[0], argv[1:]
    if command == "hash":
        return {f: phasher.encode_image(image_file=f) for f in args}
    if command == "search":
        with open(args[0]) as f:
            encodings = json.load(f)
        k, workers = int(args[1]), int(args[2])
        t0 = time.perf_counter()
        dups = phasher.find_duplicates(encoding_map=encodings, max_distance_threshold=k,
                                       num_dist_workers=workers)
        return {"n": len(encodings), "search_s": time.perf_counter() - t0, "pairs": _pairs(dups)}
    if command == "e2e":
        folder, k, workers = args[0], int(args[1]), int(args[2])
        t0 = time.perf_counter()
        encodings = phasher.encode_images(image_dir=folder, num_enc_workers=workers)
        t1 = time.perf_counter()
        dups = phasher.find_duplicates(encoding_map=encodings, max_distance_threshold=k,
                                       num_dist_workers=workers)
        t2 = time.perf_counter()
        return {"n": len(encodings), "encode_s": t1 - t0, "search_s": t2 - t1,
                "total_s": t2 - t0, "pairs": _pairs(dups)}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout)
