"""schemas/manifest.schema.json and sample_manifest.schema.json: the manifests as written,
no looser; and older memory manifests (without counts.rejects_by_stage) still read."""

from __future__ import annotations

import copy
from collections import Counter

import jsonschema
import pytest

from memgen.fingerprint import MODES
from memgen.manifest import build_manifest, now, versions
from memgen.memory import SCHEMA_VERSION, finished_manifest, write_manifest
from memgen.near import MAX_THRESHOLD
from memgen.sample_output import FORMATS
from memgen.schema import load_json
from memgen.summary import memorize_summary
from shardkit import valid_manifest

NEAR = {"threshold": 10, "band_widths": [32, 32], "band_radii": [5, 4], "prefix_bits": 0,
        "key_radii": [[5], [4]], "pairs": 0,
        "components": {"max_rounds": 12, "rounds": 0, "converged": True, "changes_per_round": [0],
                       "finishing": {"links": 0, "labels": 0}}}


def manifest() -> dict:
    """What build_manifest makes of a run's totals: 3 records in, 1 image, 2 rejects."""
    base = {"job": "memorize", "inputs": ["a.tar"], "shards": 1, "listing_digest": "0" * 64,
            "options": {"threshold": 10, "fingerprint": {"mode": "fast", "max_pixels": 100},
                        "reader": {"max_bytes": 10, "reject_data_cap": 0, "image_column": None,
                                   "caption_column": "caption", "url_column": "url", "key_column": "key",
                                   "http_timeout": 60.0}},
            "versions": versions(), "started_at": now()}
    totals = Counter({"images": 1, "rejects": 2, "reject:decode_error": 1, "reject:empty": 1,
                      "reject_stage:read": 1, "reject_stage:fingerprint": 1, "parts:images": 1,
                      "parts:duplicates": 1, "parts:rejects": 1})
    return build_manifest(base, totals, 3, NEAR)


def test_rejects_are_counted_by_stage_in_key_order():
    counts = manifest()["counts"]
    assert list(counts["rejects_by_stage"].items()) == [("fingerprint", 1), ("read", 1)]
    assert counts["rejects_by_reason"] == {"decode_error": 1, "empty": 1}
    valid_manifest(manifest())


def _without_stage(m: dict) -> None:
    del m["counts"]["rejects_by_stage"]


@pytest.mark.parametrize("spoil", [
    _without_stage,
    lambda m: m["counts"].__setitem__("rejects", -1),
    lambda m: m["counts"].__setitem__("images", 1.5),
    lambda m: m["counts"]["rejects_by_stage"].__setitem__("decode", 1),  # not a stage
    lambda m: m["counts"]["rejects_by_reason"].__setitem__("empty", 0),
    lambda m: m["counts"].__setitem__("rejects_by_shard", {}),  # an unknown count
    lambda m: m.__setitem__("extra", 1),
    lambda m: m["options"]["reader"].pop("max_bytes"),
    lambda m: m["near_dedup"]["components"].__setitem__("converged", "yes"),
    lambda m: m["near_dedup"]["components"].pop("finishing"),
    lambda m: m["near_dedup"]["components"]["finishing"].__setitem__("links", -1),
    lambda m: m.__setitem__("listing_digest", "not a digest"),
    lambda m: m.__setitem__("known_digests", []),
])
def test_a_manifest_other_than_memorize_writes_fails_the_schema(spoil):
    m = copy.deepcopy(manifest())
    spoil(m)
    with pytest.raises(jsonschema.ValidationError):
        valid_manifest(m)


def test_the_schemas_say_what_the_code_does():
    schema = load_json("manifest.schema")
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    options = schema["$defs"]["options"]["properties"]
    assert options["threshold"]["maximum"] == schema["$defs"]["near_dedup"]["properties"]["threshold"][
        "maximum"] == MAX_THRESHOLD
    assert tuple(options["fingerprint"]["properties"]["mode"]["enum"]) == MODES
    stages = schema["$defs"]["counts"]["properties"]["rejects_by_stage"]["propertyNames"]["enum"]
    stage_doc = next(f["doc"] for f in load_json("rejects")["fields"] if f["name"] == "stage")
    assert stage_doc == " | ".join(stages)
    assert tuple(load_json("sample_manifest.schema")["properties"]["format"]["enum"]) == FORMATS
    # evaluate copies the counts into report.json, whose schema takes no key it does not name
    report = load_json("report.schema")["$defs"]["inputs"]["properties"]["memory_counts"]["properties"]
    assert set(report) == set(schema["$defs"]["counts"]["properties"])


def test_a_memory_whose_manifest_predates_rejects_by_stage_is_read_and_summarized(tmp_path):
    older = manifest()
    _without_stage(older)
    write_manifest(str(tmp_path), older)
    assert "rejects_by_stage" not in finished_manifest(str(tmp_path))["counts"]
    assert "decode_error" in memorize_summary(older)
