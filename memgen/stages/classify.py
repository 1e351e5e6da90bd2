"""Concept stages of evaluate: memory parts -> scored images -> the report's concept section.

Image bytes are read from a Parquet part inside the worker that scores them; what
leaves that fused stage are Scored rows (ids, copies, P(cat), label, error) and
mergeable tallies. A sample (--sample-size) is chosen over the (small) id and copies
columns before any bytes are read: the most copied images taken whole (a stratum of at
most half the sample: memgen.prevalence.take_all), the rest uniformly, by the smallest
keyed hashes blake2b(seed, image_id).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from memgen.classify import ClassifierSpec
from memgen.classify.captions import caption_is_cat
from memgen.classify.concept import (
    Design,
    FailureTally,
    LabelledFile,
    Scored,
    calibration_from,
    concept_section,
    from_probability,
)
from memgen.classify.images import decode_ahead
from memgen.classify.onnx_model import concept_probability, inference_session, to_model_input
from memgen.decode import ImageError
from memgen.memory import part_rows, read_columns
from memgen.prevalence import Tally, take_all
from memgen.sampling import keyed_u64
from memgen.shards import open_input

READ_BATCH_ROWS = 64  # image rows held at once while a part is read
MIN_BATCH, MAX_BATCH = 8, 64  # RunInference batches: 64 is past where onnxruntime stops gaining
FAILED = "failed"
IMAGE_COLUMNS = ["image_id", "copies", "image", "caption", "source"]
CALIBRATION_CHUNK = 64  # labelled files read and decoded together, like the rows of one part
MODEL_IMAGES = "model_images"  # counter of the images the ONNX model has run on, in every stage


def count_model_images(n: int) -> None:
    beam.metrics.Metrics.counter("evaluate", MODEL_IMAGES).inc(n)


def undecodable(image_id: str, copies: int, source: str, error: ImageError) -> Scored:
    """The Scored row of an image that cannot be decoded (counted as a decode failure)."""
    beam.metrics.Metrics.counter("evaluate", "decode_failures").inc()
    return Scored(image_id, copies, None, None, error.error_type, str(error), source)


class SessionFn(beam.DoFn):
    """A DoFn that runs an ONNX model: one onnxruntime session a DoFn instance."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.session = None

    def setup(self) -> None:
        self.session = inference_session(self.model_path)


class ImageItem(NamedTuple):
    """An image to score, with its bytes; lives only inside the worker that read it."""

    image_id: str
    copies: int
    data: bytes
    caption: str | None
    source: str


def sample_key(seed: int, image_id: str) -> int:
    """The image's sampling key: the n smallest keys are a uniform sample without replacement.
    Keyed by the job too: `memgen sample`'s key of the same seed (the largest win there) would
    make the two draws complements, so that evaluate never labelled a sampled image."""
    return keyed_u64(seed, f"concept\0{image_id}")


def read_ids(url: str) -> Iterator[tuple[str, int]]:
    """(image_id, copies) of every row of one part: two small columns, no bytes."""
    table = read_columns(url, ["image_id", "copies"])
    yield from zip(table.column("image_id").to_pylist(), table.column("copies").to_pylist(), strict=True)


def read_images(url: str, selected: frozenset[str] | None) -> Iterator[ImageItem]:
    """The part's images, a batch at a time; with `selected`, only those ids (memory.part_rows)."""
    for row in part_rows(url, IMAGE_COLUMNS, selected, READ_BATCH_ROWS):
        yield ImageItem(row["image_id"], row["copies"], row["image"], row["caption"], row["source"])


def read_labelled(item: LabelledFile) -> ImageItem:
    """A calibration file as an ImageItem (image_id = its URL); a file that cannot be read
    (missing, a folder, no permission) has empty bytes, and is counted as failed."""
    try:
        with open_input(item.url) as f:
            data = f.read()
    except OSError:
        data = b""
    return ImageItem(item.url, 1, data, item.caption, item.url)


class CertainImages(NamedTuple):
    """A sample's take-all stratum (memgen.prevalence.take_all): its ids and sums."""

    ids: frozenset[str] = frozenset()
    images: int = 0
    copies: int = 0


