"""Materialize one part: re-read its shards and write its images, duplicates and rejects parts.

This is where image bytes meet the tables: the kept records' bytes (and rejected
records' bytes, up to a cap) come from re-reading the shards inside one worker,
never from a shuffle. A part is written from one tar or Parquet shard, or from up to
FILES_PER_PART consecutive image files (`Parts`). Output names derive from the part's
first shard index, so a retried or re-run part overwrites its own files and the memory's
content is the same whatever the runner or worker count.

Two steps, because a shard can change between its two reads: `write_images` writes the
images and rejects parts and names the representatives it could not write (their records
are rejects); `write_duplicates`, once every part's images are written, writes the
duplicates part, and a record whose representative was lost becomes a reject instead of a
row pointing at no image.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from collections.abc import Collection, Iterator, Sequence

from memgen.dedup import DuplicateRow, KeptImage
from memgen.memory import ParquetPart, join, part_name, write_rows
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from memgen.schema import table_schema

# the rejects part of a part's duplicates whose representative was lost (beside its own part)
ORPHANS = "orphans"
# Image files written into one part: a part each made a folder of a million photos a million
# Parquet files a table (each a request to write, and its footer one to check before a read).
FILES_PER_PART = 256


class Parts:
    """Which shards each part of the memory is written from: a tar or Parquet shard alone,
    consecutive image files (`kind` file) up to FILES_PER_PART together; a part is known by
    its first shard's index (its file name's number)."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self.shards = list(shards)  # in index order: shards[i].index == i
        self.starts: list[int] = []
        run = 0  # image files in the part begun last
        for shard in self.shards:
            if shard.kind != "file" or run in (0, FILES_PER_PART):
                self.starts.append(shard.index)
                run = 0
            run = run + 1 if shard.kind == "file" else 0

    def of(self, shard: int) -> int:
        """The part (its first shard's index) that shard `shard` is written into."""
        return self.starts[bisect.bisect_right(self.starts, shard) - 1]

    def shards_of(self, part: int) -> list[Shard]:
        """The shards part `part` is written from, in order."""
        after = bisect.bisect_right(self.starts, part)
        return self.shards[part: self.starts[after] if after < len(self.starts) else len(self.shards)]


def write_images(memory: str, shards: Sequence[Shard], kept: list[KeptImage], rejects: list[Reject],
                 config: ReaderConfig) -> tuple[Counter, list[bytes]]:
    """Write one part's images and rejects parts from its `shards`; returns counts of what was
    written and the image ids of representatives the re-read did not find (a shard changed).
    Rejects are written as the re-read finds them, with their bytes (a part's rejected bytes
    held at once grew memory by as much: 900 MB for 3,000 rejects), then those it did not find
    or re-read, in order."""
    counts: Counter = Counter()
    kept_at = {(k.fp.shard, k.ordinal): k for k in kept}
    rejects_at = {(r.shard, r.ordinal): r for r in rejects}
    found_instead: dict[tuple[int, int], bytes] = {}  # a kept record's place held other bytes on the re-read
    unreadable: dict[int, str] = {}  # shard -> why its re-read failed before it found every kept record
    keeping = {k.fp.shard for k in kept}
    # the shards to re-read: those with kept records, or rejected ones whose bytes it attaches
    reread = keeping | {r.shard for r in rejects if not _whole_shard(r)}
    name = part_name(shards[0].index)

    with ParquetPart(join(memory, "rejects", name), table_schema("rejects")) as rejects_part:
        def image_rows() -> Iterator[dict]:
            """Streams kept rows (bounded memory), and rejected records with their bytes."""
            for shard in shards:
                if shard.index not in reread:
                    continue  # nothing to write or attach: a dead server is not waited out twice
                for item in read_shard(shard, config):
                    at = (shard.index, item.ordinal)
                    failed = isinstance(item, Reject) and item.error_type == "unreadable"
                    if failed and shard.index in keeping:
                        unreadable.setdefault(shard.index, item.message)  # a server error, a cut, silence
                    kept_here = kept_at.get(at)
                    if kept_here and isinstance(item, Record) and _fingerprinted(item, kept_here):
                        row = _image_row(kept_at.pop(at), item, shard)
                        counts["image_bytes"] += row["n_bytes"]
                        yield row
                    elif kept_here and item.data:
                        found_instead[at] = item.data[: config.reject_data_cap]
                    elif at in rejects_at and rejects_at[at].source == item.source:  # not another in its
                        # place: a Parquet row group that failed in the first read only holds records now
                        data = item.data[: config.reject_data_cap] if item.data else None
                        _add_reject(rejects_part, rejects_at.pop(at)._replace(data=data), counts, config)

        _written(counts, "images", write_rows(join(memory, "images", name), "images", image_rows()))
        by_index = {shard.index: shard for shard in shards}
        for (index, ordinal), lost in kept_at.items():
            found = found_instead.get((index, ordinal))
            if index in unreadable and not found:  # a server error, a cut or silent connection: worth a retry
                kind, why = "unreadable", f"the shard could not be re-read to write it: {unreadable[index]}"
            else:  # the shard changed between the two reads
                kind, why = "changed_during_run", (
                    "other bytes (kept here) when the shard was re-read" if found
                    else "record not found when the shard was re-read")
            rejects_at[index, ordinal] = Reject(index, ordinal, by_index[index].source(lost.fp.locator),
                                                "materialize", kind, why[:500], lost.fp.n_bytes, found)
        for at in sorted(rejects_at):
            _add_reject(rejects_part, rejects_at[at], counts, config)
    _written(counts, "rejects", rejects_part.count)
    return counts, [k.fp.image_id for k in kept_at.values()]


