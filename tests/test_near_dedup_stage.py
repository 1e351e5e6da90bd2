"""NearDedup as a Beam transform: equals the one-machine reference, whatever the order or workers."""

from __future__ import annotations

import random
import time
from collections import Counter
from itertools import combinations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from memgen.components import connected_components
from memgen.dedup import Assignment, ImageGroup, assign_groups, cluster_nodes, hash_node, member
from memgen.manifest import build_manifest, now
from memgen.near import popcount
from memgen.records import Fingerprint
from memgen.stages.dedup import ConnectedComponents, NearDedup

K = 6


def signed(h: int) -> int:
    return h - (1 << 64) if h >= 1 << 63 else h


def group(i: int, phash: int, width: int, copies: int = 1) -> ImageGroup:
    fp = Fingerprint(i % 7, i, f"#{i}", f"{i:06d}".encode(), signed(phash), 0, width, 10, "JPEG",
                     100 + i % 13)
    return ImageGroup(fp, copies, (fp.shard,))


def corpus(seed: int = 0) -> list[ImageGroup]:
    """Random hashes with near copies, chains (walks of 3 bits a step) and repeated hash values."""
    rng = random.Random(seed)
    hashes = []
    for _ in range(150):
        h = rng.getrandbits(64)
        hashes.append(h)
        for _ in range(rng.randrange(4)):
            h ^= sum(1 << b for b in rng.sample(range(64), rng.randint(1, 3)))
            hashes.append(h)
    hashes += hashes[:40]  # different images with the same pHash
    return [group(i, h, rng.randint(5, 50), rng.randint(1, 3)) for i, h in enumerate(hashes)]


def reference(groups: list[ImageGroup], k: int) -> list[tuple[ImageGroup, Assignment]]:
    by_hash: dict[int, list] = {}
    for g in groups:
        by_hash.setdefault(g.kept.phash, []).append(g)
    reps = dict(cluster_nodes([hash_node(h, map(member, gs)) for h, gs in by_hash.items()], k))
    return [ga for h, gs in by_hash.items() for ga in assign_groups(h, gs, reps[h])]


def run(groups: list[ImageGroup], near: NearDedup, expected, args: tuple[str, ...] = ()) -> None:
    with beam.Pipeline(runner="FnApiRunner", options=PipelineOptions(list(args))) as p:
        assert_that((p | beam.Create(groups) | near)["assigned"], equal_to(expected))


def test_near_dedup_equals_the_one_machine_reference_with_many_blocks():
    groups = corpus()
    expected = reference(groups, K)
    assert sum(a.image_id != a.representative for _, a in expected) > 100  # plenty of near copies
    with beam.Pipeline(runner="FnApiRunner") as p:
        near = p | beam.Create(groups) | NearDedup(K, block_target=60)  # several blocks per band,
        assert_that(near["assigned"], equal_to(expected))  # and visiting hashes
        assert_that(near["report"] | beam.Map(lambda r: (r["prefix_bits"] > 0, r["components"]["converged"],
                                                      len(r["key_radii"]) == len(r["band_radii"]))),
                    equal_to([(True, True, True)]), label="Report")


def test_shuffled_input_and_two_workers_give_identical_assignments():
    groups = corpus(seed=1)
    expected = reference(groups, K)
    shuffled = groups[:]
    random.Random(7).shuffle(shuffled)
    run(shuffled, NearDedup(K, block_target=100), expected,
        ("--direct_num_workers=2", "--direct_running_mode=multi_threading"))
    run(list(reversed(groups)), NearDedup(K), expected)


def test_every_member_is_within_k_of_its_representative_even_along_chains():
    # one chain of 40 hashes, 2 to 4 bits a step: all connected at k=4, 48 bits end to end
    walk = [(1 << (2 * n)) - 1 for n in range(32)]
    walk += [~((1 << (2 * n)) - 1) & (2**64 - 1) for n in range(1, 9)]
    groups = [group(i, h, width=100 - i) for i, h in enumerate(walk)]
    phash = {g.kept.image_id: g.kept.phash for g in groups}

    def check(assignments):
        reps = {a.representative for a in assignments}
        assert len(reps) > 5, "a chain must not become one transitive mega-cluster"
        for a in assignments:
            d = int(popcount(np.array([phash[a.image_id] ^ phash[a.representative]]).view(np.uint64))[0])
            assert d == a.distance <= 4

    with beam.Pipeline(runner="FnApiRunner") as p:
        assert_that((p | beam.Create(groups) | NearDedup(4))["assigned"] | beam.Values(), check)


