"""The images report.html shows, and the page: read and written by evaluate's last step,
once report.json is written (a few dozen files), or by the command for a run killed
between the two (`ReportPage`).

- sample: the first ranks of a finished sample (index.parquet order), bytes from the memory;
- reference: the first images of the reference shards in discovery order;
- clusters: the largest duplicate clusters of the memory (duplicates/ grouped by
  representative), the representative from the memory and its duplicates re-read from
  the shards they came from (the memory keeps only representatives' bytes); a shard
  that can no longer be read leaves only the members that could.
Everything ends as small JPEG `Thumb`s (memgen.report_html); an image that cannot be
decoded is left out, with a log line.
"""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memgen.decode import DEFAULT_MAX_PIXELS
from memgen.memory import image_parts, join, open_table, part_rows
from memgen.outputs import write_atomic
from memgen.readers import ReaderConfig, read_other_set, read_shard
from memgen.records import Record, Shard, unprintable
from memgen.report import REPORT_HTML
from memgen.report_html import Cluster, Figures, Thumb, make_thumb, render
from memgen.sample_output import INDEX, sample_memory
from memgen.shards import discovered_kinds, split_source

log = logging.getLogger("memgen.report")
SIDE_BY_SIDE = 12  # images per side in Figure 2
CONTACT_SHEET = 48  # images in Figure 3
CLUSTERS, CLUSTER_MEMBERS = 5, 8


@dataclass(frozen=True)
class ReportPage:
    """Where report.html's figures come from: the memory, the sample and the reference shards
    (discovered once, for the distances too) read with the memory's reader (the references
    with `reference_reader` when given), images over `max_pixels` (the memory's cap) left out."""

    memory: str
    sample: str | None
    references: tuple[Shard, ...]
    reader: ReaderConfig
    max_pixels: int = DEFAULT_MAX_PIXELS
    reference_reader: ReaderConfig | None = None

    def write(self, out: str, report: dict[str, Any]) -> str:
        """report.html for `report` (report.json's content) in `out`; returns its URL."""
        figures = collect_figures(self.memory, self.sample, list(self.references), self.reader,
                                  self.max_pixels, self.reference_reader)
        return write_html(out, render(report, figures))


def collect_figures(memory: str, sample: str | None, references: list[Shard], reader: ReaderConfig,
                    max_pixels: int = DEFAULT_MAX_PIXELS,
                    reference_reader: ReaderConfig | None = None) -> Figures:
    """The report's figures; `max_pixels`: larger images are left out (the memory's cap);
    `reference_reader`: how the references are read when their image column is named (else
    as the memory's inputs, or by the default names: readers.read_other_set)."""
    sample_thumbs = list(_thumbs(_sample_images(sample, memory, CONTACT_SHEET), max_pixels)) if sample else []
    read = _reference_images(references, SIDE_BY_SIDE, reference_reader or reader, reference_reader is None)
    reference = list(_thumbs(read, max_pixels)) if references else []
    return Figures(reference=reference, sample=sample_thumbs[:SIDE_BY_SIDE], contact_sheet=sample_thumbs,
                   clusters=cluster_galleries(memory, reader, max_pixels=max_pixels))


def _thumbs(images: Iterable[tuple[bytes, str]], max_pixels: int) -> Iterator[Thumb]:
    for data, caption in images:
        try:
            yield make_thumb(data, caption, max_pixels=max_pixels)
        except Exception as e:  # noqa: BLE001 - any undecodable image is left out of the figures
            log.warning("report figure: %s left out (%s: %s)", caption, type(e).__name__, e)


def _memory_images(wanted: Iterable[tuple[str, str]]) -> dict[str, bytes]:
    """Bytes of the (memory part URL, image id) pairs wanted, from those parts: only the row
    groups holding one (a filter on the whole table read every image byte of the memory
    into this process, to show a few)."""
    ids_by_part: dict[str, set[str]] = defaultdict(set)
    for part, image_id in wanted:
        ids_by_part[part].add(image_id)
    return {row["image_id"]: row["image"] for part, ids in sorted(ids_by_part.items())
            for row in part_rows(part, ["image_id", "image"], frozenset(ids))}


def _sample_images(sample: str, memory: str, n: int) -> Iterator[tuple[bytes, str]]:
    _, drawn_from = sample_memory(sample, memory)
    with fsspec.open(join(sample, INDEX), "rb") as f:
        table = pq.read_table(f, columns=["rank", "image_id", "caption", "memory_part"])
    index = table.sort_by("rank").slice(0, n).to_pylist()
    # the index names the part of each
    data = _memory_images((join(drawn_from, "images", row["memory_part"]), row["image_id"]) for row in index)
    for row in index:
        if row["image_id"] in data:
            yield data[row["image_id"]], f"#{row['rank']} {row['caption'] or row['image_id'][:12]}"


