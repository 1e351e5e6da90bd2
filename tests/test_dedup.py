"""Dedup core: exact groups, representatives, placement of every record."""

from __future__ import annotations

import random

from memgen.dedup import (
    Assignment,
    CopiesOf,
    DuplicateRow,
    KeptImage,
    NodeRep,
    assign_groups,
    cluster_nodes,
    exact_group,
    exact_rows,
    hash_node,
    member,
    place,
)
from memgen.records import Fingerprint


def fpr(image_id: str, phash: int, shard: int = 0, ordinal: int = 0, w: int = 10, h: int = 10,
        n_bytes: int = 100) -> Fingerprint:
    return Fingerprint(shard, ordinal, f"#{ordinal}", image_id.encode(), phash, 0, w, h, "JPEG", n_bytes)


def test_exact_group_keeps_the_first_read_record():
    fps = [fpr("a", 1, shard=2, ordinal=0), fpr("a", 1, shard=0, ordinal=5), fpr("a", 1, shard=0, ordinal=7)]
    group = exact_group(reversed(fps))
    assert (group.kept.shard, group.kept.ordinal) == (0, 5)
    assert group.exact_copies == 3 and group.shards == (0, 2)


def nodes_for(images: list[tuple[Fingerprint, int]]):
    by_hash: dict[int, list] = {}
    for fp, copies in images:
        by_hash.setdefault(fp.phash, []).append(member(exact_group([fp])._replace(exact_copies=copies)))
    return {h: hash_node(h, ms) for h, ms in by_hash.items()}


def test_representative_prefers_pixels_then_bytes_then_id_and_sums_copies():
    images = [
        (fpr("small", 0b1111, w=10, h=10), 2),
        (fpr("big", 0b0111, w=20, h=20), 1),       # 1 bit from small: most pixels wins
        (fpr("b_heavy", 0b0111, w=20, h=20, n_bytes=900), 4),  # same hash, more bytes
        (fpr("far", (1 << 40) - 1, w=50, h=50), 1),
    ]
    nodes = nodes_for(images)
    reps = dict(cluster_nodes(nodes.values(), k=3))
    assert reps[0b1111].image_id == reps[0b0111].image_id == b"b_heavy"
    assert reps[0b0111].copies == 2 + 1 + 4 and reps[0b1111].copies == 0
    assert reps[(1 << 40) - 1].image_id == b"far" and reps[(1 << 40) - 1].copies == 1


def test_chains_are_split_so_members_stay_within_k_of_their_representative():
    # a chain 0 - 3 bits - 6 bits - 9 bits: transitively connected at k=3, but 9 bits end to end
    hashes = [0, 0b111, 0b111111, 0b111111111]
    images = [(fpr(f"i{n}", h, w=100 - n, h=10), 1) for n, h in enumerate(hashes)]
    reps = dict(cluster_nodes(nodes_for(images).values(), k=3))
    by_id = {f"i{n}".encode(): h for n, h in enumerate(hashes)}
    for h, rep in reps.items():
        assert bin(h ^ by_id[rep.image_id]).count("1") <= 3
    assert len({rep.image_id for rep in reps.values()}) == 2


def test_cluster_nodes_is_independent_of_input_order():
    rng = random.Random(0)
    images = [(fpr(f"{i:03d}", rng.getrandbits(12), w=rng.randint(1, 5), h=3), rng.randint(1, 3))
              for i in range(200)]
    nodes = list(nodes_for(images).values())
    first = sorted(cluster_nodes(nodes, k=4))
    rng.shuffle(nodes)
    assert sorted(cluster_nodes(nodes, k=4)) == first


def test_assign_groups_and_place_account_for_every_record():
    group = exact_group([fpr("x", 0b11, 0, 1), fpr("x", 0b11, 1, 2), fpr("x", 0b11, 1, 3)])
    rep_phash = 0b00
    ((same, assignment),) = assign_groups(0b11, [group], rep=NodeRep(b"r", rep_phash, 0))
    assert same is group and assignment == Assignment(b"x", b"r", 2, 0)
    placed = place(group, assignment)
    assert [(shard, type(row)) for shard, row in placed] == [(0, DuplicateRow), (0, CopiesOf), (1, CopiesOf)]
    assert placed[0][1].kind == "near"
    fingerprints = [fpr("x", 0b11, 0, 1), fpr("x", 0b11, 1, 2), fpr("x", 0b11, 1, 3), fpr("y", 0, 1, 4)]
    copies = [row for _, row in placed if isinstance(row, CopiesOf)]
    exact = list(exact_rows(fingerprints, copies))  # the record kept, and y's, are not copies
    assert [(shard, row.ordinal, row.kind) for shard, row in exact] == [(1, 2, "exact"), (1, 3, "exact")]
    assert all(row.representative == b"r" and row.distance == 2 for _, row in [placed[0], *exact])
    kept = place(group, Assignment(b"x", b"x", 0, 5))
    assert isinstance(kept[0][1], KeptImage) and kept[0][1].copies == 5
    assert kept[0][1].exact_copies == 3
    assert [row.representative for _, row in exact_rows(fingerprints, [r for _, r in kept[1:]])] == [b"x"] * 2
    single = exact_group([fpr("z", 0, 2, 9)])
    assert place(single, Assignment(b"z", b"z", 0, 1)) == [(2, KeptImage(single.kept, 1, 1))]

