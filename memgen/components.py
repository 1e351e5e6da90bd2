"""Connected components by alternating large-star / small-star (Kiveris et al. 2014).

Pure functions on plain values (node ids are ints, edges are (u, v) pairs, u != v);
the Beam stage runs the same steps with a GroupByKey each, for a bounded number of
rounds. Each step keeps the components and makes them shallower; at the fixpoint
every component is a star whose centre is its smallest node, so a node's label is
min(itself, its neighbours).

A step reports whether it changed anything at a node. A round (large-star then
small-star) in which no node changes proves the edges are a forest of such stars:
large-star unchanged means a node with a larger neighbour has no smaller one;
small-star unchanged means no node has two smaller neighbours.

Out of rounds short of that, a component's nodes may carry different labels (each the
smallest of its closed neighbourhood); `finish_labels` then joins the labels that edges
connect, on one machine: only those of unconverged components, few after the rounds.
The convergence record says how many links and labels that one machine joined.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

Edge = tuple[int, int]

# Stars of near-duplicate pairs are shallow; 12 rounds cover paths of thousands of
# nodes (a sorted path of 4,000 needs 13, a shuffled one of 64,000 too, though both leave
# `finish_labels` no link; sorted 64,000 leaves 115,710: benchmarks/bench_components): past
# them `finish_labels` completes the components and the manifest says how much it joined.
MAX_ROUNDS = 12


def spanning_stars(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges with the components of the pairs (a[i], b[i]): each component as a star of
    (smallest node, node). A group of n hashes all within k of each other has n(n-1)/2
    pairs but n - 1 such edges, which is all the component rounds need (2,081 hashes within
    4 bits, 2.2M pairs: 19.6 s through them, 2.4 s as stars; benchmarks/bench_near_dense)."""
    if not len(a):
        return a, b
    # here, not at the top: scipy.sparse is a quarter of a second of every `memgen` command's
    # start-up (--help included, through memorize's imports)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as _sparse_components

    nodes, index = np.unique(np.concatenate([a, b]), return_inverse=True)
    graph = coo_matrix((np.ones(len(a), np.int32), (index[: len(a)], index[len(a):])),
                       shape=(len(nodes), len(nodes)))
    count, labels = _sparse_components(graph, directed=False)
    smallest = np.full(count, len(nodes))
    np.minimum.at(smallest, labels, np.arange(len(nodes)))  # nodes are sorted: the first index
    centre = smallest[labels]
    leaf = centre != np.arange(len(nodes))
    return nodes[centre[leaf]], nodes[leaf]


def large_star(node: int, neighbours: Iterable[int]) -> tuple[list[Edge], bool]:
    """Link every larger neighbour to the smallest of the node's closed neighbourhood."""
    neighbours = set(neighbours)
    smallest = min(neighbours | {node})
    larger = [v for v in neighbours if v > node]
    return [(v, smallest) for v in larger], smallest < node and bool(larger)


def small_star(node: int, smaller: Iterable[int]) -> tuple[list[Edge], bool]:
    """Link the node and its smaller neighbours to the smallest of them."""
    smaller = set(smaller)
    smallest = min(smaller)
    return [(v, smallest) for v in smaller | {node} if v != smallest], len(smaller) > 1


def both_ways(edge: Edge) -> list[Edge]:
    """Large-star keys an edge by both its ends."""
    u, v = edge
    return [(u, v), (v, u)]


def larger_end(edge: Edge) -> Edge:
    """Small-star keys an edge by its larger end."""
    u, v = edge
    return (u, v) if u > v else (v, u)


def star_label(node: int, neighbours: Iterable[int]) -> int:
    return min(min(neighbours), node)


def neighbour_labels(node: int, others: Iterable[int], label: int) -> list[tuple[int, int]]:
    """(node, label) for the node and each neighbour: the labels a node is sent all lie in
    its component."""
    return [(v, label) for v in (node, *others)]


def label_links(labels: Iterable[int]) -> list[Edge]:
    """Edges joining the distinct labels one node was sent (none where they agree)."""
    labels = set(labels)
    smallest = min(labels)
    return [(smallest, label) for label in labels if label != smallest]


def finish_labels(links: Iterable[Edge]) -> dict[int, int]:
    """{label: final label} for the labels the links join: the smallest of each linked set,
    which is the smallest node of the component (it is its own label)."""
    links = np.array(sorted(set(links)), dtype=np.int64).reshape(-1, 2)
    centres, leaves = spanning_stars(links[:, 0], links[:, 1])
    return dict(zip(leaves.tolist(), centres.tolist(), strict=True))


class Finishing(NamedTuple):
    """What `finish_labels` joined on one machine: nothing when the rounds converged."""
    links: int = 0  # distinct links: each node links the labels it is sent to their smallest
    labels: int = 0  # distinct labels the links join


class Convergence(NamedTuple):
    max_rounds: int
    changes: tuple[int, ...]  # nodes changed in each round (both steps)
    finishing: Finishing = Finishing()

    @property
    def converged(self) -> bool:
        return 0 in self.changes

    @property
    def rounds(self) -> int:
        """Rounds that changed something (all of them when not converged)."""
        return self.changes.index(0) if self.converged else self.max_rounds

    def record(self) -> dict:
        return {"max_rounds": self.max_rounds, "rounds": self.rounds, "converged": self.converged,
                "changes_per_round": list(self.changes), "finishing": self.finishing._asdict()}


def convergence(changed_rounds: Mapping[int, int], max_rounds: int) -> Convergence:
    """From {round: nodes changed} (rounds without changes may be absent)."""
    return Convergence(max_rounds, tuple(changed_rounds.get(r, 0) for r in range(max_rounds)))


def finished(links: Iterable[Edge], record: Convergence) -> tuple[dict[int, int], Convergence]:
    """(`finish_labels` of the links, the record saying how many links and labels it joined)."""
    links = set(links)  # many nodes send the same link
    final = finish_labels(links)
    joined = len(final.keys() | set(final.values()))  # relabelled labels and the ones they join
    return final, record._replace(finishing=Finishing(len(links), joined))


def _step(edges: Iterable[Edge], key, step) -> tuple[set[Edge], int]:
    grouped: dict[int, list[int]] = defaultdict(list)
    for edge in edges:
        for node, other in key(edge):
            grouped[node].append(other)
    out: set[Edge] = set()
    changed = 0
    for node, others in grouped.items():
        produced, change = step(node, others)
        out.update(produced)
        changed += change
    return out, changed


def connected_components(edges: Iterable[Edge],
                         max_rounds: int = MAX_ROUNDS) -> tuple[dict[int, int], Convergence]:
    """{node: label} for every node with an edge, as the Beam stage computes it."""
    current = set(edges)
    changes: Counter = Counter()
    for r in range(max_rounds):
        current, changed = _step(current, both_ways, large_star)
        changes[r] += changed
        current, changed = _step(current, lambda e: [larger_end(e)], small_star)
        changes[r] += changed
        if not changes[r]:
            break  # stars: every later round gives them back unchanged
    neighbours: dict[int, list[int]] = defaultdict(list)
    for u, v in current:
        neighbours[u].append(v)
        neighbours[v].append(u)
    labels = {node: star_label(node, others) for node, others in neighbours.items()}
    record = convergence(changes, max_rounds)
    if not record.converged:
        sent: dict[int, list[int]] = defaultdict(list)
        for node, others in neighbours.items():
            for v, label in neighbour_labels(node, others, labels[node]):
                sent[v].append(label)
        final, record = finished([link for got in sent.values() for link in label_links(got)], record)
        labels = {node: final.get(label, label) for node, label in labels.items()}
    return labels, record