def test_a_hash_shared_by_100k_records_is_one_node():
    n = 100_000

    def records(start: int):
        return [group(i, 0xF0F0, width=10 + i % 997) for i in range(start, start + 10_000)]

    best = min((group(i, 0xF0F0, width=10 + i % 997) for i in range(n)), key=lambda g: g.kept.preference())
    started = time.perf_counter()
    with beam.Pipeline(runner="FnApiRunner") as p:
        groups = p | beam.Create(range(0, n, 10_000), reshuffle=False) | beam.FlatMap(records)
        near = groups | NearDedup(10)
        summary = (near["assigned"] | beam.Values()
                   | beam.Map(lambda a: (a.representative, a.distance, a.copies,
                                         a.image_id == a.representative))
                   | beam.combiners.Count.PerElement())  # lifted: one element per outcome
        rep = best.kept.image_id
        assert_that(summary, equal_to([((rep, 0, n, True), 1), ((rep, 0, 0, False), n - 1)]))
        assert_that(near["report"] | beam.Map(lambda r: r["pairs"]), equal_to([0]), label="NoPairs")
    assert time.perf_counter() - started < 60  # about 6 s on a quiet 2-core machine


def test_the_report_becomes_the_manifest_near_dedup_section():
    def check(reports):
        (report,) = reports
        assert report["pairs"] > 100 and report["components"]["converged"]
        assert report["components"]["finishing"] == {"links": 0, "labels": 0}  # nothing left to join
        assert 1 <= report["components"]["rounds"] < report["components"]["max_rounds"]
        base = {"started_at": now()}
        manifest = build_manifest(base, Counter(images=1), 1, near_dedup=report)
        assert manifest["near_dedup"] == report and manifest["balanced"]

    with beam.Pipeline(runner="FnApiRunner") as p:
        assert_that((p | beam.Create(corpus(seed=2)) | NearDedup(K))["report"], check)