def write_duplicates(memory: str, shards: Sequence[Shard], duplicates: list[tuple[int, DuplicateRow]],
                     lost: Collection[bytes], config: ReaderConfig) -> Counter:
    """Write one part's duplicates part from its `shards`' (shard index, row) pairs; the records
    whose representative is `lost` (not written by its part's write_images) go to a rejects
    part of their own."""
    counts: Counter = Counter()
    by_index = {shard.index: shard for shard in shards}
    rows = sorted(duplicates, key=lambda p: (p[0], p[1].ordinal))
    orphans = [Reject(index, d.ordinal, by_index[index].source(d.locator), "materialize",
                      "representative_changed", f"its representative {d.representative.hex()} was not "
                      "written: its shard changed during the run or could not be re-read (see its "
                      "rejects); rerun to keep it", d.n_bytes)
               for index, d in rows if d.representative in lost]
    placed = [(index, d) for index, d in rows if d.representative not in lost]
    name = part_name(shards[0].index)
    _written(counts, "duplicates", write_rows(join(memory, "duplicates", name), "duplicates",
                                              (d.row(by_index[index]) for index, d in placed)))
    for _, d in placed:
        counts[f"duplicates_{d.kind}"] += 1
        counts["duplicates_known"] += d.known
    _write_rejects(counts, join(memory, "rejects", part_name(shards[0].index, ORPHANS)), orphans, config)
    return counts


def _write_rejects(counts: Counter, url: str, rejects: list[Reject], config: ReaderConfig) -> None:
    with ParquetPart(url, table_schema("rejects")) as part:
        for r in rejects:
            _add_reject(part, r, counts, config)
    _written(counts, "rejects", part.count)


def _add_reject(part: ParquetPart, reject: Reject, counts: Counter, config: ReaderConfig) -> None:
    """A reject row (its bytes up to the cap), counted by its reason and by its stage."""
    part.add(reject.row(config.reject_data_cap))
    counts[f"reject:{reject.error_type}"] += 1
    counts[f"reject_stage:{reject.stage}"] += 1


def _written(counts: Counter, table: str, rows: int) -> None:
    """Count a part's rows and the part itself (a part without rows is not written)."""
    counts[table] += rows
    counts[f"parts:{table}"] += rows > 0


def _whole_shard(reject: Reject) -> bool:
    """A reject of the shard itself, not of a record whose bytes the re-read could attach: it
    could not be opened, or read (a cut or silent connection, damage)."""
    return reject.stage == "open" or (reject.stage == "read"
                                      and reject.error_type in ("unreadable", "corrupt_shard"))


def _fingerprinted(record: Record, kept: KeptImage) -> bool:
    """The re-read record holds the bytes that were fingerprinted: a shard rewritten between
    the two reads would otherwise put other bytes under the image_id."""
    return hashlib.sha256(record.data).digest() == kept.fp.image_id


def _image_row(kept: KeptImage, record: Record, shard: Shard) -> dict:
    return {**kept.row(shard), "image": record.data, "caption": record.caption, "url": record.url,
            "metadata": record.metadata}
