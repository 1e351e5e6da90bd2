"""Materialize one shard: re-read it and write its images, duplicates and rejects parts.

This is where image bytes meet the tables: the kept records' bytes (and rejected
records' bytes, up to a cap) come from re-reading the shard inside one worker,
never from a shuffle. Output names derive from the shard index, so a retried or
re-run shard overwrites its own parts and the memory's content is the same whatever
the runner or worker count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from memgen.dedup import DuplicateRow, KeptImage
from memgen.memory import TABLES, join, part_name, write_rows
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard


def materialize_shard(memory: str, shard: Shard, kept: list[KeptImage],
                      duplicates: list[DuplicateRow], rejects: list[Reject],
                      config: ReaderConfig) -> Counter:
    """Write the shard's three parts; returns counts of what was written."""
    counts: Counter = Counter()
    kept_by_ordinal = {k.ordinal: k for k in kept}
    rejects_by_ordinal = {r.ordinal: r for r in rejects}

    def image_rows() -> Iterator[dict]:
        """Streams kept rows (bounded memory) and attaches rejected records' bytes."""
        if not kept and all(r.stage == "open" for r in rejects):
            return
        for item in read_shard(shard, config):
            if item.ordinal in kept_by_ordinal and isinstance(item, Record):
                row = _image_row(kept_by_ordinal.pop(item.ordinal), item, shard)
                counts["image_bytes"] += row["n_bytes"]
                yield row
            elif item.ordinal in rejects_by_ordinal:
                reject = rejects_by_ordinal[item.ordinal]
                rejects_by_ordinal[item.ordinal] = reject._replace(
                    data=item.data[: config.reject_data_cap] if item.data else None)

    name = part_name(shard.index)
    counts["images"] = write_rows(join(memory, "images", name), "images", image_rows())
    for lost in kept_by_ordinal.values():  # the shard changed between the two reads
        rejects_by_ordinal[lost.ordinal] = Reject(
            shard.index, lost.ordinal, shard.source(lost.fp.locator), "materialize", "changed_during_run",
            "record not found when the shard was re-read", lost.fp.n_bytes)
    all_rejects = [rejects_by_ordinal[o] for o in sorted(rejects_by_ordinal)]
    counts["duplicates"] = write_rows(
        join(memory, "duplicates", name), "duplicates",
        (d.row(shard) for d in sorted(duplicates, key=lambda d: d.ordinal)))
    counts["rejects"] = write_rows(
        join(memory, "rejects", name), "rejects",
        (r.row(config.reject_data_cap) for r in all_rejects))
    for table in TABLES:
        counts[f"parts:{table}"] += counts[table] > 0  # a part without rows is not written
    for d in duplicates:
        counts[f"duplicates_{d.kind}"] += 1
    for r in all_rejects:
        counts[f"reject:{r.error_type}"] += 1
    return counts


def _image_row(kept: KeptImage, record: Record, shard: Shard) -> dict:
    return {**kept.row(shard), "image": record.data, "caption": record.caption, "url": record.url,
            "metadata": record.metadata}

