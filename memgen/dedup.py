"""Dedup core (pure): exact groups by sha256, hash-value nodes, representatives.

Exact: records with the same bytes form an ImageGroup, a sum (the record read first,
smallest shard then ordinal, is kept; how many there are; which shards hold them), so
that a million copies of one logo cost what one does; each copy's duplicate row is made
where its shard's fingerprints are written (`CopiesOf`, `exact_rows`).
Near: images sharing a pHash value form a node (thousands of flat images cost one node);
nodes are clustered by `memgen.near` (`cluster_nodes` on one machine; the Beam stage
labels components first and calls `split_component` per component, with the same
result), and every image of a node follows the node's representative.
Representative preference: an image of a --known memory (memgen.known), then most pixels,
then most bytes, then smallest image_id (sha256 bytes sort as their hex does, so the tables
show the same order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from memgen.fingerprint import int64_to_uint64
from memgen.near import popcount, split_chain, split_clusters
from memgen.records import Fingerprint, Shard


class ImageGroup(NamedTuple):
    """All records with the same bytes: the one kept (read first), how many they are, and the
    shards that hold them."""

    kept: Fingerprint
    exact_copies: int
    shards: tuple[int, ...]  # sorted


class CopiesOf(NamedTuple):
    """Where the records of one image in a shard go, but the one kept: exact duplicates of
    `representative` (their rows need their own fingerprints: `exact_rows`)."""

    image_id: bytes
    representative: bytes
    distance: int
    kept: tuple[int, int]  # (shard, ordinal) of the record kept, placed on its own
    known: bool = False  # the representative is an image of a --known memory


class Member(NamedTuple):
    """An image as near dedup sees it."""

    preference: tuple  # Fingerprint.preference(): the image_id is in it
    copies: int  # records it stands for after exact dedup

    @property
    def image_id(self) -> bytes:
        return self.preference[3]  # not a field of its own: it would be shuffled twice

    @property
    def known(self) -> bool:
        return not self.preference[0]


class HashNode(NamedTuple):
    """One distinct pHash value: its best image and the records it stands for."""

    phash: int
    best: Member
    copies: int


class NodeRep(NamedTuple):
    """The representative chosen for a node; copies is set on the representative's node."""

    image_id: bytes
    phash: int
    copies: int
    known: bool = False  # an image of a --known memory


class Assignment(NamedTuple):
    """Where an image went: its representative (itself if kept) and distance."""

    image_id: bytes
    representative: bytes
    distance: int
    copies: int  # records the representative stands for; 0 unless image_id == representative
    known: bool = False  # the representative is an image of a --known memory


def read_order(fp: Fingerprint) -> tuple[int, int]:
    return fp.shard, fp.ordinal


# The running sum of an exact group: [record read first, records, shards] (a list and a set:
# a copy costs a comparison and a set insert, not a new tuple). ExactDedup's combine and
# exact_group() both sum with these.
ExactSum = list


def add_copy(acc: ExactSum | None, fp: Fingerprint) -> ExactSum:
    if acc is None:
        return [fp, 1, {fp.shard}]
    if read_order(fp) < read_order(acc[0]):
        acc[0] = fp
    acc[1] += 1
    acc[2].add(fp.shard)
    return acc


def merge_sums(sums: Iterable[ExactSum | None]) -> ExactSum | None:
    present = [s for s in sums if s is not None]
    if not present:
        return None
    return [min((s[0] for s in present), key=read_order), sum(s[1] for s in present),
            set().union(*(s[2] for s in present))]


def group_of(acc: ExactSum) -> ImageGroup:
    kept, count, shards = acc
    return ImageGroup(kept, count, tuple(sorted(shards)))


def exact_group(fingerprints: Iterable[Fingerprint]) -> ImageGroup:
    """The ImageGroup of records with the same bytes, on one machine (ExactDedup's sum)."""
    acc = None
    for fp in fingerprints:
        acc = add_copy(acc, fp)
    return group_of(acc)


def member(group: ImageGroup) -> Member:
    return Member(group.kept.preference(), group.exact_copies)


def hash_node(phash: int, members: Iterable[Member]) -> HashNode:
    members = list(members)
    return HashNode(phash, min(members), sum(m.copies for m in members))


def cluster_nodes(nodes: Iterable[HashNode], k: int) -> list[tuple[int, NodeRep]]:
    """(phash, NodeRep) for every node, on one machine; deterministic whatever the input order."""
    nodes = sorted(nodes, key=lambda n: n.best.preference)
    if not nodes:
        return []
    return _node_reps(nodes, split_clusters(int64_to_uint64([n.phash for n in nodes]), k, _known(nodes)))


def split_component(nodes: Iterable[HashNode], k: int) -> list[tuple[int, NodeRep]]:
    """(phash, NodeRep) for the nodes of one connected component of near pairs."""
    nodes = sorted(nodes, key=lambda n: n.best.preference)
    return _node_reps(nodes, split_chain(int64_to_uint64([n.phash for n in nodes]), k, _known(nodes)))


