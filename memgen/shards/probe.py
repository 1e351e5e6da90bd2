"""http(s) existence probes: whether a URL answers, else why not."""

from __future__ import annotations

import fsspec

from memgen.shards.store import storage_options


def unanswered(url: str, http_timeout: float) -> str | None:
    """None when an http(s) URL answers, else why not: its status, or the connection's error
    (a server down or refusing access is not a URL that matches nothing)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url, http_timeout))
    try:  # one GET, its response closed unread; strict: other errors than a 404 are raised
        return None if fs.exists(path, strict=True) else "404 Not Found"
    except Exception as e:  # noqa: BLE001 - refused, unreachable, timed out: it does not answer
        if isinstance(e, TimeoutError):
            return f"no answer in {http_timeout:g} s (--http_timeout)"
        return http_answer(e) or f"{type(e).__name__}: {e}"[:300]


def http_answer(error: BaseException) -> str | None:
    """An HTTP client error's status line ("500 Internal Server Error"), None for others."""
    status = getattr(error, "status", None)
    return f"{status} {getattr(error, 'message', '')}".strip() if status else None
