"""Brace ranges: the URLs one input stands for."""

from __future__ import annotations

import itertools
import re

from braceexpand import UnbalancedBracesError, braceexpand

from memgen.shards.store import path_exists, url_fs

MAX_EXPANDED = 1_000_000  # URLs one brace range may stand for (LAION-5B is ~0.5M shards)
_INT_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?\}")


class NoInputError(ValueError):
    """No input URL matched anything, a folder of the inputs cannot be listed, or an input
    cannot be read as a brace range."""


def expand(raw: str) -> list[str]:
    """The URLs an input's brace range stands for; a name with braces that exists as written
    (`photos {a,b}`, `sh}ard.tar`) is itself, as one with glob characters is. (http(s) names
    are not asked: a brace range of them costs no request.) NoInputError for braces that do
    not pair up, or a range of more than MAX_EXPANDED URLs (a digit too many: the list alone
    filled the memory)."""
    if "{" in raw or "}" in raw:
        if not raw.startswith(("http://", "https://")):
            fs, path = url_fs(raw)
            if path_exists(fs, path):
                return [raw]
    # braceexpand makes a tuple of each range before the first URL: measure them first
    longest = max((abs(int(b) - int(a)) // max(1, int(step or 1)) + 1
                   for a, b, step in _INT_RANGE.findall(raw)), default=0)
    try:
        urls = [] if longest > MAX_EXPANDED else list(itertools.islice(braceexpand(raw), MAX_EXPANDED + 1))
    except UnbalancedBracesError:
        raise NoInputError(f"{raw}: its braces do not pair up (a range is {{00000..00099}}), and "
                           "nothing has that name") from None
    if longest > MAX_EXPANDED or len(urls) > MAX_EXPANDED:
        raise NoInputError(f"{raw} stands for more than {MAX_EXPANDED:,} URLs: give a smaller range, "
                           "or their folder or a glob")
    return urls