class SelectSample(beam.PTransform):
    """parts -> three singletons: the frozenset of the n image ids to score, the population's
    (images, copies) and its CertainImages. The most copied images are taken whole
    (prevalence.take_all); the rest of the sample are the other images with the smallest keys."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__()
        self.n = n
        self.seed = seed

    def expand(self, parts):
        ids = parts | "ReadIds" >> beam.FlatMap(read_ids)
        population = (ids
                      | "Counts" >> beam.Map(lambda r: Population(1, r[1], r[1], r[1]))
                      | "Population" >> beam.CombineGlobally(_population_of))
        certain = (ids
                   | "MostCopied" >> beam.combiners.Top.Of(self.n // 2, key=lambda r: (r[1], r[0]))
                   | "TakeAll" >> beam.Map(_certain, beam.pvalue.AsSingleton(population), self.n))
        keyed = ids | "Key" >> beam.Map(lambda r, seed: (sample_key(seed, r[0]), r[0]), self.seed)
        selected = (keyed
                    | "Smallest" >> beam.combiners.Top.Smallest(self.n)
                    | "Drawn" >> beam.Map(_with_drawn, beam.pvalue.AsSingleton(certain), self.n))
        return selected, population, certain


def _certain(most_copied: list[tuple[str, int]], population: Population, n: int) -> CertainImages:
    taken = most_copied[: take_all([copies for _, copies in most_copied], n, population.copies)]
    return CertainImages(frozenset(i for i, _ in taken), len(taken), sum(c for _, c in taken))


def _with_drawn(smallest: list[tuple[int, str]], certain: CertainImages, n: int) -> frozenset[str]:
    """The certain images and, of the others, those with the smallest keys up to n in all:
    the n smallest keys hold enough of them."""
    drawn = [image_id for _, image_id in sorted(smallest) if image_id not in certain.ids]
    return certain.ids | frozenset(drawn[: n - certain.images])


class Population(NamedTuple):
    """A memory's images, the records they stand for, and the fewest and most one stands for."""

    images: int
    copies: int
    fewest_copies: int
    most_copies: int


def _population_of(parts: Iterable[Population]) -> Population:
    """Populations merged; a CombineGlobally callable, so it also merges its own outputs."""
    parts = [p for p in parts if p.images]  # the empty one has no fewest or most
    if not parts:
        return Population(0, 0, 0, 0)
    return Population(sum(p.images for p in parts), sum(p.copies for p in parts),
                      min(p.fewest_copies for p in parts), max(p.most_copies for p in parts))


def items_of(source: str | tuple[LabelledFile, ...], selected: frozenset[str] | None = None
             ) -> Iterator[ImageItem]:
    """The images of a source: a memory part's URL, or a chunk of labelled files."""
    if isinstance(source, str):
        yield from read_images(source, selected)
    else:
        yield from map(read_labelled, source)


class _DecodeFn(beam.DoFn):
    """A source -> (image_id, copies) keyed pixels, or a failed Scored row; decoded in threads."""

    def __init__(self, size: int, max_pixels: int) -> None:
        self.size, self.max_pixels = size, max_pixels

    def process(self, source, selected=None):
        for item, pixels in decode_ahead(items_of(source, selected), _data, self.size,
                                         max_pixels=self.max_pixels):
            if isinstance(pixels, ImageError):
                failed = undecodable(item.image_id, item.copies, item.source, pixels)
                yield beam.pvalue.TaggedOutput(FAILED, failed)
            else:
                yield (item.image_id, item.copies, item.source), pixels


def _data(item: ImageItem) -> bytes:
    return item.data


class ConceptModelHandler(ModelHandler):
    """RunInference's model: an ONNX classifier under onnxruntime; a batch of uint8 pixels
    -> P(concept) per image. The session does not spin idle threads: decoding threads
    share the same cores."""

    def __init__(self, spec: ClassifierSpec) -> None:
        super().__init__(min_batch_size=MIN_BATCH, max_batch_size=MAX_BATCH)
        self.spec = spec

    def load_model(self):
        return inference_session(self.spec.model_path)

    def run_inference(self, batch, model, inference_args=None):
        x = to_model_input(np.stack(batch), self.spec.input)
        scores = model.run(None, {model.get_inputs()[0].name: x})[0]
        count_model_images(len(batch))
        # the pixels are not kept in the result: only P(concept) leaves this step
        p_concept = concept_probability(scores, self.spec.classes, self.spec.scores)
        return [PredictionResult(None, float(p)) for p in p_concept]

    def get_num_bytes(self, batch) -> int:
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return "memgen_concept"


def _scored(keyed_result, threshold: float) -> Scored:
    (image_id, copies, source), result = keyed_result
    return from_probability(image_id, copies, source, float(result.inference), threshold)


def score_caption(item: ImageItem) -> Scored:
    """An image without a caption cannot be labelled by it: a failure, not a non-cat (which
    would pull the fraction towards 0 with nothing to show for it)."""
    if not (item.caption or "").strip():
        return Scored(item.image_id, item.copies, None, None, "no_caption",
                      "the caption classifier needs a caption", item.source)
    positive = caption_is_cat(item.caption)
    return Scored(item.image_id, item.copies, float(positive), positive)


class ScoreImages(beam.PTransform):
    """Sources (part URLs or chunks of labelled files) -> Scored rows, failed decodes included.

    `selected`: an optional singleton frozenset of the image ids to score (a sample).
    """

    def __init__(self, spec: ClassifierSpec, selected=None) -> None:
        super().__init__()
        self.spec = spec
        self.selected = selected

    def expand(self, sources):
        side = () if self.selected is None else (beam.pvalue.AsSingleton(self.selected),)
        if self.spec.kind == "caption":
            return (sources
                    | "ReadImages" >> beam.FlatMap(items_of, *side)
                    | "MatchCaption" >> beam.Map(score_caption))
        decode = (beam.ParDo(_DecodeFn(self.spec.input.size, self.spec.max_pixels), *side)
                  .with_outputs(FAILED, main="pixels"))
        decoded = sources | "ReadAndDecode" >> decode
        scored = (decoded.pixels
                  | "RunInference" >> RunInference(KeyedModelHandler(ConceptModelHandler(self.spec)))
                  | "Label" >> beam.Map(_scored, self.spec.threshold))
        return (scored, decoded[FAILED]) | "WithFailures" >> beam.Flatten()


