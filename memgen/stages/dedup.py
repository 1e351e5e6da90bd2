"""Dedup stages: ExactDedup (by sha256) and NearDedup (by pHash distance).

NearDedup is one swappable transform: PCollection[ImageGroup] -> {"assigned":
PCollection[(ImageGroup, Assignment)], "report": its one-element report}, each group beside
where its image went, so writing needs no join of its own.
Only fingerprints and hash values move through its shuffles, never image bytes, and
nothing is gathered into one worker (but the distinct label links that component rounds
cut short leave, which the manifest counts): identical hashes collapse into one node by a
lifted combine, the multi-index-hashing blocks of `memgen.near` find the pairs
within the threshold, large-star/small-star rounds of `memgen.components` label the
connected components, and each component is split so that every member is within
the threshold of its representative. ExactDedup gathers nothing either: a lifted combine
sums the records of each sha256 into one ImageGroup (the one read first, how many, which
shards), whatever their number; each copy's row is made in its own shard's part.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue

from memgen.components import (
    MAX_ROUNDS,
    both_ways,
    convergence,
    finished,
    label_links,
    large_star,
    larger_end,
    neighbour_labels,
    small_star,
    spanning_stars,
    star_label,
)
from memgen.dedup import (
    HashNode,
    NodeRep,
    add_copy,
    assign_groups,
    group_of,
    member,
    merge_sums,
    split_component,
)
from memgen.fingerprint import int64_to_uint64
from memgen.near import BLOCK_TARGET, block_pairs, key_radii, plan_search, route
from memgen.stages import only

CHANGED = "changed"
LINKS = "links"
SETTLED = "settled"
SINGLE = "single"
PAIRS = "pairs"
# Hashes routed to blocks together: big enough that a batch costs a few elements per
# band and block, not one per hash.
BATCH = (1 << 10, 1 << 16)


class _ExactGroupFn(beam.CombineFn):
    """An ImageGroup of the records of one sha256 (memgen.dedup's exact sum); lifted, so a
    hot image is cheap."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, fp):
        return add_copy(accumulator, fp)

    def merge_accumulators(self, accumulators):
        return merge_sums(accumulators)

    def extract_output(self, accumulator):
        return group_of(accumulator)


class ExactDedup(beam.PTransform):
    """PCollection[Fingerprint] -> PCollection[ImageGroup], one per distinct sha256."""

    def expand(self, fingerprints):
        return (
            fingerprints
            | "KeyBySha256" >> beam.Map(lambda fp: (fp.image_id, fp))
            | "SumBySha256" >> beam.CombinePerKey(_ExactGroupFn())
            | "Groups" >> beam.Values()
        )


class NearDedup(beam.PTransform):
    """PCollection[ImageGroup] -> {"assigned": PCollection[(ImageGroup, Assignment)] for pHash
    distance <= threshold, "report": a one-element PCollection[dict] for the manifest (the
    search plan, the pair count and the components' convergence)}."""

    def __init__(self, threshold: int, *, block_target: int = BLOCK_TARGET,
                 max_rounds: int = MAX_ROUNDS) -> None:
        super().__init__()
        plan_search(0, threshold)  # a bad threshold fails at construction, not on a worker
        self.threshold = threshold
        self.block_target = block_target
        self.max_rounds = max_rounds

    def expand(self, groups):
        members = groups | "KeyByPhash" >> beam.Map(lambda g: (g.kept.phash, member(g)))
        nodes = members | "HashNodes" >> HashNodes()
        plan = (nodes | "CountHashes" >> beam.combiners.Count.Globally()
                | "PlanSearch" >> beam.Map(plan_search, self.threshold, self.block_target))
        pairs = nodes | "NearPairs" >> NearPairs(plan)
        components = pairs["edges"] | "Components" >> ConnectedComponents(self.max_rounds)
        reps = ({"node": nodes, "label": components["labels"]}
                | "Representatives" >> Representatives(self.threshold))
        report = plan | "Report" >> beam.Map(
            _report, pvalue.AsSingleton(pairs["pairs"]),
            pvalue.AsSingleton(components["convergence"]))
        assigned = (
            {"groups": groups | "GroupsByPhash" >> beam.Map(lambda g: (g.kept.phash, g)), "rep": reps}
            | "JoinRepresentative" >> beam.CoGroupByKey()
            | "Assign" >> beam.FlatMapTuple(
                lambda phash, joined: assign_groups(phash, joined["groups"], only(joined["rep"])))
        )
        return {"assigned": assigned, "report": report}


def _report(plan, pairs: int, components) -> dict:
    return {"threshold": plan.k, "band_widths": list(plan.widths), "band_radii": list(plan.radii),
            "prefix_bits": plan.prefix_bits,
            "key_radii": [list(key_radii(plan, band)) for band in range(len(plan.radii))],
            "pairs": pairs, "components": components.record()}


class _BestMemberFn(beam.CombineFn):
    """(best member, records stood for) of one hash value; lifted, so a hot hash is cheap."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, m):
        return self.merge_accumulators([accumulator, (m, m.copies)])

    def merge_accumulators(self, accumulators):
        present = [a for a in accumulators if a is not None]
        return (min(a[0] for a in present), sum(a[1] for a in present)) if present else None

    def extract_output(self, accumulator):
        return accumulator


class HashNodes(beam.PTransform):
    """PCollection[(phash, Member)] -> PCollection[(phash, HashNode)], one per distinct hash."""

    def expand(self, members):
        return (members
                | "BestMember" >> beam.CombinePerKey(_BestMemberFn())
                | "HashNode" >> beam.MapTuple(lambda phash, best: (phash, HashNode(phash, *best))))


_HASHES = beam.metrics.Metrics.counter("memgen", "near_hashes")
_PARTS = beam.metrics.Metrics.counter("memgen", "near_block_parts")
_PAIRS = beam.metrics.Metrics.counter("memgen", "near_pairs")


def _route_batch(phashes: list[int], plan):
    parts = list(route(int64_to_uint64(phashes), plan))
    _HASHES.inc(len(phashes))
    _PARTS.inc(len(parts))
    return parts


def _block_edges(block, plan):
    """A block's pairs within k as spanning stars (the components only need those), and
    their number to the PAIRS output."""
    (band, side, index), parts = block
    a, b, _ = block_pairs(plan, band, side, index, parts)
    _PAIRS.inc(len(a))
    if len(a):
        yield pvalue.TaggedOutput(PAIRS, len(a))
    centres, leaves = spanning_stars(a.view("int64"), b.view("int64"))
    yield from zip(centres.tolist(), leaves.tolist(), strict=True)


class NearPairs(beam.PTransform):
    """PCollection[(phash, node)] -> {"edges": PCollection[(phash, phash)] whose connected
    components are those of the pairs within k (each block's pairs as stars), "pairs": the
    number of those pairs, one element}.

    Hashes travel in numpy batches, so the search costs a few shuffled elements per
    batch and block rather than hundreds per hash.
    """

    def __init__(self, plan: pvalue.PCollection) -> None:
        super().__init__()
        self.plan = plan

    def expand(self, nodes):
        plan = pvalue.AsSingleton(self.plan)
        found = (
            nodes
            | "Hashes" >> beam.Keys()
            | "Batch" >> beam.BatchElements(min_batch_size=BATCH[0], max_batch_size=BATCH[1])
            | "RouteToBlocks" >> beam.FlatMap(_route_batch, plan)
            | "GroupBlocks" >> beam.GroupByKey()
            | "SearchBlock" >> beam.FlatMap(_block_edges, plan).with_outputs(PAIRS, main="edges")
        )
        return {"edges": found.edges, "pairs": found[PAIRS] | "CountPairs" >> beam.CombineGlobally(sum)}


class _StarFn(beam.DoFn):
    """One star step at one node: its edges, keyed by `key` for the step that takes them;
    nodes it changed go to the CHANGED output as the round."""

    def __init__(self, step, round_: int, key) -> None:
        self.step = step
        self.round = round_
        self.key = key
        self.nodes = beam.metrics.Metrics.counter("memgen", f"components_round{round_}_{step.__name__}_nodes")

    def process(self, element):
        node, others = element
        self.nodes.inc()
        edges, changed = self.step(node, others)
        for edge in edges:
            yield from self.key(edge)
        if changed:
            yield pvalue.TaggedOutput(CHANGED, self.round)


def _by_larger_end(edge):
    return [larger_end(edge)]


class _UnlessSettledFn(beam.DoFn):
    """Large-star's edges go on to small-star, or straight to the labels when the round before
    changed no node: the edges were then stars already, which every later step gives back."""

    def start_bundle(self) -> None:
        self.active: dict = {}  # window -> whether the round before changed a node

    def process(self, keyed_edge, large_changed, small_changed, window=beam.DoFn.WindowParam):
        if window not in self.active:
            # the round's change markers, read lazily and once a bundle: the first, if any, answers
            self.active[window] = any(True for _ in large_changed) or any(True for _ in small_changed)
        if self.active[window]:
            yield keyed_edge
        else:
            yield pvalue.TaggedOutput(SETTLED, keyed_edge)


class _DistinctLinksFn(beam.CombineFn):
    """The distinct links, for the one worker that joins them: lifted, so each bundle sends
    its own once (many nodes send the same link: 122,291 of a shuffled path are 9)."""

    def create_accumulator(self) -> set:
        return set()

    def add_input(self, accumulator: set, link) -> set:
        accumulator.add(link)
        return accumulator

    def merge_accumulators(self, accumulators) -> set:
        return set().union(*accumulators)

    def extract_output(self, accumulator: set) -> list:
        return sorted(accumulator)


class _LabelFn(beam.DoFn):
    """A node's label; when the rounds ran out first, also the label it sends to itself and
    its neighbours (LINKS), which the finishing pass joins."""

    def process(self, element, record):
        node, others = element
        others = list(others)
        label = star_label(node, others)
        yield node, label
        if not record.converged:
            for sent in neighbour_labels(node, others, label):
                yield pvalue.TaggedOutput(LINKS, sent)


class ConnectedComponents(beam.PTransform):
    """PCollection[(u, v)] -> {"labels": (node, smallest node of its component),
    "convergence": one Convergence}, by up to `max_rounds` unrolled large/small-star rounds.

    Each step outputs its edges keyed for the next (small-star's both ways, which is also
    how the labels take them). The graph is static, so every round exists; after a round
    that changed nothing the next one's large-star gives the edges back unchanged and a
    check (the last round's change markers, side inputs) sends them to the labels, so the
    steps after it shuffle nothing. The check follows large-star rather than preceding it
    because the markers are complete by then: it fuses with large-star, and a round is
    two fused stages, not four (a separate stage for the check and one to flatten its
    side inputs cost a local run ~10-40 ms each).
    Out of rounds before convergence, a component may still carry several labels: each node
    sends its label to its neighbours, the labels a node gets are linked, and one worker
    joins the links (`finish_labels`; only unconverged components have any) into the
    smallest node of each component, as at convergence. Converged, those steps carry nothing.
    The convergence record says how many links and labels that worker joined (its
    `finishing`, 0 and 0 when converged), so the manifest shows when it carried a lot.
    """

    def __init__(self, max_rounds: int) -> None:
        super().__init__()
        self.max_rounds = max_rounds

    def expand(self, edges):
        keyed = edges | "KeyBothWays" >> beam.FlatMap(both_ways)
        changes, settled = [], []
        for r in range(self.max_rounds):
            keyed, large_changed = _star_step(keyed, "LargeStar", r, large_star, _by_larger_end)
            if r:
                routed = keyed | f"UnlessSettled{r}" >> beam.ParDo(
                    _UnlessSettledFn(), *(pvalue.AsIter(c) for c in changes[-2:])).with_outputs(
                        SETTLED, main="active")
                keyed = routed.active
                settled.append(routed[SETTLED] | f"SettledBothWays{r}" >> beam.FlatMap(both_ways))
            keyed, small_changed = _star_step(keyed, "SmallStar", r, small_star, both_ways)
            changes += [large_changed, small_changed]
        record = (tuple(changes)
                  | "AllChanges" >> beam.Flatten()
                  | "ChangesPerRound" >> beam.combiners.Count.PerElement()
                  | "ToDict" >> beam.combiners.ToDict()
                  | "Convergence" >> beam.Map(convergence, self.max_rounds))
        labelled = ((keyed, *settled)
                    | "FinalEdges" >> beam.Flatten()
                    | "LabelGroup" >> beam.GroupByKey()
                    | "Label" >> beam.ParDo(_LabelFn(), pvalue.AsSingleton(record)).with_outputs(
                        LINKS, main="labels"))
        # (final labels, the record with what the one worker joined); the record's Map fuses with it
        final = (labelled[LINKS]
                 | "LabelsSent" >> beam.GroupByKey()
                 | "LinkLabels" >> beam.FlatMapTuple(lambda _, labels: label_links(labels))
                 | "AllLinks" >> beam.CombineGlobally(_DistinctLinksFn())
                 | "FinishLabels" >> beam.Map(_finish, pvalue.AsSingleton(record)))
        labels = labelled.labels | "FinalLabel" >> beam.Map(_final_label, pvalue.AsSingleton(final))
        return {"labels": labels, "convergence": final | "Finished" >> beam.Map(lambda f: f[1])}


def _finish(links: list, record):
    """`finished`, counting the links the one worker got (Beam counter): the distinct ones."""
    beam.metrics.Metrics.counter("memgen", "components_finishing_links_received").inc(len(links))
    return finished(links, record)


def _final_label(labelled: tuple[int, int], final: tuple[dict[int, int], object]) -> tuple[int, int]:
    node, label = labelled
    return node, final[0].get(label, label)


def _star_step(keyed, name: str, round_: int, step, key):
    """(edges keyed for the next step, the nodes it changed as round markers)."""
    stepped = (keyed
               | f"{name}Group{round_}" >> beam.GroupByKey()
               | f"{name}{round_}" >> beam.ParDo(_StarFn(step, round_, key)).with_outputs(
                   CHANGED, main="edges"))
    return stepped.edges, stepped[CHANGED]


@beam.typehints.with_output_types(tuple[int, HashNode])  # inference would mix in the tagged output
class _SendNodeFn(beam.DoFn):
    """A node with a component label goes to it; a node without near pairs is its own rep."""

    def process(self, element):
        phash, joined = element
        node = only(joined["node"])
        labels = list(joined["label"])
        if labels:
            yield labels[0], node
        else:
            yield pvalue.TaggedOutput(SINGLE, (phash, NodeRep(node.best.image_id, phash, node.copies,
                                                              node.best.known)))


class Representatives(beam.PTransform):
    """{"node": (phash, HashNode), "label": (phash, label)} -> PCollection[(phash, NodeRep)]."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def expand(self, pcolls):
        sent = (pcolls
                | "JoinLabel" >> beam.CoGroupByKey()
                | "SendToComponent" >> beam.ParDo(_SendNodeFn()).with_outputs(SINGLE, main="clustered"))
        threshold = self.threshold
        split = (sent.clustered
                 | "GroupComponent" >> beam.GroupByKey()
                 | "SplitChains" >> beam.FlatMapTuple(lambda _, nodes: split_component(nodes, threshold)))
        return (sent[SINGLE], split) | "AllReps" >> beam.Flatten()
