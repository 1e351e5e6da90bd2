"""Evaluate stages for distances between image sets, and copying/contamination against the memory.

- `SetDistances`: PCollection[(set name, image id, {space: vector})] ->
  PCollection[dict], one row per (pair of sets, feature space) with every metric of
  memgen.metrics.compare. Moments come from all vectors (MomentsFn); KID, k-NN metrics
  and C2ST from a capped subset per set chosen by a keyed hash of (seed, set, image id),
  so the subset is the same whatever the order or partitioning of the input.
- `CopyHistograms`: PCollection[(set name, pHash)] plus the memory's pHashes ->
  PCollection[(set name, histogram of nearest memory distances)] (memgen.copying); the
  memory streams past the query sets, so it may be any size.
- `EvaluateSets`: PBegin -> {"distances": one dict, "copying": one dict}, the two
  report.json sections, from a memory and optionally a sample and reference shards.
  With the vision extra, the EfficientNet-Lite0 embedding is a feature space too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
import fsspec
import numpy as np

from memgen.copying import DEFAULT_RADIUS, copying_section, distance_histogram, nearest_distances, query_phash
from memgen.decode import ImageError
from memgen.features import EMBEDDING, SPACES
from memgen.fingerprint import FingerprintConfig
from memgen.metrics import KID_SUBSETS, compare_sets, distances_section
from memgen.near import distinct
from memgen.readers import ReaderConfig
from memgen.records import Shard
from memgen.sampling import keyed_u64
from memgen.stages import only
from memgen.stages.image_sets import (
    FAILED,
    MEMORY,
    REFERENCE,
    SAMPLE,
    ExtractFeatures,
    ScoredImage,
    embedding_model,
    read_memory_part,
    reference_images,
)
from memgen.stages.moments import BOUND, MomentsFn

# The "real" side first: the held-out reference when there is one, else the memory.
PAIRS = ((REFERENCE, SAMPLE), (REFERENCE, MEMORY), (MEMORY, SAMPLE))
DEFAULT_SUBSET_CAP = 2000  # k-NN metrics cost cap^2 distances per pair; KID uses <= 1000 of these
# Memory hashes compared with all the queries at a time (BatchElements sizes batches up to it).
MEMORY_BATCH = 1 << 16
BAD_FEATURES = "bad_features"  # the error type of an image with a feature MomentsFn cannot sum


def subset_rank(seed: int, set_name: str, image_id: str) -> int:
    """Keyed 64-bit rank of an image within its set: the `cap` smallest are the subset.

    Keyed by the set too, so two sets sharing images draw independent subsets."""
    return keyed_u64(seed, f"{set_name}\0{image_id}")


class SeededSubset(beam.PTransform):
    """PCollection[((set, space), (image id, vector))] -> PCollection[((set, space), (n, d) float32 array)]

    The rows are the `cap` images of smallest subset_rank, in rank order."""

    def __init__(self, cap: int, seed: int) -> None:
        super().__init__()
        self.cap, self.seed = cap, seed

    def expand(self, vectors):
        return (
            vectors
            | "Rank" >> beam.Map(lambda kv, seed: (kv[0], (subset_rank(seed, kv[0][0], kv[1][0]), *kv[1])),
                                 self.seed)
            | "SmallestRanks" >> beam.combiners.Top.SmallestPerKey(self.cap, key=lambda e: e[:2])
            | "Stack" >> beam.MapTuple(lambda key, ranked: (key, _stack(ranked)))
        )


def _stack(ranked: list[tuple[int, str, np.ndarray]]) -> np.ndarray:
    return np.stack([vector for *_, vector in sorted(ranked, key=lambda e: e[:2])]).astype(np.float32)


class SetDistances(beam.PTransform):
    """PCollection[(set name, image id, {space: vector})] -> PCollection[row dict] per pair and space."""

    def __init__(self, pairs: Sequence[tuple[str, str]], cap: int = DEFAULT_SUBSET_CAP, seed: int = 0,
                 kid_subsets: int = KID_SUBSETS) -> None:
        super().__init__()
        self.pairs, self.cap, self.seed, self.kid_subsets = tuple(pairs), cap, seed, kid_subsets

    def expand(self, items):
        vectors = items | "PerSpace" >> beam.FlatMapTuple(
            lambda name, image_id, feats: [((name, space), (image_id, v)) for space, v in feats.items()])
        moments = (
            vectors
            | "DropIds" >> beam.MapTuple(lambda key, id_vector: (key, id_vector[1]))
            | "Moments" >> beam.CombinePerKey(MomentsFn())
        )
        subsets = vectors | "Subset" >> SeededSubset(self.cap, self.seed)
        return (
            {"moments": moments, "subset": subsets}
            | "JoinPerSetAndSpace" >> beam.CoGroupByKey()
            | "KeyBySpace" >> beam.MapTuple(
                lambda key, joined: (key[1], (key[0], (only(joined["moments"]), only(joined["subset"])))))
            | "GroupBySpace" >> beam.GroupByKey()
            | "Compare" >> beam.FlatMapTuple(self._compare)
        )

    def _compare(self, space: str, per_set) -> list[dict]:
        rows = compare_sets(dict(per_set), self.pairs, seed=self.seed, kid_subsets=self.kid_subsets)
        return [{"space": space, **row} for row in rows]


class CopyHistograms(beam.PTransform):
    """PCollection[(set name, pHash)] -> PCollection[(set name, int64 histogram)] of distances to the
    nearest of `memory_hashes` (a PCollection[int]).

    The query sets (a sample, a reference: thousands to millions of hashes) are the side
    input and the memory (up to billions) streams past them in batches: each batch gives
    every distinct query its nearest distance within the batch, and the element-wise
    minimum over batches is the nearest in the whole memory. No worker holds the memory.
    """

    def __init__(self, memory_hashes, radius: int = DEFAULT_RADIUS) -> None:
        super().__init__()
        self.memory_hashes, self.radius = memory_hashes, radius

    def expand(self, queries):
        sets = (queries
                | "AllQueries" >> beam.combiners.ToList()
                | "QuerySets" >> beam.Map(_query_sets))
        nearest = (self.memory_hashes
                   | "BatchMemory" >> beam.BatchElements(max_batch_size=MEMORY_BATCH)
                   | "NearestInBatch" >> beam.Map(self._nearest, beam.pvalue.AsSingleton(sets))
                   | "NearestInMemory" >> beam.CombineGlobally(_elementwise_min))
        return sets | "Histograms" >> beam.FlatMap(self._histograms, beam.pvalue.AsSingleton(nearest))

    def _nearest(self, memory: list[int], sets: QuerySets) -> np.ndarray:
        distances = nearest_distances(sets.distinct, np.array(memory, dtype=np.int64), self.radius)
        return distances.astype(np.uint8)  # <= radius + 1 <= 33: a byte each, for the combine

    def _histograms(self, sets: QuerySets, nearest: np.ndarray | None):
        if nearest is None:  # an empty memory: every query is farther than the radius
            nearest = np.full(len(sets.distinct), self.radius + 1, dtype=np.uint8)
        for name, index in sets.members:
            yield name, distance_histogram(nearest[index].astype(np.int64), self.radius)


class QuerySets(NamedTuple):
    """Every set's query hashes as indices into one sorted array of the distinct hashes."""

    distinct: np.ndarray  # int64, sorted, unique
    members: tuple[tuple[str, np.ndarray], ...]  # (set name, index of each of its hashes), by name


