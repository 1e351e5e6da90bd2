"""Images kept as text in a Parquet column: base64 (standard or URL-safe, with or without
its padding) or a data: URI (`data:image/jpeg;base64,...`), as scraped pages and evaluation
sets keep them."""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

_DATA_URI = re.compile(r"data:[^,]*;base64,", re.IGNORECASE)  # matched at the start only


class NotBase64(NamedTuple):
    """Text that decodes to no bytes: its head, for its reject."""
    head: str


def decoded(text: str) -> bytes | NotBase64:
    """The bytes a cell's text stands for."""
    body = text.strip()
    # the header alone: a regex over the whole text (its line breaks too) cost 4x the decoding
    if uri := _DATA_URI.match(body[:256]):
        body = body[uri.end():]
    if "\n" in body or "\r" in body:  # MIME wraps lines at 76; other space is no base64
        body = body.replace("\r", "").replace("\n", "")
    body += "=" * (-len(body) % 4)
    if "-" in body or "_" in body:  # the URL-safe alphabet
        body = body.replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return NotBase64(text[:80])
    return data if data else NotBase64(text[:80])
