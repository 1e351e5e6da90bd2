"""Every manifest.json a memorize or sample run writes in a test (in this process) is checked
against its JSON Schema before it is written: a run whose manifest strays from it fails.
The Hugging Face libraries the tests use as references never ask the Hub (no network here)."""

from __future__ import annotations

import os

import pytest

import memgen.sample_output
import memgen.stages.write
from shardkit import valid_manifest

for _offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # read when `datasets` is imported
    os.environ.setdefault(_offline, "1")


def _validated(write, schema: str):
    def write_valid(memory: str, manifest: dict) -> None:
        write(memory, valid_manifest(manifest, schema))
    return write_valid


@pytest.fixture(autouse=True)
def manifests_match_their_schemas(monkeypatch):
    for module, schema in ((memgen.stages.write, "manifest.schema"),
                           (memgen.sample_output, "sample_manifest.schema")):
        monkeypatch.setattr(module, "write_manifest", _validated(module.write_manifest, schema))