def _query_sets(queries: list[tuple[str, int]]) -> QuerySets:
    by_set: dict[str, list[int]] = defaultdict(list)
    for name, phash in queries:
        by_set[name].append(phash)
    hashes = np.array([phash for _, phash in queries], dtype=np.int64)
    values = distinct(hashes)
    return QuerySets(values, tuple((name, np.searchsorted(values, np.array(by_set[name], dtype=np.int64)))
                                   for name in sorted(by_set)))


def _elementwise_min(arrays) -> np.ndarray | None:
    """The element-wise minimum of distance arrays; None for none (an empty memory), and
    None inputs (a merged empty accumulator) are skipped."""
    present = [array for array in arrays if array is not None]
    return np.minimum.reduce(present) if present else None


class EvaluateSets(beam.PTransform):
    """PBegin -> {"distances": PCollection[dict], "copying": PCollection[dict]}, one dict each.

    The memory is always read; the sample (its `image_sets.sample_parts`) and the reference
    are optional. Every pair of
    the sets given is compared in every feature space; the sample and the reference are
    matched against the memory's pHashes for copying and contamination.
    `with_embedding=False` leaves the efficientnet space out even with the vision extra
    (its FD takes the eigenvalues of 1280 x 1280 matrices: about a second a pair).
    `memory_scored`: the memory's images as ScoredImages from ScoreMemory (whose model
    already gave their embedding), used instead of reading and decoding the memory again.
    `sample_population`: the unique images a uniform sample was drawn from (copying.copy_stats).
    `reference_by_default_names`: readers.read_other_set's (False: the references' column named).
    """

    def __init__(self, memory_parts: list[str], sample_parts: list[tuple[str, frozenset[str]]] | None,
                 reference_shards: list[Shard],
                 reader: ReaderConfig, fingerprint: FingerprintConfig, threshold: int, seed: int,
                 cap: int = DEFAULT_SUBSET_CAP, kid_subsets: int = KID_SUBSETS, with_embedding: bool = True,
                 memory_scored=None, sample_population: int | None = None,
                 reference_by_default_names: bool = True) -> None:
        super().__init__()
        # False when the references' image column is named: readers.read_other_set
        self.reference_by_default_names = reference_by_default_names
        self.sample_population = sample_population  # of a uniform sample: copying.copy_stats
        self.memory_scored = memory_scored
        # resolved here, on the launcher: workers of a remote runner need the export's path
        self.model_path = embedding_model() if with_embedding else None
        self.memory_parts, self.reference_shards = memory_parts, reference_shards
        self.sample_parts = sample_parts
        self.reader, self.fingerprint = reader, fingerprint
        self.threshold, self.seed, self.cap, self.kid_subsets = threshold, seed, cap, kid_subsets
        self.radius = max(DEFAULT_RADIUS, threshold)

    def expand(self, pbegin):
        images, features, failures = [], [], []
        if self.memory_scored is None:
            memory = (pbegin
                      | "MemoryParts" >> beam.Create(self.memory_parts)
                      | "ReadMemory" >> beam.FlatMap(read_memory_part))
            images.append(memory)
        else:  # decoded, featurized and embedded already
            memory = self.memory_scored
            scored = memory | "MemoryFeatures" >> ScoredFeatures(MEMORY, self.model_path is not None)
            features.append(scored["features"])
            failures.append(scored[FAILED])
        memory_hashes = memory | "MemoryHashes" >> beam.Map(lambda image: image.phash)
        sample_hashes = []
        if self.sample_parts is not None and self.memory_scored is not None and self._sample_of_memory():
            # the sample's images are rows of this memory, already scored: reuse, never recompute
            chosen = frozenset().union(*(ids for _, ids in self.sample_parts))
            sampled = memory | "SampledRows" >> beam.Filter(lambda image: image.scored.image_id in chosen)
            scored = sampled | "SampleFeatures" >> ScoredFeatures(SAMPLE, self.model_path is not None)
            features.append(scored["features"])
            failures.append(scored[FAILED])
            sample_hashes.append(sampled | "SampleHashes" >> beam.Map(lambda image: (SAMPLE, image.phash)))
        elif self.sample_parts is not None:
            # a sample drawn from another memory holds that memory's pHashes, maybe of another
            # --hash_mode: hashed again as this memory's are, as references are
            rehash = None if self._sample_of_memory() else self.fingerprint
            drawn = (pbegin
                     | "SampleParts" >> beam.Create(self.sample_parts)
                     | "ReadSample" >> beam.FlatMapTuple(_read_sample, rehash)
                     .with_outputs(FAILED, main="images"))
            images.append(drawn.images)
            failures.append(drawn[FAILED])
        if self.reference_shards:
            read = (pbegin
                    | "ReferenceShards" >> beam.Create(self.reference_shards)
                    | "ReadReference" >> beam.FlatMap(reference_images, self.reader, self.fingerprint,
                                                     self.reference_by_default_names)
                    .with_outputs(FAILED, main="images"))
            images.append(read.images)
            failures.append(read[FAILED])
        images = images | "AllSets" >> beam.Flatten(pipeline=pbegin.pipeline)  # [] without sets to read
        extract = ExtractFeatures(self.model_path, self.fingerprint.max_pixels)
        extracted = images | "ExtractFeatures" >> extract
        features.append(extracted["features"])
        failures.append(extracted[FAILED])
        return {"distances": self._distances(features, failures),
                "copying": self._copying(images, memory_hashes, sample_hashes)}

    def _sample_of_memory(self) -> bool:
        """Whether the sample was drawn from this memory (its parts are this memory's parts)."""
        mine = {_path(part) for part in self.memory_parts}
        return all(_path(part) in mine for part, _ in self.sample_parts)

    def _distances(self, features, failures):
        checked = (features
                   | "AllFeatures" >> beam.Flatten()
                   | "UsableFeatures" >> beam.FlatMapTuple(_usable_features)
                   .with_outputs(FAILED, main="features"))
        failed = ([*failures, checked[FAILED]]
                  | "AllFailures" >> beam.Flatten()
                  | "CountFailures" >> beam.combiners.Count.PerElement()
                  | "FailureList" >> beam.combiners.ToList())
        return (checked.features
                | "SetDistances" >> SetDistances(PAIRS, self.cap, self.seed, self.kid_subsets)
                | "AllRows" >> beam.combiners.ToList()
                | "DistancesSection" >> beam.Map(self._distances_section, beam.pvalue.AsSingleton(failed)))

    def _distances_section(self, rows: list[dict], failed: list[tuple[tuple[str, str], int]]) -> dict:
        by_set: dict[str, dict[str, int]] = {}
        for (set_name, error_type), n in failed:
            by_set.setdefault(set_name, {})[error_type] = n
        return distances_section(rows, PAIRS, SPACES, self.cap, self.seed, self.kid_subsets, by_set)

    def _copying(self, images, memory_hashes, known_hashes):
        read = (images
                | "NotMemory" >> beam.Filter(lambda image: image.set_name != MEMORY)
                | "SetAndHash" >> beam.Map(lambda image: (image.set_name, image.phash)))
        queries = [read, *known_hashes] | "AllQueries" >> beam.Flatten()
        return (queries
                | "CopyHistograms" >> CopyHistograms(memory_hashes, self.radius)
                | "AllHistograms" >> beam.combiners.ToList()
                | "CopyingSection" >> beam.Map(self._copying_section))

    def _copying_section(self, histograms: list[tuple[str, np.ndarray]]) -> dict:
        found = dict(histograms)
        empty = np.zeros(self.radius + 2, dtype=np.int64)  # a set given but with no image
        copy = found.get(SAMPLE, empty) if self.sample_parts is not None else None
        contamination = found.get(REFERENCE, empty) if self.reference_shards else None
        return copying_section(copy, contamination, self.threshold, self.sample_population,
                               self.fingerprint.orientations)


