"""The tar reader: webdataset samples (members sharing a key) -> Records and Rejects."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import IO, NamedTuple

from memgen.readers.config import DAMAGE, ReaderConfig, ShardItem, failure
from memgen.readers.fields import metadata_and_url, text_members, with_fields, with_partitions
from memgen.readers.keys import Keys
from memgen.records import Record, Reject, Shard, printable
from memgen.shards import IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES
from memgen.tarstream import TarDamage, tar_members
from memgen.text import decode_text
from memgen.transfer import read_message

IMAGE_EXTS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)
OTHER_IMAGE_EXTS = frozenset(s.lstrip(".") for s in OTHER_IMAGE_SUFFIXES)
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext
# the package's name, as before readers.py became a package: logging set up for it still applies
_log = logging.getLogger("memgen.readers")


_Member = tuple[str, str, bytes | None, int]  # a tar member in a sample: (key, ext, data, size)


class _Ordinals:
    """Numbers the items of one shard in the order they are produced."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def read_tar(shard: Shard, f: IO[bytes], config: ReaderConfig, first_read: bool) -> Iterator[ShardItem]:
    ordinal, keys = _Ordinals(), Keys()
    group: list[_Member] = []
    unusable: list[tuple[str, str, str]] = []  # its link, device and pipe members: (ext, error type, said)
    keys_seen: set[str] = set()
    apart = 0  # samples whose key an earlier sample, not the one before, had
    try:
        for member in tar_members(f, config.max_bytes, config.reject_data_cap):
            name = printable(member.name)
            match = _KEY_EXT.match(name)
            key, ext = (match.group(1), match.group(2).lower()) if match else (name, "")
            # a sample ends where the key changes or where one of its extensions comes again
            # (k.jpg k.txt k.jpg k.txt: two samples, the second "k~2"; webdataset stops there)
            if group and (key != group[0][0] or any(ext == seen for _, seen, _, _ in group)):
                yield from _group_items(shard, group, ordinal, keys, config, unusable)
                keys_seen.add(group[0][0])
                apart += key in keys_seen and key != group[0][0]
                group, unusable = [], []
            if member.link is not None:
                unusable.append((ext, "link_member", f"{name} is a link to {printable(member.link)} (a tar "
                                                "stores a link's bytes under the name linked to)"))
            elif member.special is not None:
                unusable.append((ext, "not_a_file", f"{name} is {member.special}, not a regular file"))
            too_large = member.size > config.max_bytes  # then data is only its head
            group.append((key, ext, member.data, -member.size if too_large else member.size))
    except DAMAGE as e:
        yield from _group_items(shard, group, ordinal, keys, config, unusable)
        group, unusable = [], []
        member_name = printable(e.member) if isinstance(e, TarDamage) else ""
        where = shard.source(f"#{member_name}" if member_name else "")
        said = read_message(e, shard, config.http_timeout)
        yield Reject(shard.index, ordinal(), where, "read", failure(e), said)
    yield from _group_items(shard, group, ordinal, keys, config, unusable)
    if first_read and apart:  # a folder tarred as it lies on disk: its captions became no_image rejects
        _log.warning("%s: %d samples' members lie apart from the others of their key (KEY.txt not next to "
                     "KEY.jpg), each read as a sample of its own, as webdataset reads them: pack the tar "
                     "with `tar --sort=name`", shard.uri, apart)


def _group_items(shard: Shard, group: list[_Member], ordinal: _Ordinals, keys: Keys, config: ReaderConfig,
                 unusable: list[tuple[str, str, str]]) -> Iterator[ShardItem]:
    """One webdataset sample (members sharing a key) -> a Record, or Rejects; `unusable`: its
    members that hold no bytes of their own (links, devices, pipes), as (ext, error type, said).
    When its images are all such, the sample is a reject of the first one's type; else each is
    a reject of its own beside the sample's records (a linked caption costs the image nothing,
    a linked right.jpg the left.jpg of its pair)."""
    if not group:
        return
    key = keys(group[0][0])
    unusable_exts = {ext for ext, _, _ in unusable}
    images = _image_members(group)
    if images and all(ext in unusable_exts for ext, _, _ in images):
        said = "; ".join(message for _, _, message in unusable)
        yield Reject(shard.index, ordinal(), shard.source(f"#{key}"), "read", unusable[0][1], said)
        return
    regular = [member for member in group if member[1] not in unusable_exts]
    if regular:  # a pair whose right.jpg is a link: its left.jpg is named as one of two still
        yield from _sample_items(shard, regular, ordinal, key, config, several=len(images) > 1)
    for ext, error_type, said in unusable:  # a member without a suffix (COPYING) is its key alone
        locator = f"#{key}.{ext}" if ext else f"#{key}"
        yield Reject(shard.index, ordinal(), shard.source(locator), "read", error_type, said)


