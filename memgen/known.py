"""Images of earlier memories (`memorize --known`) as dedup sees them.

A nightly crawl overlaps the nights before: with their memories given as known, a record
that is an exact or near copy of an image kept there becomes a duplicate of that image
(its row in duplicates/ names it as representative), and the new memory keeps only
images no known memory holds. A known image is a Fingerprint of a negative shard
(-1, -2, ... one a part, in the order the memories are given): read before every record
of the run, so an exact group keeps it, and preferred as a near-duplicate representative
whatever its size (`Fingerprint.preference`). Known images are never written, and a
known memory is read only by its images' columns of ids and hashes, never its bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

from memgen.memory import image_parts, read_columns
from memgen.records import Fingerprint

COLUMNS = ["image_id", "phash", "dhash", "width", "height", "format", "n_bytes"]


def known_parts(memories: list[str]) -> list[tuple[int, str]]:
    """(shard index, images part URL) of every part of the known memories: -1, -2, ..."""
    parts = [part for memory in memories for part in image_parts(memory)]
    return [(-1 - i, part) for i, part in enumerate(parts)]


def known_fingerprints(shard: int, part: str) -> Iterator[Fingerprint]:
    """The images of a known memory's part, each as the record `shard`, row number."""
    table = read_columns(part, COLUMNS).to_pydict()
    for ordinal, (image_id, *hashes_and_size) in enumerate(zip(*(table[c] for c in COLUMNS), strict=True)):
        yield Fingerprint(shard, ordinal, "", bytes.fromhex(image_id), *hashes_and_size)