class ScoredFeatures(beam.PTransform):
    """PCollection[ScoredImage] -> {"features": (set, id, {space: vector}), FAILED: (set, error
    type)}: the features of images already scored (without the classifier's embedding unless
    `embedding`)."""

    def __init__(self, set_name: str, embedding: bool) -> None:
        super().__init__()
        self.set_name, self.embedding = set_name, embedding

    def expand(self, images):
        split = (images | "Split" >> beam.FlatMap(_scored_features, self.set_name, self.embedding)
                 .with_outputs(FAILED, main="features"))
        return {"features": split.features, FAILED: split[FAILED]}


def _scored_features(image: ScoredImage, set_name: str, embedding: bool):
    """A ScoredImage -> (set, id, features), or a (set, error type) failure."""
    if image.features is None:
        yield beam.pvalue.TaggedOutput(FAILED, (set_name, image.scored.error_type))
    else:
        features = image.features.items()
        yield set_name, image.scored.image_id, {k: v for k, v in features if embedding or k != EMBEDDING}


def _usable_features(set_name: str, image_id: str, features: dict[str, np.ndarray]) -> Iterator:
    """The image's features, or a (set, BAD_FEATURES) failure when a value is NaN, infinite or
    beyond MomentsFn's BOUND (a broken embedding model): one such vector ended the whole run."""
    if all(np.all(np.abs(vector) < BOUND) for vector in features.values()):  # NaN compares False
        yield set_name, image_id, features
    else:
        yield beam.pvalue.TaggedOutput(FAILED, (set_name, BAD_FEATURES))


def _path(url: str) -> str:
    return fsspec.core.url_to_fs(url)[1]


def _read_sample(url: str, image_ids: frozenset[str], rehash: FingerprintConfig | None = None) -> Iterator:
    """The sample's SetImages in one memory part, their pHashes made again with `rehash` when
    given; an image that cannot be hashed so (over its --max_pixels, say) is a failure."""
    for image in read_memory_part(url, image_ids):
        if rehash is None:
            yield image._replace(set_name=SAMPLE)
            continue
        try:
            yield image._replace(set_name=SAMPLE, phash=query_phash(image.data, rehash))
        except ImageError as e:
            yield beam.pvalue.TaggedOutput(FAILED, (SAMPLE, e.error_type))
