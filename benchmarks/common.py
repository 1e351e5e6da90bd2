"""Shared helpers of the benchmark scripts (run with the project venv).

imagededup runs in its own venv through peer_imagededup.py (see its docstring for the
one-time set-up); BENCH_PYTHON points at that venv's python.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REALIMAGES = Path(os.environ.get("MEMGEN_REALIMAGES", HERE.parent.parent / "shared/data/realimages"))
OUT = HERE / "out"  # gitignored: generated corpora and raw results
BENCH_PYTHON = os.environ.get("BENCH_PYTHON", "/work/bench-venv/bin/python")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def require_realimages() -> Path:
    if not REALIMAGES.is_dir():
        sys.exit(f"real photos not found at {REALIMAGES} (set MEMGEN_REALIMAGES)")
    return REALIMAGES


def peer(*args: str) -> dict:
    """Run one peer_imagededup.py command in the benchmark venv; its JSON result."""
    if not Path(BENCH_PYTHON).exists():
        sys.exit(f"benchmark venv python {BENCH_PYTHON} missing: create it as "
                 f"benchmarks/peer_imagededup.py says, or set BENCH_PYTHON")
    done = subprocess.run([BENCH_PYTHON, str(HERE / "peer_imagededup.py"), *args],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low. A count of 0 would time nothing (then divide by it)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


def between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from low to high, e.g. a threshold, which memgen's search
    plans take up to memgen.near.MAX_THRESHOLD (a 64-bit hash differs in at most 64 bits)."""
    at_least_low = at_least(low)

    def parse(text: str) -> int:
        value = at_least_low(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, not {value}")
        return value

    parse.__name__ = "int"
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


positive_float.__name__ = "float"


def hex_to_uint64(hexes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """16-hex hashes -> (uint64 values, valid mask); None (unreadable image) -> invalid."""
    valid = np.array([h is not None for h in hexes])
    values = np.array([int(h, 16) if h else 0 for h in hexes], dtype=np.uint64)
    return values, valid


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, load average {load}")


def photos(folders: tuple[str, ...] = ("cats", "notcats", "misc", "neardup")) -> list[Path]:
    """Real photo files (sorted), from the given folders of the realimages set."""
    root = require_realimages()
    files = [p for folder in folders for p in (root / folder).iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files)


class _TorchvisionStub(types.ModuleType):
    """Any attribute: a class (subclassed by torch-fidelity's datasets) or a sub-stub."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[0].isupper():
            return type(name, (), {})
        full = f"{self.__name__}.{name}"
        return sys.modules.setdefault(full, _TorchvisionStub(full))


def stub_torchvision() -> None:
    """Let torch-fidelity and clean-fid import without a working torchvision.

    They import it at module level for their feature extractors; PyPI's torchvision does
    not import beside the pinned CPU torch 2.13, and only their numpy/torch metric
    functions are used here, so stubs (never called) stand in for it.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - PyPI torchvision fails to import beside torch 2.13 in many ways
        for name in ("torchvision", "torchvision.datasets", "torchvision.transforms",
                     "torchvision.transforms.functional", "torchvision.models", "torchvision.models.utils"):
            sys.modules[name] = _TorchvisionStub(name)
