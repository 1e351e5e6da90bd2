"""Materialize one shard: re-read it and write its images, duplicates and rejects parts.

This is where image bytes meet the tables: the kept records' bytes (and rejected
records' bytes, up to a cap) come from re-reading the shard inside one worker,
never from a shuffle. Output names derive from the shard index, so a retried or
re-run shard overwrites its own parts and the memory's content is the same whatever
the runner or worker count.

Two steps, because a shard can change between its two reads: `write_images` writes the
images and rejects parts and names the representatives it could not write (their records
are rejects); `write_duplicates`, once every shard's images are written, writes the
duplicates part, and a record whose representative was lost becomes a reject instead of a
row pointing at no image.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterator

from memgen.dedup import DuplicateRow, KeptImage
from memgen.memory import join, part_name, write_rows
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard

# the rejects part of a shard's duplicates whose representative was lost (beside its own part)
ORPHANS = "orphans"


def write_images(memory: str, shard: Shard, kept: list[KeptImage], rejects: list[Reject],
                 config: ReaderConfig) -> tuple[Counter, list[bytes]]:
    """Write the shard's images and rejects parts; returns counts of what was written and the
    image ids of representatives the re-read did not find (the shard changed)."""
    counts: Counter = Counter()
    kept_by_ordinal = {k.ordinal: k for k in kept}
    rejects_by_ordinal = {r.ordinal: r for r in rejects}
    found_instead: dict[int, bytes] = {}  # a kept record's place held other bytes on the re-read
    unreadable: list[str] = []  # why the re-read failed before it found every kept record

    def image_rows() -> Iterator[dict]:
        """Streams kept rows (bounded memory) and attaches rejected records' bytes."""
        if not kept and all(_whole_shard(r) for r in rejects):
            return  # nothing to write, and no record's bytes to attach: a dead server is not waited out twice
        for item in read_shard(shard, config):
            if isinstance(item, Reject) and item.error_type == "unreadable" and kept_by_ordinal:
                unreadable.append(item.message)  # a server error, a cut or silent connection
            kept_here = kept_by_ordinal.get(item.ordinal)
            if kept_here and isinstance(item, Record) and _fingerprinted(item, kept_here):
                row = _image_row(kept_by_ordinal.pop(item.ordinal), item, shard)
                counts["image_bytes"] += row["n_bytes"]
                yield row
            elif kept_here and item.data:
                found_instead[item.ordinal] = item.data[: config.reject_data_cap]
            elif item.ordinal in rejects_by_ordinal:
                reject = rejects_by_ordinal[item.ordinal]
                rejects_by_ordinal[item.ordinal] = reject._replace(
                    data=item.data[: config.reject_data_cap] if item.data else None)

    name = part_name(shard.index)
    _written(counts, "images", write_rows(join(memory, "images", name), "images", image_rows()))
    for lost in kept_by_ordinal.values():
        found = found_instead.get(lost.ordinal)
        if unreadable and not found:  # a server error, a cut or silent connection: worth a retry
            kind, why = "unreadable", f"the shard could not be re-read to write it: {unreadable[0]}"
        else:  # the shard changed between the two reads
            kind, why = "changed_during_run", ("other bytes (kept here) when the shard was re-read" if found
                                               else "record not found when the shard was re-read")
        rejects_by_ordinal[lost.ordinal] = Reject(shard.index, lost.ordinal, shard.source(lost.fp.locator),
                                                  "materialize", kind, why[:500], lost.fp.n_bytes, found)
    _write_rejects(counts, join(memory, "rejects", name),
                   [rejects_by_ordinal[o] for o in sorted(rejects_by_ordinal)], config)
    return counts, [k.fp.image_id for k in kept_by_ordinal.values()]


def write_duplicates(memory: str, shard: Shard, duplicates: list[DuplicateRow], lost: Collection[bytes],
                     config: ReaderConfig) -> Counter:
    """Write the shard's duplicates part; the records whose representative is `lost` (not
    written by its shard's write_images) go to a rejects part of their own."""
    counts: Counter = Counter()
    rows = sorted(duplicates, key=lambda d: d.ordinal)
    orphans = [Reject(shard.index, d.ordinal, shard.source(d.locator), "materialize",
                      "representative_changed", f"its representative {d.representative.hex()} was not "
                      "written: its shard changed during the run or could not be re-read (see its "
                      "rejects); rerun to keep it", d.n_bytes)
               for d in rows if d.representative in lost]
    placed = [d for d in rows if d.representative not in lost]
    _written(counts, "duplicates", write_rows(join(memory, "duplicates", part_name(shard.index)),
                                              "duplicates", (d.row(shard) for d in placed)))
    for d in placed:
        counts[f"duplicates_{d.kind}"] += 1
    _write_rejects(counts, join(memory, "rejects", part_name(shard.index, ORPHANS)), orphans, config)
    return counts


def _write_rejects(counts: Counter, url: str, rejects: list[Reject], config: ReaderConfig) -> None:
    _written(counts, "rejects", write_rows(url, "rejects", (r.row(config.reject_data_cap) for r in rejects)))
    for r in rejects:
        counts[f"reject:{r.error_type}"] += 1


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
