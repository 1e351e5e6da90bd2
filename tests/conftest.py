"""Every manifest.json a memorize or sample run writes in a test (in this process) is checked
against its JSON Schema before it is written: a run whose manifest strays from it fails."""

from __future__ import annotations

import pytest

import memgen.sample_output
import memgen.stages.write
from shardkit import valid_manifest


def _validated(write, schema: str):
    def write_valid(memory: str, manifest: dict) -> None:
        write(memory, valid_manifest(manifest, schema))
    return write_valid


@pytest.fixture(autouse=True)
def manifests_match_their_schemas(monkeypatch):
    for module, schema in ((memgen.stages.write, "manifest.schema"),
                           (memgen.sample_output, "sample_manifest.schema")):
        monkeypatch.setattr(module, "write_manifest", _validated(module.write_manifest, schema))