def test_hashes_all_within_k_of_each_other_count_every_pair_and_make_one_cluster():
    """529 hashes within 4 bits of each other (0 and every hash of one or two of 32 bits set):
    139,656 pairs, which the component rounds took one by one; now as stars, counted all."""
    hashes = [0, *(1 << i for i in range(32)), *((1 << i) | (1 << j) for i, j in combinations(range(32), 2))]
    groups = [group(i, h, 10) for i, h in enumerate(hashes)]
    best = min(groups, key=lambda g: g.kept.preference()).kept.image_id
    with beam.Pipeline(runner="FnApiRunner") as p:
        near = p | beam.Create(groups) | NearDedup(4)
        assert_that(near["report"] | beam.Map(lambda r: (r["pairs"], r["components"]["converged"])),
                    equal_to([(len(hashes) * (len(hashes) - 1) // 2, True)]), label="Report")
        assert_that(near["assigned"] | beam.Map(lambda ga: ga[1].representative) | beam.Distinct(),
                    equal_to([best]), label="OneCluster")


def test_components_that_did_not_converge_are_said_in_the_summary():
    """Out of rounds, one worker finishes the components: only the manifest would say it."""
    from memgen.summary import memorize_summary

    base = {"started_at": now(), "shards": 1}
    for converged in (True, False):
        finishing = {"links": 0 if converged else 7, "labels": 0 if converged else 5}
        components = {"max_rounds": 2, "rounds": 2, "converged": converged,
                      "changes_per_round": [3, int(not converged)], "finishing": finishing}
        for said in ("did not converge in 2 rounds; one worker joined the rest of them (7 links of 5 labels)",
                     "did not converge in 2 rounds; one worker joined the rest of them (manifest"):
            report = {"pairs": 3, "components": dict(components)}
            manifest = build_manifest(base, Counter(images=1), 1, near_dedup=report)
            assert (said in memorize_summary(manifest)) == (not converged)
            components.pop("finishing", None)  # then an older manifest: said without the counts
    # out of rounds with every component's labels agreeing already: nothing was joined, nothing said
    components = {"max_rounds": 2, "rounds": 2, "converged": False, "changes_per_round": [3, 1],
                  "finishing": {"links": 0, "labels": 0}}
    manifest = build_manifest(base, Counter(images=1), 1, near_dedup={"pairs": 3, "components": components})
    assert "converge" not in memorize_summary(manifest)


def window_chain(n: int) -> list[int]:
    """A path at k = 4: windows of 4 bits, 2 apart (neighbours 4 bits apart, the next but one 8)."""
    return [0b1111 << (2 * i) for i in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_rounds_cut_short_still_give_the_reference_clusters(seed):
    """Out of rounds (one), a component's label groups are joined before it is split: no two
    images within k both kept, and none within k of a --known image kept beside it."""
    rng = random.Random(seed)
    hashes = window_chain(30)
    known = rng.randrange(30)
    groups = [group(i, h, rng.randint(5, 50)) for i, h in enumerate(hashes)]
    fp = groups[known].kept._replace(shard=-1)
    groups[known] = ImageGroup(fp, 1, (-1,))
    expected = reference(groups, 4)
    kept = [g.kept.phash for g, a in expected if a.representative == g.kept.image_id]
    assert all(bin(a ^ b).count("1") > 4 for a, b in combinations(kept, 2))  # hashes < 2**63
    with beam.Pipeline(runner="FnApiRunner") as p:
        near = p | beam.Create(groups) | NearDedup(4, max_rounds=1)
        assert_that(near["assigned"], equal_to(expected))
        assert_that(near["report"] | beam.Map(lambda r: r["components"]["converged"]), equal_to([False]),
                    label="NotConverged")
        assert_that(near["report"] | beam.Map(lambda r: r["components"]["finishing"]["links"] > 0),
                    equal_to([True]), label="LinksFinished")


def test_components_cut_short_equal_the_finished_reference():
    """... and say what the finishing step joined, as the one-machine reference counts it
    (tests/test_near.py recounts that by hand); the one worker gets each link once (here 795
    are sent, 657 distinct: many nodes of the shuffled path send the same link)."""
    path = list(range(1000, 1300))
    random.Random(0).shuffle(path)
    edges = [(a, a + 1) for a in range(300)] + list(zip(path, path[1:], strict=False))  # ~log2(300) rounds
    labels, record = connected_components(edges, max_rounds=2)
    assert not record.converged and set(labels.values()) == {0, 1000}
    assert record.finishing.links > 0 and record.finishing.labels > 0
    p = beam.Pipeline(runner="FnApiRunner")
    out = p | beam.Create(edges) | ConnectedComponents(max_rounds=2)
    assert_that(out["labels"], equal_to(sorted(labels.items())), label="Labels")
    assert_that(out["convergence"], equal_to([record]), label="Convergence")
    result = p.run()
    result.wait_until_finish()
    (received,) = result.metrics().query(MetricsFilter().with_name("components_finishing_links_received"))[
        "counters"]
    assert received.committed == record.finishing.links


def test_empty_input_gives_nothing_and_a_converged_report():
    with beam.Pipeline(runner="FnApiRunner") as p:
        near = p | beam.Create([]) | NearDedup(K)
        assert_that(near["assigned"], equal_to([]))
        assert_that(near["report"] | beam.Map(lambda r: (r["pairs"], r["components"]["converged"])),
                    equal_to([(0, True)]), label="Report")


def test_components_stage_equals_the_reference_and_skips_the_rounds_after_convergence():
    rng = random.Random(5)
    pairs = ((rng.randrange(400), rng.randrange(400)) for _ in range(300))
    edges = sorted({(a, b) for a, b in pairs if a != b})
    path = list(range(1000, 1300))
    rng.shuffle(path)
    edges += list(zip(path, path[1:], strict=False))  # a long chain: several rounds
    labels, record = connected_components(edges, max_rounds=12)
    assert record.converged and 3 <= record.rounds < 11 and record.finishing == (0, 0)
    p = beam.Pipeline(runner="FnApiRunner")
    out = p | beam.Create(edges) | ConnectedComponents(max_rounds=12)
    assert_that(out["labels"], equal_to(sorted(labels.items())), label="Labels")
    assert_that(out["convergence"], equal_to([record]), label="Convergence")
    result = p.run()
    result.wait_until_finish()
    nodes = {c.key.metric.name: c.committed
             for c in result.metrics().query(MetricsFilter().with_namespace("memgen"))["counters"]}
    worked = [(r, step) for r in range(12) for step in ("large_star", "small_star")
              if nodes.get(f"components_round{r}_{step}_nodes", 0)]
    # the round that changed nothing is the last to run in full; the next one's large-star gives
    # the edges back and the check after it sends them to the labels: no later step gets any
    ran = [(r, step) for r in range(record.rounds + 1) for step in ("large_star", "small_star")]
    assert worked == ran + [(record.rounds + 1, "large_star")]
