"""manifest.json content: what ran, on what, and counts that must add up."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import apache_beam as beam
import pyarrow

import memgen
from memgen.memory import SCHEMA_VERSION, TABLES


def now() -> str:
    """UTC time in ISO 8601, to the millisecond (small jobs finish within a second)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def versions() -> dict[str, str]:
    """The versions every job records: memgen's and those of the libraries its outputs depend on."""
    return {"memgen": memgen.__version__, "apache_beam": beam.__version__, "pyarrow": pyarrow.__version__}


def finished(manifest: dict[str, Any]) -> dict[str, Any]:
    """`finished_at` and `seconds` since the manifest's `started_at`, as of now."""
    at = now()
    started = dt.datetime.fromisoformat(manifest["started_at"])
    return {"finished_at": at, "seconds": round((dt.datetime.fromisoformat(at) - started).total_seconds(), 3)}


def _by(totals: Counter, prefix: str) -> dict[str, int]:
    """The counts under `prefix` ("reject:" -> per reason), keyed without it, in key order."""
    return {k.removeprefix(prefix): v for k, v in sorted(totals.items()) if k.startswith(prefix)}


def build_manifest(base: dict[str, Any], totals: Counter, records_in: int,
                   near_dedup: dict[str, Any]) -> dict[str, Any]:
    """base (inputs, options, versions, started_at) + the counts the writers reported +
    near_dedup, NearDedup's report (search plan, pairs, components' convergence)."""
    reasons, stages = (_by(totals, prefix) for prefix in ("reject:", "reject_stage:"))
    images, duplicates, rejects = totals["images"], totals["duplicates"], totals["rejects"]
    return {
        **base,
        "schema_version": SCHEMA_VERSION,
        "tables": {t: f"{t}/" for t in TABLES},
        "counts": {
            "records_in": records_in,
            "images": images,
            "duplicates": duplicates,
            "duplicates_exact": totals["duplicates_exact"],
            "duplicates_near": totals["duplicates_near"],
            "duplicates_known": totals["duplicates_known"],  # of images of --known memories
            "rejects": rejects,
            "rejects_by_reason": reasons,
            "rejects_by_stage": stages,  # open | read | fingerprint | materialize; older manifests lack it
            "image_bytes": totals["image_bytes"],
        },
        "parts": {t: totals[f"parts:{t}"] for t in TABLES},  # readers check that all are there
        "equation": "records_in = images + duplicates + rejects",
        "balanced": records_in == images + duplicates + rejects,
        "near_dedup": near_dedup,
        **finished(base),
    }