def _known(nodes: list[HashNode]) -> int:
    """How many of the nodes (sorted by preference) are images of --known memories: the first ones."""
    return sum(n.best.known for n in nodes)


def _node_reps(nodes: list[HashNode], rep: np.ndarray) -> list[tuple[int, NodeRep]]:
    copies = np.zeros(len(nodes), dtype=np.int64)
    np.add.at(copies, rep, [n.copies for n in nodes])
    return [
        (node.phash, NodeRep(nodes[r].best.image_id, nodes[r].phash, int(copies[i]) if r == i else 0,
                             nodes[r].best.known))
        for i, (node, r) in enumerate(zip(nodes, rep.tolist(), strict=True))
    ]


def assign_groups(phash: int, groups: Iterable[ImageGroup],
                  rep: NodeRep) -> Iterator[tuple[ImageGroup, Assignment]]:
    """Every image of a node follows the node's representative; streams, so a hot hash is cheap."""
    distance = int(popcount(int64_to_uint64(phash) ^ int64_to_uint64(rep.phash)))
    for group in groups:
        is_rep = group.kept.image_id == rep.image_id
        yield group, Assignment(group.kept.image_id, rep.image_id, distance, rep.copies if is_rep else 0,
                                rep.known)


class KeptImage(NamedTuple):
    """A representative to be written with its bytes (the shard's re-read supplies them)."""

    fp: Fingerprint
    copies: int  # records it stands for: its exact copies and its near duplicates'
    exact_copies: int

    @property
    def ordinal(self) -> int:
        return self.fp.ordinal

    def row(self, shard: Shard) -> dict:
        """Its images-table columns except the ones the re-read supplies."""
        fp = self.fp
        return {"image_id": fp.image_id.hex(), "phash": fp.phash, "dhash": fp.dhash, "width": fp.width,
                "height": fp.height, "format": fp.format, "n_bytes": fp.n_bytes,
                "source": shard.source(fp.locator),
                "copies": self.copies, "exact_copies": self.exact_copies}


class DuplicateRow(NamedTuple):
    ordinal: int
    locator: str  # Fingerprint.locator
    image_id: bytes
    representative: bytes
    distance: int
    kind: str  # exact | near
    n_bytes: int  # the record's (its reject row's, should its representative be lost)
    known: bool = False  # the representative is an image of a --known memory

    def row(self, shard: Shard) -> dict:
        """Its duplicates-table columns."""
        return {"source": shard.source(self.locator), "image_id": self.image_id.hex(),
                "representative": self.representative.hex(), "distance": self.distance, "kind": self.kind}


Placed = KeptImage | DuplicateRow | CopiesOf


def place(group: ImageGroup, assignment: Assignment) -> list[tuple[int, Placed]]:
    """(shard, row) for the record kept of an exact group, given where its image went, and
    (shard, CopiesOf) for every shard holding its other records.

    The record kept is the image's row when its image is a representative, and a "near"
    duplicate otherwise; the other records of a group are "exact" duplicates (same bytes as
    another record). Distances are to the final representative.
    An image of a --known memory stays there: this run's records of its bytes are its "exact"
    duplicates (not of its representative: it is one, whatever memgen chose there).
    """
    fp = group.kept
    if fp.known:
        copies = CopiesOf(fp.image_id, fp.image_id, 0, read_order(fp), True)
        return [(shard, copies) for shard in group.shards if shard >= 0]
    if assignment.representative == fp.image_id:
        kept: KeptImage | DuplicateRow = KeptImage(fp, assignment.copies, group.exact_copies)
    else:
        kept = _duplicate(fp, assignment.representative, assignment.distance, "near", assignment.known)
    if group.exact_copies == 1:
        return [(fp.shard, kept)]
    copies = CopiesOf(fp.image_id, assignment.representative, assignment.distance, read_order(fp),
                      assignment.known)
    return [(fp.shard, kept), *((shard, copies) for shard in group.shards)]


def exact_rows(fingerprints: Iterable[Fingerprint], copies: Iterable[CopiesOf]
               ) -> Iterator[tuple[int, DuplicateRow]]:
    """(shard, row) of the "exact" duplicates among a part's fingerprints: those of images
    with copies, but the records kept."""
    of = {c.image_id: c for c in copies}
    for fp in fingerprints:
        c = of.get(fp.image_id)
        if c is not None and read_order(fp) != c.kept:
            yield fp.shard, _duplicate(fp, c.representative, c.distance, "exact", c.known)


def _duplicate(fp: Fingerprint, representative: bytes, distance: int, kind: str, known: bool) -> DuplicateRow:
    return DuplicateRow(fp.ordinal, fp.locator, fp.image_id, representative, distance, kind, fp.n_bytes,
                        known)
