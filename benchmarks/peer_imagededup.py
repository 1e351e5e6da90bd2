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

import argparse
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


def arguments(argv: list[str]) -> argparse.Namespace:
    """Parsed before imagededup is imported, so a wrong command line is a usage error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("hash", help="{file: 16-hex pHash}").add_argument("files", nargs="+")
    for name, source, says in (("search", "hashes", "time find_duplicates of HASHES.json {file: hex}"),
                               ("e2e", "folder", "time encode_images(FOLDER) + find_duplicates")):
        command = commands.add_parser(name, help=says)
        command.add_argument(source)
        command.add_argument("k", type=int, help="max_distance_threshold, 0 or more")
        command.add_argument("workers", type=int, help="1 or more")
    args = parser.parse_args(argv)
    # checked here, not with benchmarks.common's at_least: this runs in the peer's own venv
    if args.command != "hash" and (args.k < 0 or args.workers < 1):
        parser.error(f"k must be at least 0 and workers at least 1, not {args.k} and {args.workers}")
    return args


def main(args: argparse.Namespace) -> dict:
    phasher = _import_phash()
    if args.command == "hash":
        return {f: phasher.encode_image(image_file=f) for f in args.files}
    if args.command == "search":
        with open(args.hashes) as f:
            encodings = json.load(f)
        t0 = time.perf_counter()
        dups = phasher.find_duplicates(encoding_map=encodings, max_distance_threshold=args.k,
                                       num_dist_workers=args.workers)
        return {"n": len(encodings), "search_s": time.perf_counter() - t0, "pairs": _pairs(dups)}
    t0 = time.perf_counter()
    encodings = phasher.encode_images(image_dir=args.folder, num_enc_workers=args.workers)
    t1 = time.perf_counter()
    dups = phasher.find_duplicates(encoding_map=encodings, max_distance_threshold=args.k,
                                   num_dist_workers=args.workers)
    t2 = time.perf_counter()
    return {"n": len(encodings), "encode_s": t1 - t0, "search_s": t2 - t1,
            "total_s": t2 - t0, "pairs": _pairs(dups)}


if __name__ == "__main__":
    json.dump(main(arguments(sys.argv[1:])), sys.stdout)
