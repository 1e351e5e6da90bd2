"""How memgen's elements are encoded when Beam shuffles them.

Beam encodes a value it has no type hint for with FastPrimitivesCoder, which pickles
any type it does not know: a pickled NamedTuple carries its module and class name,
~45 bytes, in every element, and pickling is ~3x slower than encoding the fields.
`ElementCoder` writes the NamedTuples listed in SHUFFLED as a one-byte tag and their
fields instead (nested ones likewise) and pickles everything else as before. It is
registered as the coder registry's fallback when `memgen.stages` is imported, so it
applies wherever Beam would have used FastPrimitivesCoder. The coder itself travels in
the pipeline (Beam pickles coders it has no URN for), so workers decode with the same
table whatever process they run in.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import coder_impl, coders

from memgen.dedup import (
    Assignment,
    CopiesOf,
    DuplicateRow,
    HashNode,
    ImageGroup,
    KeptImage,
    Member,
    NodeRep,
)
from memgen.records import Fingerprint, Reject, Shard

# Append only: a tag is a type's position here.
SHUFFLED: tuple[type, ...] = (Shard, Fingerprint, Reject, ImageGroup, Member, HashNode, NodeRep,
                              Assignment, KeptImage, DuplicateRow, CopiesOf)
_PICKLED = 255


class _FieldsImpl(coder_impl.StreamCoderImpl):
    def __init__(self, types: tuple[type, ...]) -> None:
        self._types = types
        self._tags = {t: i for i, t in enumerate(types)}
        self._pickled = coders.PickleCoder().get_impl()
        self._fields = coder_impl.FastPrimitivesCoderImpl(self)  # nested NamedTuples come back here

    def encode_to_stream(self, value, stream, nested: bool) -> None:
        tag = self._tags.get(type(value))
        if tag is None:
            stream.write_byte(_PICKLED)
            self._pickled.encode_to_stream(value, stream, nested)
        else:
            stream.write_byte(tag)
            self._fields.encode_to_stream(tuple(value), stream, nested)

    def decode_from_stream(self, stream, nested: bool):
        tag = stream.read_byte()
        if tag == _PICKLED:
            return self._pickled.decode_from_stream(stream, nested)
        return self._types[tag]._make(self._fields.decode_from_stream(stream, nested))


class _FieldsCoder(coders.FastCoder):
    """The fallback of ElementCoder: SHUFFLED types as tag + fields, anything else pickled."""

    def _create_impl(self) -> _FieldsImpl:
        return _FieldsImpl(SHUFFLED)

    def is_deterministic(self) -> bool:
        return False  # pickling is not

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class ElementCoder(coders.FastPrimitivesCoder):
    """FastPrimitivesCoder that writes memgen's NamedTuples as their fields."""

    def __init__(self) -> None:
        super().__init__(fallback_coder=_FieldsCoder())


def register() -> None:
    """Make ElementCoder the registry's fallback (idempotent)."""
    if beam.coders.registry.get_coder(Fingerprint) != ElementCoder():
        beam.coders.registry.register_fallback_coder(ElementCoder)
