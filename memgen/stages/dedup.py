"""Dedup stages: ExactDedup (by sha256) and NearDedup (by pHash distance).

NearDedup is one swappable transform: PCollection[ImageGroup] -> PCollection[Assignment].
Only fingerprints move through its shuffles, never image bytes.
"""

from __future__ import annotations

import apache_beam as beam

from memgen.dedup import assign_members, cluster_nodes, exact_group, hash_node, member
from memgen.stages import only


class ExactDedup(beam.PTransform):
    """PCollection[Fingerprint] -> PCollection[ImageGroup], one per distinct sha256."""

    def expand(self, fingerprints):
        return (
            fingerprints
            | "KeyBySha256" >> beam.Map(lambda fp: (fp.image_id, fp))
            | "GroupBySha256" >> beam.GroupByKey()
            | "KeepFirstRead" >> beam.MapTuple(lambda _, fps: exact_group(fps))
        )


class NearDedup(beam.PTransform):
    """PCollection[ImageGroup] -> PCollection[Assignment] for pHash distance <= threshold.

    Identical hash values are collapsed into one node first; the nodes are clustered
    in one place, which is exact and deterministic but bounded by one worker's memory.
    """

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def expand(self, groups):
        members = (
            groups
            | "KeyByPhash" >> beam.Map(lambda g: (g.kept.phash, member(g)))
            | "GroupByPhash" >> beam.GroupByKey()
        )
        node_reps = (
            members
            | "HashNode" >> beam.MapTuple(hash_node)
            | "AllNodes" >> beam.combiners.ToList()
            | "Cluster" >> beam.FlatMap(cluster_nodes, self.threshold)
        )
        return (
            {"members": members, "rep": node_reps}
            | "JoinNodeRep" >> beam.CoGroupByKey()
            | "Assign" >> beam.FlatMapTuple(
                lambda phash, joined: assign_members(phash, only(joined["members"]), only(joined["rep"])))
        )