class TallyFn(beam.CombineFn):
    """Scored rows -> (Tally of the labelled, FailureTally of the rest)."""

    def create_accumulator(self):
        return Tally(), FailureTally()

    def add_input(self, acc, s: Scored):
        tally, failures = acc
        if s.label is None:
            return tally, failures.add(s)
        return tally.add(s.label, s.copies), failures

    def merge_accumulators(self, accumulators):
        tally, failures = Tally(), FailureTally()
        for t, f in accumulators:
            tally, failures = tally.merge(t), failures.merge(f)
        return tally, failures

    def extract_output(self, acc):
        return acc


class Calibrate(beam.PTransform):
    """PBegin -> one (Calibration, failed) pair from scoring the labelled files."""

    def __init__(self, spec: ClassifierSpec, labelled: list[LabelledFile]) -> None:
        super().__init__()
        self.spec = spec
        self.labelled = labelled

    def expand(self, pbegin):
        truth = {item.url: item.positive for item in self.labelled}
        chunks = [tuple(self.labelled[i:i + CALIBRATION_CHUNK])
                  for i in range(0, len(self.labelled), CALIBRATION_CHUNK)]
        return (pbegin
                | "LabelledFiles" >> beam.Create(chunks)
                | "Score" >> ScoreImages(self.spec)
                | "Collect" >> beam.combiners.ToList()
                | "Confusion" >> beam.Map(calibration_from, truth))


class EstimateConcept(beam.PTransform):
    """PBegin -> one dict: the `concept` section of report.json for a memory's parts.

    `scored`: the memory's images already scored by another stage (PCollection[Scored],
    every image, failures included), for a model that also gives the distances' embedding
    and must run once per image; the census or the sample then takes its images from it.
    """

    def __init__(self, spec: ClassifierSpec, parts: list[str], sample_size: int | None, seed: int,
                 labelled: list[LabelledFile] | None, calibration_file: str | None, scored=None) -> None:
        super().__init__()
        self.scored = scored
        self.spec = spec
        self.parts = parts
        self.sample_size = sample_size
        self.seed = seed
        self.labelled = labelled
        self.calibration_file = calibration_file

    def expand(self, pbegin):
        parts = pbegin | "Parts" >> beam.Create(self.parts)
        selected = None
        if self.sample_size:
            chosen = parts | "SelectSample" >> SelectSample(self.sample_size, self.seed)
            selected, population, certain = chosen
        else:
            population = pbegin | "Census" >> beam.Create([None])
            certain = pbegin | "NoneTakenWhole" >> beam.Create([CertainImages()])
        if self.labelled:
            calibration = pbegin | "Calibrate" >> Calibrate(self.spec, self.labelled)
        else:
            calibration = pbegin | "NoCalibration" >> beam.Create([None])
        if self.scored is None:
            scored = parts | "ScoreMemory" >> ScoreImages(self.spec, selected)
        elif selected is None:
            scored = self.scored
        else:
            scored = self.scored | "InSample" >> beam.Filter(lambda s, ids: s.image_id in ids,
                                                            beam.pvalue.AsSingleton(selected))
        certain_ids = beam.pvalue.AsSingleton(certain)
        return (scored
                | "Stratum" >> beam.Map(lambda s, taken: (s.image_id in taken.ids, s), certain_ids)
                | "Tally" >> beam.CombinePerKey(TallyFn())
                | "ByStratum" >> beam.combiners.ToDict()
                | "Section" >> beam.Map(_section, beam.pvalue.AsSingleton(population), certain_ids,
                                        beam.pvalue.AsSingleton(calibration), self.spec, self.sample_size,
                                        self.seed, self.calibration_file))


def _section(by_stratum: dict[bool, tuple[Tally, FailureTally]], population: Population | None,
             certain: CertainImages, calibration, spec: ClassifierSpec, sample_size: int | None, seed: int,
             calibration_file: str | None) -> dict:
    """`by_stratum`: the tallies of the drawn images (False) and of those taken whole (True)."""
    none = Tally(), FailureTally()
    (tally, failures), (whole, whole_failures) = by_stratum.get(False, none), by_stratum.get(True, none)
    failures = failures.merge(whole_failures)
    if population is None or sample_size >= population.images:  # every image was scored or failed
        tally, whole = tally.merge(whole), Tally()
        scored = tally.n + failures.images, tally.copies + failures.copies
        design = Design("census", *scored, sample_size, seed)
    else:
        same = population.most_copies if population.fewest_copies == population.most_copies else None
        design = Design("sample", population.images, population.copies, sample_size, seed, certain.images,
                        certain.copies, same)
    return concept_section(spec, tally, failures, design, calibration, calibration_file, whole)
