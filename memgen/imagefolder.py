"""Hugging Face ImageFolder metadata, read: a `metadata.jsonl`, `.csv` or `.parquet` file
in a folder of images, a row per image named by its `file_name` (from the metadata file's
folder, `train/a.jpg`), the other columns its fields (diffusers' fine-tuning sets keep the
caption under `text`). Which file describes an image is found where it is listed
(shards.FOLDER_METADATA).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import posixpath

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from memgen.shards import open_input
from memgen.text import decode_text

_log = logging.getLogger(__name__)


def folder_row(metadata_file: str, image: str) -> dict | None:
    """The row of `metadata_file` whose file_name is `image` (a path below the metadata file's
    folder), without its file_name; None when it has none, or the file cannot be read (said
    once in a warning: the images are read without it)."""
    return row_in(_rows(metadata_file), metadata_file, image)


def row_in(rows: dict[str, dict], metadata_file: str, image: str) -> dict | None:
    """`image`'s row among `rows` (named_rows' of `metadata_file`), a copy; None if it has none."""
    relative = posixpath.normpath(image[len(posixpath.dirname(metadata_file)):].lstrip("/"))
    row = rows.get(relative)
    return None if row is None else dict(row)  # the cached row stays as read


@functools.lru_cache(maxsize=4)  # a worker reads each of its metadata files once (a row per image)
def _rows(metadata_file: str) -> dict[str, dict]:
    try:
        with open_input(metadata_file) as f:
            return named_rows(metadata_file, f.read())
    except Exception as e:  # noqa: BLE001 - gone, unreadable, not CSV: the images are read without it
        _log.warning("%s: not read (%s: %s); the images it names are read without its fields",
                     metadata_file, type(e).__name__, str(e)[:200])
        return {}


def named_rows(metadata_file: str, data: bytes) -> dict[str, dict]:
    """{file_name: the rest of its row} of a metadata file's bytes: JSON lines, CSV or a Parquet
    table (but for binary values, which are not text). A row without a file_name, or a line
    that is no JSON object, is left out, and said in a warning; a file_name that comes again
    keeps its first row."""
    if metadata_file.endswith(".parquet"):
        rows = [{k: v for k, v in row.items() if not isinstance(v, bytes)}
                for row in pq.read_table(io.BytesIO(data)).to_pylist()]
    elif metadata_file.endswith(".csv"):  # types inferred, as `datasets` reads it (0.9 a number)
        rows = pa_csv.read_csv(io.BytesIO(data)).to_pylist()
    else:
        rows = [_json_object(line) for line in (decode_text(data) or "").splitlines() if line.strip()]
    named: dict[str, dict] = {}
    for row in rows:
        name = row.pop("file_name", None) if row else None
        if isinstance(name, str) and name:
            named.setdefault(posixpath.normpath(name), row)  # ./a.jpg is a.jpg
    if len(named) < len(rows):
        _log.warning("%s: %d of its %d rows name no image (no file_name, a line that is no JSON object, "
                     "a name again): left out", metadata_file, len(rows) - len(named), len(rows))
    return named


def _json_object(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None
