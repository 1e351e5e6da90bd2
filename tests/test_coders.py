"""memgen's element coder: shuffled NamedTuples travel as their fields, and come back as themselves."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import coders

import memgen.stages  # noqa: F401  (registers the coder)
from memgen.dedup import (
    Assignment,
    CopiesOf,
    DuplicateRow,
    HashNode,
    KeptImage,
    Member,
    NodeRep,
    exact_group,
    member,
)
from memgen.records import Fingerprint, Reject, Shard
from memgen.stages.coders import SHUFFLED, ElementCoder

URI = "s3://bucket/crawl/2026-11/shard-000123.tar"


def fp(shard: int, ordinal: int, image_id: str) -> Fingerprint:
    # an object of its own, as in a decoded element (pickle would share one object once)
    image_id = bytes.fromhex(image_id)
    return Fingerprint(shard, ordinal, f"#{ordinal:09d}", image_id, -(2**63) + ordinal, 2**62, 640, 480,
                       "JPEG", 54_321)


GROUP = exact_group([fp(1, 7, "ab" * 32), fp(0, 3, "ab" * 32), fp(2, 0, "ab" * 32)])
EXAMPLES = [
    Shard(123, URI, "tar"),
    GROUP.kept,
    Reject(1, 2, URI + "#k", "read", "too_large", "big", 9, None),
    GROUP,
    member(GROUP),
    HashNode(GROUP.kept.phash, member(GROUP), 3),
    NodeRep(b"\xcd" * 32, 5, 4),
    Assignment(b"\xab" * 32, b"\xcd" * 32, 4, 0),
    KeptImage(GROUP.kept, 4, 3),
    DuplicateRow(3, "#000000003", b"\xab" * 32, b"\xcd" * 32, 4, "near", 54_321),
    CopiesOf(b"\xab" * 32, b"\xcd" * 32, 4, (0, 3)),
]


def test_every_shuffled_type_has_an_example():
    assert sorted(type(e).__name__ for e in EXAMPLES) == sorted(t.__name__ for t in SHUFFLED)


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
def test_shuffled_types_round_trip_as_themselves_without_their_class_name(value):
    coder = ElementCoder()
    for element in (value, (value.__class__.__name__, value), [value, value]):
        encoded = coder.encode(element)
        decoded = coder.decode(encoded)
        assert decoded == element
        assert type(decoded) is type(element)
    encoded = coder.encode(value)
    assert type(value).__name__.encode() not in encoded and b"memgen" not in encoded
    assert len(encoded) < len(coders.FastPrimitivesCoder().encode(value))


def test_nested_types_come_back_typed():
    decoded = ElementCoder().decode(ElementCoder().encode((GROUP.kept.phash, GROUP)))
    assert isinstance(decoded[1].kept, Fingerprint)
    assert decoded[1].kept.pixels == 640 * 480 and decoded[1].exact_copies == 3
    assert decoded[1].shards == (0, 1, 2)
    node = ElementCoder().decode(ElementCoder().encode(HashNode(1, Member(GROUP.kept.preference(), 3), 3)))
    assert isinstance(node.best, Member) and node.best.image_id == b"\xab" * 32


def test_other_values_are_pickled_as_before():
    coder = ElementCoder()
    for value in ({"a": 1, "b": [1.5, None]}, ("k", frozenset({1, 2})), ValueError("x")):
        decoded = coder.decode(coder.encode(value))
        assert type(decoded) is type(value) and repr(decoded) == repr(value)


def test_registry_falls_back_to_it_once_stages_are_imported():
    memgen.stages.coders.register()  # idempotent: still one ElementCoder first
    assert beam.coders.registry.get_coder(Fingerprint) == ElementCoder()
    assert beam.coders.registry.get_coder(beam.typehints.Any) == ElementCoder()
