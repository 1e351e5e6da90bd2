"""A record's text fields and metadata JSON: sidecars, a row's values, what JSON cannot hold."""

from __future__ import annotations

import itertools
import json
import math
import re

from memgen.readers.config import ReaderConfig
from memgen.text import decode_text


def metadata_and_url(text: str | None) -> tuple[str | None, str | None]:
    """(metadata JSON text, url) of a sample's .json member. Text that is not JSON is kept
    as a JSON string, so the column always parses (DuckDB's `metadata::JSON`) and nothing
    of it is lost; NaN and Infinity, which Python's parser takes but JSON has not, become
    null."""
    if text is None:
        return None, None
    if _json_deeper_than(text, MERGE_DEPTH):  # parsed or not as deep as the stack allows: not the same
        return json.dumps(text, ensure_ascii=False), None  # on every worker
    nonfinite: list[str] = []
    try:
        parsed = json.loads(text, parse_constant=lambda name: nonfinite.append(name))  # -> None
    except ValueError:
        return json.dumps(text, ensure_ascii=False), None
    url = field_text(parsed.get("url")) if isinstance(parsed, dict) else None
    if nonfinite or "\\u" in text:  # NaN, or escapes that may leave half a character
        dumped = json.dumps(parsed, ensure_ascii=False)
        if nonfinite or _SURROGATE.search(dumped):  # kept, DuckDB's metadata::JSON failed on it
            text, url = _whole_characters(dumped), url and _whole_characters(url)
    return text, url


def text_members(members: list[tuple[str, bytes | None]]) -> dict[str, str]:
    """{ext: text} of a sample's other members that are UTF-8 text (webdataset's `.cls`
    labels, `.id`, `.url`); binary ones (features, masks) are left out."""
    texts = {}
    for ext, data in members:
        try:
            text = (data or b"").decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
        if text and "\x00" not in text:
            texts[ext] = text.strip()
    return texts


def with_fields(meta_text: str | None, fields: dict[str, object]) -> str | None:
    """The metadata JSON with more fields: a sample's other text members under their
    extension, as a Parquet shard's other columns are (only image, caption and metadata were
    kept), an image's row of its folder's metadata file. A key the .json has keeps its value;
    a .json that is not an object is kept under "json"."""
    if not fields:
        return meta_text
    parsed = _metadata_object(meta_text)
    merged = parsed | {name: value for name, value in fields.items() if name not in parsed}
    # finite: a number too large for a float (1e400) was read as inf, which JSON has not;
    # str: a metadata file's dates and decimals, as a Parquet shard's columns (_parquet_item)
    return json.dumps(finite(merged), ensure_ascii=False, default=str)


def with_partitions(meta_text: str | None, partitions: tuple[tuple[str, str | None], ...]) -> str | None:
    """The metadata JSON of a tar sample or an image file with its shard's Hive partitions
    (Shard.partitions), as a Parquet shard's rows have them: a partition wins over a key of
    its name in the .json (as over a Parquet column: pyarrow.dataset, DuckDB); a .json that is
    not an object is kept under "json". Without partitions, the metadata as it was read."""
    if not partitions:
        return meta_text
    return json.dumps(finite(_metadata_object(meta_text) | dict(partitions)), ensure_ascii=False)


def _metadata_object(meta_text: str | None) -> dict:
    """The metadata JSON (metadata_and_url's, strict, at most MERGE_DEPTH deep) as an object to add
    keys to: {} for none, a value that is not an object (a list, text that was not JSON)
    under "json"."""
    parsed = {} if meta_text is None else json.loads(meta_text)
    return parsed if isinstance(parsed, dict) else {"json": parsed}


# json.loads, finite and json.dumps recurse a level a frame (or two): a .json of 500-1000
# levels raised RecursionError out of the reader (the run failed), or parsed or not as deep
# as the caller's stack allowed; a fixed limit, so every worker writes the same
MERGE_DEPTH = 200


def _json_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text nests lists and objects more than `limit` levels (brackets inside
    strings aside), without parsing it; counted only where it has that many brackets. The
    strings and other text are dropped by a regex (a Python loop a character cost 30 times
    json.loads on a Segment Anything .json), and an unclosed string runs to the end, so the
    scan is linear."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", text)
    return max(itertools.accumulate(map(_NESTING.__getitem__, brackets)), default=0) > limit


_NOT_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[^\[\]{}"]+', re.DOTALL)
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(text: str) -> str:
    """`text` with U+FFFD for each half of a UTF-16 pair JSON's \\uD83D escapes can leave alone
    (a crawler cut an emoji in two): no UTF-8 writer takes it, and the run ended at the first.
    Only JSON makes them: Arrow's strings and decoded bytes are whole."""
    return _SURROGATE.sub("\ufffd", text)


def field_text(value: object) -> str | None:
    """A caption, url or key value as text: strings as they are, bytes decoded, anything
    else (a number, a list, a dict) as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):  # a binary column: decoded as a tar's .txt is
        return decode_text(value)
    return json.dumps(finite(value), default=str, ensure_ascii=False, sort_keys=True)


def finite(value: object) -> object:
    """`value` with NaN and infinite floats, which JSON has not, as None (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def row_said(fields: dict, config: ReaderConfig) -> str:
    """" (status ..., error_message ..., url ...)" of a row that is a reject, or ""."""
    said = [f"{name} {text!r}" for name, field in (("status", "status"), ("error_message", "error_message"),
                                                  ("url", config.url_column))
            if (text := field_text(fields.get(field)))]
    return f" ({', '.join(said)})" if said else ""


def utf8_or_guessed(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return decode_text(data)


def image_texts(txt: bytes | None, json_data: bytes | None, row: dict | None,
                 config: ReaderConfig) -> tuple[str | None, str | None, str | None]:
    """(caption, url, metadata JSON) of an image from its NAME.txt and NAME.json and its row of
    an ImageFolder metadata file (caption under --caption_column, else `text`): its own files,
    where it has them, say more than the folder's."""
    caption = decode_text(txt)
    metadata, url = metadata_and_url(decode_text(json_data))
    if row:
        if caption is None:
            caption = field_text(row.get(config.caption_column, row.get("text")))
        url = url or field_text(row.get(config.url_column))
        metadata = with_fields(metadata, row)
    return caption, url, metadata