def _sample_items(shard: Shard, group: list[_Member], ordinal: _Ordinals, key: str, config: ReaderConfig,
                  several: bool) -> Iterator[ShardItem]:
    """A sample of regular members -> a Record per image member, or Rejects. Several images (a
    stereo pair's left.jpg and right.jpg, an interleaved document's pictures, photos named
    cat.1.jpg, cat.2.jpg, which webdataset's key, ending at a name's first dot, makes one
    sample `cat`) are a record each, as a Parquet row's list is: `#KEY.EXT` (`#KEY` when the
    sample had no `several`), each with its own sidecars (cat.2.txt) or else the sample's (KEY.txt)."""
    images = _image_members(group)
    if not images:
        data, size = group[0][2] or b"", abs(group[0][3])  # negative: too large, its head read
        exts = ",".join(ext or "(none)" for _, ext, _, _ in group)
        yield Reject(shard.index, ordinal(), shard.source(f"#{key}"), "read", "no_image",
                     f"no image member among extensions {exts}", size, data[: config.reject_data_cap])
        return
    by_ext = {ext: _Sidecar(ext, data, size) for _, ext, data, size in group}
    sidecars = [tuple(_sidecar(by_ext, name, ext, not several) for name in ("txt", "json"))
                for ext, _, _ in images]
    taken = {ext for ext, _, _ in images} | {member.ext for pair in sidecars for member in pair} | {""}
    texts = text_members([(ext, data) for _, ext, data, size in group if ext not in taken and size >= 0])
    for (ext, data, size), (caption, meta) in zip(images, sidecars, strict=True):
        locator = f"#{key}.{ext}" if several else f"#{key}"
        cut = [f".{m.ext} member is {-m.size} bytes" for m in (caption, meta) if m.size < 0]
        if size < 0:
            yield Reject(shard.index, ordinal(), shard.source(locator), "read", "too_large",
                         f"{-size} bytes > max_bytes {config.max_bytes}", -size, data)
        elif cut:  # its caption or metadata would be kept cut short
            yield Reject(shard.index, ordinal(), shard.source(locator), "read", "too_large",
                         f"its {' and '.join(cut)} > max_bytes {config.max_bytes}", size,
                         data[: config.reject_data_cap])
        else:
            meta_text, url = metadata_and_url(decode_text(meta.data))
            meta_text = with_partitions(with_fields(meta_text, texts), shard.partitions)
            yield Record(shard.index, ordinal(), shard.source(locator), data, decode_text(caption.data),
                         url or texts.get("url"), meta_text, locator)  # a `.url` member: when no .json url


def _image_members(group: list[_Member]) -> list[tuple[str, bytes | None, int]]:
    """A sample's image members (ext, data, size): those with a picture suffix, else those
    with a suffix that is one only sometimes (shards.OTHER_IMAGE_SUFFIXES)."""
    for exts in (IMAGE_EXTS, OTHER_IMAGE_EXTS):
        found = [(ext, data, size) for _, ext, data, size in group if ext.rsplit(".", 1)[-1] in exts]
        if found:
            return found
    return []


class _Sidecar(NamedTuple):
    ext: str
    data: bytes | None
    size: int  # negative: larger than max_bytes, its head read


_NO_SIDECAR = _Sidecar("", None, 0)


def _sidecar(by_ext: dict[str, _Sidecar], name: str, image_ext: str, alone: bool) -> _Sidecar:
    """An image's `name` member ("txt", "json") among its sample's: a dotted key such as
    img.v2.jpg has the sidecars img.v2.txt and img.v2.json (webdataset: key "img", extensions
    "v2.jpg", "v2.txt", "v2.json"). Preferred: the one named like the image (v2.txt for
    v2.jpg), then plain "txt", then, for the sample's only image, any "*.txt"."""
    middle = image_ext.rpartition(".")[0]
    for ext in ([f"{middle}.{name}"] if middle else []) + [name]:
        if ext in by_ext:
            return by_ext[ext]
    if not alone:  # cat.1.jpg and cat.2.jpg: cat.1.txt is none of cat.2.jpg's
        return _NO_SIDECAR
    return next((member for ext, member in by_ext.items() if ext.endswith("." + name)), _NO_SIDECAR)
