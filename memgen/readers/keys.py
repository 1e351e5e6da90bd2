"""Unique keys for one shard's records."""

from __future__ import annotations


class Keys:
    """Keeps the locators of one shard's records unique, so each has its own source: a key seen
    before (a tar that repeats a key further on, a Parquet key column with repeats) gets "~2",
    "~3", ... appended. A row of several images (a Parquet list column, a TFRecord feature)
    takes KEY/0, KEY/1, ... as well: its key is renamed when any of them is taken, and so is a
    later key equal to one of them (a Parquet key column holding "a/0" beside a row "a")."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        # the suffix each key last got: its search starts there (every one below it was passed
        # over), or a key that repeats n times tried n^2/2 names (a Parquet of 16,000 rows, 25 s)
        self.last: dict[str, int] = {}
        # KEY -> its row's images: KEY/0 .. KEY/n-1 are taken (a name each would be 65,536 a row)
        self.rows: dict[str, int] = {}
        # PREFIX -> the lowest N of a key given as PREFIX/N: a row PREFIX of more images collides
        self.lowest: dict[str, int] = {}

    def __call__(self, key: str, images: int = 0) -> str:
        """`key` made unique; `images`: the KEY/N locators its row takes (0: only KEY itself)."""
        n = self.last.get(key, 1)
        unique = key if n == 1 else f"{key}~{n}"
        while not self._free(unique, images):
            n += 1
            unique = f"{key}~{n}"
        self._take(unique, images)
        self.last[key] = n
        return unique

    def _free(self, name: str, images: int) -> bool:
        """Whether `name` and `name`/0 .. `name`/images-1 are all untaken: each test O(1)."""
        if name in self.seen:
            return False
        slot = _slot(name)
        if slot and slot[1] < self.rows.get(slot[0], 0):  # a row's KEY/N
            return False
        return self.lowest.get(name, images) >= images

    def _take(self, name: str, images: int) -> None:
        self.seen.add(name)
        if images:
            self.rows[name] = images
        slot = _slot(name)
        if slot:
            self.lowest[slot[0]] = min(self.lowest.get(slot[0], slot[1]), slot[1])


def _slot(name: str) -> tuple[str, int] | None:
    """(KEY, N) of a name as a row's N-th image is keyed (f"{KEY}/{N}"), else None."""
    prefix, slash, n = name.rpartition("/")
    if not slash or not (n.isascii() and n.isdigit()) or (n != "0" and n.startswith("0")):
        return None
    return prefix, int(n)
