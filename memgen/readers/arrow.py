"""The Arrow IPC reader: a file's record batches (memgen.arrowfile) -> Records and Rejects,
row by row as a Parquet's (the same columns, Hugging Face Image structs, lists of images)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import pyarrow as pa

from memgen.arrowfile import record_batches
from memgen.readers.columns import shard_columns
from memgen.readers.config import DAMAGE, ReaderConfig, ShardItem, failure
from memgen.readers.keys import Keys
from memgen.readers.parquet import batch_items
from memgen.records import Reject, Shard
from memgen.transfer import error_text


def read_arrow(shard: Shard, f: IO[bytes], config: ReaderConfig) -> Iterator[ShardItem]:
    """Batch by batch, front to back: damage (a batch that does not decode, a stream cut
    short) ends the shard with a reject naming the rows from the first one lost, as a tar's
    damage ends it; a record's ordinal is its row (a row of a list of images: row * PER_ROW + n)."""
    keys = Keys()
    try:
        schema, batches = record_batches(f)
    except DAMAGE + (pa.ArrowException,) as e:
        failed = failure(e)
        said = error_text(e)
        if isinstance(e, pa.ArrowException):  # pyarrow's words say nothing of what the file is not
            said = f"no Arrow IPC stream, or a damaged one: {said}"
        yield Reject(shard.index, 0, shard.source(), "read", failed, said[:500])
        return
    columns = shard_columns(schema, config, shard)
    if isinstance(columns, Reject):
        yield columns
        return
    row = 0
    try:
        for batch in batches:
            yield from batch_items(shard, batch, row, keys, columns, config)
            row += batch.num_rows
    except DAMAGE + (pa.ArrowException,) as e:
        yield Reject(shard.index, row * columns.per_row, shard.source(), "read", failure(e),
                     f"rows from {row} on: {error_text(e)}"[:500])
