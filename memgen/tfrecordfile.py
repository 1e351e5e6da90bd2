"""TFRecord files of tf.train.Example records (img2dataset's `tfrecord` output, TensorFlow
datasets' shards), read without TensorFlow: each record's framing checked by its CRC-32C
sums, as TensorFlow's reader checks it, and its Example decoded by protobuf from the layout
TensorFlow's example.proto and feature.proto declare (the field numbers are the wire
format; the message names here are memgen's own).

A record's ordinal is its place in the file, so a re-read finds it again. Damage raises:
nothing after a record whose length or sums do not check can be framed again. A record framed
whole that is no Example (raw image bytes, a serialized tensor) is said, and the next one read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import IO, NamedTuple

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from memgen.decode import identified
from memgen.tarstream import read_up_to, skip

_HEAD = 12  # uint64 length, then the masked CRC-32C of those 8 bytes
_TAIL = 4  # the masked CRC-32C of the data


class Example(NamedTuple):
    """One record of a TFRecord file, as read."""

    ordinal: int
    features: dict[str, list] | None  # name -> its values; None: not read, `unread` says why
    size: int  # bytes of the serialized Example
    unread: tuple[str, str] | None = None  # (error type, why): too_large or not_an_example
    raw: bytes | None = None  # a record that is no Example: its bytes (an image's, without `unread`; a head)
    # a SequenceExample's feature lists (a video's frames, their timestamps): name -> each step's values
    sequences: Mapping[str, list[list]] = MappingProxyType({})


def examples(f: IO[bytes], max_bytes: int, head_bytes: int = 0) -> Iterator[Example]:
    """Each Example of the TFRecord stream `f`, its features as lists of bytes, floats or
    ints; one over `max_bytes` unread but for its first `head_bytes` (its `raw`, to see what
    it is). EOFError where the file ends inside a record, ValueError where a sum does not
    match."""
    ordinal = 0
    while head := read_up_to(f, _HEAD):
        if len(head) < _HEAD:
            raise EOFError(f"the file ends inside the header of record {ordinal}: it was cut short")
        (length,), (said,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
        if _masked_crc(head[:8]) != said:
            raise ValueError(f"record {ordinal}: the checksum of its length does not match "
                             "(not a TFRecord file, or damaged)")
        if length > max_bytes:  # not held whole; its sum is not checked
            head = read_up_to(f, min(head_bytes, length))
            if len(head) + skip(f, length + _TAIL - len(head)) < length + _TAIL:
                raise EOFError(f"the file ends inside record {ordinal}: it was cut short")
            why = f"an Example of {length} bytes > max_bytes {max_bytes}"
            yield Example(ordinal, None, length, ("too_large", why), head or None)
        else:
            data = read_up_to(f, length + _TAIL)
            if len(data) < length + _TAIL:
                raise EOFError(f"the file ends inside record {ordinal}: it was cut short")
            if _masked_crc(data[:length]) != struct.unpack("<I", data[length:])[0]:
                raise ValueError(f"record {ordinal}: the checksum of its data does not match (damaged)")
            yield _example(ordinal, data[:length])
        ordinal += 1


def begins_a_tfrecord(data: bytes) -> bool:
    """Whether `data` begins as a TFRecord file does: a length, then its masked CRC-32C (a
    chance of 1 in 2**32 for other bytes)."""
    return len(data) >= _HEAD and _masked_crc(data[:8]) == struct.unpack("<I", data[8:_HEAD])[0]


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (tensorflow/core/lib/hash/crc32c.h)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _example(ordinal: int, data: bytes) -> Example:
    """The Example in a record's bytes (a SequenceExample's context, with its feature lists);
    an image's bytes as they are (tf.io.TFRecordWriter.write(jpeg) writes a record of them);
    bytes that are neither are kept, with why."""
    example = _EXAMPLE()
    try:
        example.ParseFromString(data)
    except DecodeError as e:  # its framing checked: the records after it are read
        if identified(data):  # JPEG, PNG, WebP, GIF, BMP, TIFF, ICO: none parsed as an Example, tried
            return Example(ordinal, None, len(data), raw=data)
        return Example(ordinal, None, len(data),
                       ("not_an_example", f"record {ordinal} is no tf.train.Example ({e})"), raw=data)
    features = {name: _values(feature) for name, feature in sorted(example.features.feature.items())}
    sequences = {name: [_values(step) for step in steps.feature]
                 for name, steps in sorted(example.feature_lists.feature_list.items())}
    return Example(ordinal, features, len(data), sequences=sequences)


def _values(feature) -> list:  # noqa: ANN001 - a message class made at import
    kind = feature.WhichOneof("kind")
    if kind is None:
        return []
    values = getattr(feature, kind).value
    if kind == "float_list":  # float32: 0.1, not 0.10000000149011612
        return [float(str(np.float32(v))) for v in values]
    return list(values)


def _example_class() -> type:
    """tf.train.Example's message class, from a descriptor built here (TensorFlow's
    example.proto and feature.proto: Example{Features features = 1}, Features{map<string,
    Feature> feature = 1}, Feature{oneof kind {BytesList = 1, FloatList = 2, Int64List = 3}},
    each list's `repeated value = 1`). A SequenceExample is an Example's context (field 1)
    and FeatureLists feature_lists = 2, FeatureLists{map<string, FeatureList> feature_list =
    1}, FeatureList{repeated Feature feature = 1}: one class reads both, and says which."""
    fdp = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="memgen/tf_example.proto", package="memgen.tf",
                                               syntax="proto3")
    for name, kind in (("BytesList", fdp.TYPE_BYTES), ("FloatList", fdp.TYPE_FLOAT),
                       ("Int64List", fdp.TYPE_INT64)):
        listed = proto.message_type.add(name=name)
        listed.field.add(name="value", number=1, label=fdp.LABEL_REPEATED, type=kind)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, message) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                              ("int64_list", "Int64List")), start=1):
        feature.field.add(name=name, number=number, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_MESSAGE,
                          type_name=f".memgen.tf.{message}", oneof_index=0)
    _add_map(proto.message_type.add(name="Features"), "feature", "Feature")
    proto.message_type.add(name="FeatureList").field.add(name="feature", number=1, label=fdp.LABEL_REPEATED,
                                                         type=fdp.TYPE_MESSAGE,
                                                         type_name=".memgen.tf.Feature")
    _add_map(proto.message_type.add(name="FeatureLists"), "feature_list", "FeatureList")
    example = proto.message_type.add(name="Example")
    for number, (name, message) in enumerate((("features", "Features"), ("feature_lists", "FeatureLists")),
                                             start=1):
        example.field.add(name=name, number=number, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_MESSAGE,
                          type_name=f".memgen.tf.{message}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("memgen.tf.Example"))


def _add_map(message: descriptor_pb2.DescriptorProto, field: str, value: str) -> None:
    """`map<string, VALUE> FIELD = 1` on `message`, as protoc writes a map: a repeated FieldEntry."""
    fdp = descriptor_pb2.FieldDescriptorProto
    entry = message.nested_type.add(name="".join(part.title() for part in field.split("_")) + "Entry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_STRING)
    entry.field.add(name="value", number=2, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_MESSAGE,
                    type_name=f".memgen.tf.{value}")
    message.field.add(name=field, number=1, label=fdp.LABEL_REPEATED, type=fdp.TYPE_MESSAGE,
                      type_name=f".memgen.tf.{message.name}.{entry.name}")


_EXAMPLE = _example_class()
