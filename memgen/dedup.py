"""Dedup core (pure): exact groups by sha256, hash-value nodes, representatives.

Exact: records with the same bytes form an ImageGroup; the record read first
(smallest shard, then ordinal) is kept. Near: images sharing a pHash value form a
node (thousands of flat images cost one node); nodes are clustered by
`memgen.near` (`cluster_nodes` on one machine; the Beam stage labels components
first and calls `split_component` per component, with the same result), and every
image of a node follows the node's representative.
Representative preference: most pixels, then most bytes, then smallest image_id (sha256
bytes sort as their hex does, so the tables show the same order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from memgen.fingerprint import int64_to_uint64
from memgen.near import popcount, split_chain, split_clusters
from memgen.records import Fingerprint, Shard


class ImageGroup(NamedTuple):
    """All records with the same bytes: the one kept and the others."""

    kept: Fingerprint
    others: tuple[Fingerprint, ...]

    @property
    def exact_copies(self) -> int:
        return 1 + len(self.others)


class Member(NamedTuple):
    """An image as near dedup sees it."""

    preference: tuple  # Fingerprint.preference(): the image_id is in it
    copies: int  # records it stands for after exact dedup

    @property
    def image_id(self) -> bytes:
        return self.preference[2]  # not a field of its own: it would be shuffled twice


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


class Assignment(NamedTuple):
    """Where an image went: its representative (itself if kept) and distance."""

    image_id: bytes
    representative: bytes
    distance: int
    copies: int  # records the representative stands for; 0 unless image_id == representative


def exact_group(fingerprints: Iterable[Fingerprint]) -> ImageGroup:
    ordered = sorted(fingerprints, key=lambda fp: (fp.shard, fp.ordinal))
    return ImageGroup(ordered[0], tuple(ordered[1:]))


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
    return _node_reps(nodes, split_clusters(int64_to_uint64([n.phash for n in nodes]), k))


def split_component(nodes: Iterable[HashNode], k: int) -> list[tuple[int, NodeRep]]:
    """(phash, NodeRep) for the nodes of one connected component of near pairs."""
    nodes = sorted(nodes, key=lambda n: n.best.preference)
    return _node_reps(nodes, split_chain(int64_to_uint64([n.phash for n in nodes]), k))


def _node_reps(nodes: list[HashNode], rep: np.ndarray) -> list[tuple[int, NodeRep]]:
    copies = np.zeros(len(nodes), dtype=np.int64)
    np.add.at(copies, rep, [n.copies for n in nodes])
    return [
        (node.phash, NodeRep(nodes[r].best.image_id, nodes[r].phash, int(copies[i]) if r == i else 0))
        for i, (node, r) in enumerate(zip(nodes, rep.tolist(), strict=True))
    ]


def assign_groups(phash: int, groups: Iterable[ImageGroup],
                  rep: NodeRep) -> Iterator[tuple[ImageGroup, Assignment]]:
    """Every image of a node follows the node's representative; streams, so a hot hash is cheap."""
    distance = int(popcount(int64_to_uint64(phash) ^ int64_to_uint64(rep.phash)))
    for group in groups:
        is_rep = group.kept.image_id == rep.image_id
        yield group, Assignment(group.kept.image_id, rep.image_id, distance, rep.copies if is_rep else 0)


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

    def row(self, shard: Shard) -> dict:
        """Its duplicates-table columns."""
        return {"source": shard.source(self.locator), "image_id": self.image_id.hex(),
                "representative": self.representative.hex(), "distance": self.distance, "kind": self.kind}


def place(group: ImageGroup, assignment: Assignment) -> list[tuple[int, KeptImage | DuplicateRow]]:
    """(shard, row) for every record of an exact group, given where its image went.

    Records after the first of a group are "exact" duplicates (same bytes as another
    record); the first record is kept when its image is a representative, and is a
    "near" duplicate otherwise. Distances are to the final representative.
    """
    placed: list[tuple[int, KeptImage | DuplicateRow]] = []
    fp = group.kept
    if assignment.representative == fp.image_id:
        placed.append((fp.shard, KeptImage(fp, assignment.copies, group.exact_copies)))
    else:
        placed.append((fp.shard, _duplicate(fp, assignment, "near")))
    placed.extend((other.shard, _duplicate(other, assignment, "exact")) for other in group.others)
    return placed


def _duplicate(fp: Fingerprint, assignment: Assignment, kind: str) -> DuplicateRow:
    return DuplicateRow(fp.ordinal, fp.locator, fp.image_id, assignment.representative, assignment.distance,
                        kind, fp.n_bytes)
