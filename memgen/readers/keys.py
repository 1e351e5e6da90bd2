"""Unique keys for one shard's records."""

from __future__ import annotations


class Keys:
    """Keeps the keys of one shard's records unique, so each has its own source: a key seen
    before (a tar that repeats a key further on, a Parquet key column with repeats) gets
    "~2", "~3", ... appended."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        # the suffix each key last got: its search starts there (every one below it is taken),
        # or a key that repeats n times tried n^2/2 names (a Parquet of 16,000 rows, 25 s)
        self.last: dict[str, int] = {}

    def __call__(self, key: str) -> str:
        n = self.last.get(key, 1)
        unique = key if n == 1 else f"{key}~{n}"
        while unique in self.seen:
            n += 1
            unique = f"{key}~{n}"
        self.seen.add(unique)
        self.last[key] = n
        return unique