def short_source(source: str) -> str:
    """A record's source as a thumbnail names it: its file's name, and its key in a tar or
    Parquet shard whole (a key may hold "/": `0001.tar#x/cat` was shown as `cat`)."""
    shard, key = split_source(source)
    return posixpath.basename(shard) + (f"#{key}" if key else "")


def _reference_images(references: list[Shard], n: int, reader: ReaderConfig,
                      by_default_names: bool = True) -> Iterator[tuple[bytes, str]]:
    count = 0
    for shard in references:
        for item in read_other_set(shard, reader, by_default_names=by_default_names):
            if isinstance(item, Record):
                yield item.data, short_source(item.source)
                count += 1
                if count == n:
                    return


def cluster_galleries(memory: str, reader: ReaderConfig, clusters: int = CLUSTERS,
                      members: int = CLUSTER_MEMBERS, max_pixels: int = DEFAULT_MAX_PIXELS
                      ) -> list[Cluster]:
    """The largest clusters (most duplicates; ties by representative id), representative
    first, with at most `members` images each.

    A representative's duplicates are its `copies` - 1, so the images table names the
    largest clusters, streamed; of the duplicates table (the crawl's size) only their rows
    are read.
    """
    largest: list[tuple[int, str, str]] = []  # (copies, image_id, part), largest first
    for part in image_parts(memory):
        with fsspec.open(part, "rb") as f:
            table = pq.read_table(f, columns=["image_id", "copies"], filters=pc.field("copies") > 1)
        top = table.sort_by([("copies", "descending"), ("image_id", "ascending")]).slice(0, clusters)
        found = [(row["copies"], row["image_id"], part) for row in top.to_pylist()]
        largest = sorted([*largest, *found], key=lambda c: (-c[0], c[1]))[:clusters]
    if not largest:
        return []
    rows = open_table(memory, "duplicates").to_table(
        columns=["source", "representative", "distance"],
        filter=pc.field("representative").isin([rep for _, rep, _ in largest]),
    ).sort_by([("distance", "ascending"), ("source", "ascending")])
    wanted = {rep: rows.filter(pc.equal(rows.column("representative"), rep)).slice(0, members - 1).to_pylist()
              for _, rep, _ in largest}
    found = _records_by_source({row["source"] for rep_rows in wanted.values() for row in rep_rows}, reader)
    representatives = _memory_images((part, rep) for _, rep, part in largest)
    galleries = []
    for copies, rep, _ in largest:
        plural = "s" if copies > 2 else ""
        images = [(representatives[rep], f"representative ({copies - 1} duplicate{plural})")]
        images += [(found[row["source"]], f"d={row['distance']} {short_source(row['source'])}")
                   for row in wanted[rep] if row["source"] in found]
        unread = sum(row["source"] not in found for row in wanted[rep])
        galleries.append(Cluster(copies, list(_thumbs(images, max_pixels)), unread))
    return galleries


def _records_by_source(sources: set[str], reader: ReaderConfig) -> dict[str, bytes]:
    """Bytes of the records with these sources (Shard.source), read from their shards."""
    by_shard: dict[str, set[str]] = defaultdict(set)
    for source in sources:
        by_shard[split_source(source)[0]].add(source)
    found = {}
    for index, (uri, wanted) in enumerate(sorted(by_shard.items())):
        for item in read_shard(_shard(index, uri), reader):
            if isinstance(item, Record) and item.source in wanted:
                found[item.source] = item.data
                wanted.discard(item.source)
                if not wanted:
                    break  # the rest of the shard (a GB on an object store) is not wanted
    missing = len(sources) - len(found)
    if missing:
        log.warning("report figures: %d duplicate images could not be re-read from their shards", missing)
    return found


def _shard(index: int, uri: str) -> Shard:
    """The shard a source names; its uri, as tables show it, may stand for a local name that
    is not UTF-8 (`records.printable`)."""
    raw = unprintable(uri)
    if raw != uri and not _exists(uri):
        return Shard.of(index, raw, discovered_kinds([raw])[raw])
    return Shard(index, uri, discovered_kinds([uri])[uri])


def _exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def write_html(out: str, page: str) -> str:
    """report.html under a temporary name, then renamed (as report.json); returns its URL."""
    url = join(out, REPORT_HTML)
    write_atomic(url, lambda f: f.write(page))
    return url
