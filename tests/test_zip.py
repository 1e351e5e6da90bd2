"""Zip archives: read as the folder they pack, each member by itself."""

from __future__ import annotations

import logging
import stat
import struct
import zipfile
from pathlib import Path

import duckdb
import pytest

from memgen.pipelines.cli import main
from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from memgen.shards import discover, shard_kind
from shardkit import jpeg, write_tar

FOLDER = {  # a photo collection as people zip it: sidecars, a hidden file, macOS's resource forks
    "photos/a.jpg": jpeg(1),
    "photos/a.txt": b"a cat on a mat",
    "photos/a.json": b'{"url": "http://x/a.jpg", "licence": "cc-by"}',
    "photos/b.png": jpeg(2),
    "photos/B.TXT": b"upper-case caption",  # as cameras name it: not b.png's (a folder's walk agrees)
    "photos/deep/c.jpeg": jpeg(3),
    "photos/deep/c.TXT": b"C caption",
    "photos/README.md": b"# my photos",
    "photos/.thumbs/a.jpg": jpeg(4),
    "__MACOSX/photos/._a.jpg": b"\x00\x05\x16\x07 AppleDouble",
    "top.webp": jpeg(5),
}


CONFIG = ReaderConfig()


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def read(path: Path, config: ReaderConfig = CONFIG) -> list:
    return list(read_shard(Shard(0, str(path), shard_kind(str(path))), config, first_read=True))


def by_key(items: list, root: str) -> dict[str, tuple]:
    return {item.source.split(root, 1)[1].lstrip("#/"): (item.data, item.caption, item.url, item.metadata)
            for item in items}


def test_a_zip_is_read_as_the_folder_it_packs(tmp_path, caplog):
    archive = write_zip(tmp_path / "photos.zip", FOLDER)
    with caplog.at_level(logging.WARNING, logger="memgen.readers"):
        items = read(archive)
    assert all(isinstance(item, Record) for item in items), items
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(archive).extractall(unpacked)
    folder = [item for shard in discover([str(unpacked)]) for item in read_shard(shard, ReaderConfig())]
    assert by_key(items, str(archive)) == by_key(folder, str(unpacked))  # the folder's walk: the reference
    assert sorted(by_key(items, str(archive))) == ["photos/a.jpg", "photos/b.png", "photos/deep/c.jpeg",
                                                   "top.webp"]
    names = list(FOLDER)
    assert [item.ordinal for item in items] == [names.index(key) for key in by_key(items, str(archive))]
    assert all(item.source == f"{archive}{item.locator}" for item in items)
    said = [r.getMessage() for r in caplog.records if r.name == "memgen.readers"]
    assert said == [f"{archive}: skipped 4 members that are neither shards nor images (.md 1, .txt 1, "
                    "hidden 2)"], said  # B.TXT is no caption of b.png: a .txt alone
    assert read(archive) == items  # the re-read that writes the images finds each in its place


def _patched(path: Path, member: str, offset_local: int, offset_central: int, value: bytes) -> None:
    """Overwrite a field of `member`'s local header and of its central directory entry."""
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(member).header_offset
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")  # the central directory's first entry
    while data[central + 46: central + 46 + len(member)] != member.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    for at in (local + offset_local, central + offset_central):
        data[at: at + len(value)] = value
    path.write_bytes(bytes(data))


def test_a_damaged_encrypted_linked_or_nested_member_is_a_reject_of_its_own(tmp_path):
    path = tmp_path / "mixed.zip"
    nested = write_tar(tmp_path / "inner.tar", [("k", {"jpg": jpeg(9)})]).read_bytes()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("ok1.jpg", jpeg(1))
        archive.writestr("crc.jpg", jpeg(2))
        archive.writestr("secret.jpg", jpeg(3))
        link = zipfile.ZipInfo("link.jpg")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, b"../outside/ok1.jpg")
        archive.writestr("deflate64.jpg", jpeg(4))
        archive.writestr("shards/inner.tar", nested)
        archive.writestr("ok2.jpg", jpeg(5))
    with zipfile.ZipFile(path) as archive:
        crc = archive.getinfo("crc.jpg")
    data = bytearray(path.read_bytes())
    data[crc.header_offset + 30 + len("crc.jpg") + 100] ^= 0xFF  # a flipped byte in its data
    path.write_bytes(bytes(data))
    _patched(path, "deflate64.jpg", 8, 10, struct.pack("<H", 9))  # compression method 9
    _patched(path, "secret.jpg", 6, 8, struct.pack("<H", 1))  # the flag `zip -e` sets (writestr clears it)
    items = read(path)
    said = {item.source.rsplit("#", 1)[1]: item for item in items}
    assert [k for k, i in said.items() if isinstance(i, Record)] == ["ok1.jpg", "ok2.jpg"]
    assert said["ok2.jpg"].data == jpeg(5) and said["ok2.jpg"].ordinal == 6
    rejects = {k: (i.error_type, i.message) for k, i in said.items() if isinstance(i, Reject)}
    assert rejects["crc.jpg"][0] == "corrupt_shard" and "Bad CRC-32" in rejects["crc.jpg"][1]
    assert rejects["secret.jpg"] == ("encrypted", "secret.jpg is encrypted: memgen asks for no password")
    assert rejects["link.jpg"] == ("link_member", "link.jpg is a link to ../outside/ok1.jpg")
    assert rejects["deflate64.jpg"][0] == "unsupported_compression"
    assert rejects["shards/inner.tar"][0] == "nested_shard"
    assert all(i.stage == "read" and i.data is None for i in items if isinstance(i, Reject))


def test_too_large_members_and_captions_are_rejects_with_a_head(tmp_path):
    big, small = jpeg(1, quality=100), jpeg(2)
    path = write_zip(tmp_path / "sizes.zip", {"big.jpg": big, "small.jpg": small, "capped.jpg": small,
                                              "capped.txt": b"x" * (len(small) + 1)})
    config = ReaderConfig(max_bytes=len(small), reject_data_cap=16)
    items = {i.source.rsplit("#", 1)[1]: i for i in read(path, config)}
    assert isinstance(items["small.jpg"], Record)
    assert (items["big.jpg"].error_type, items["big.jpg"].n_bytes, items["big.jpg"].data) == (
        "too_large", len(big), big[:16])
    assert items["capped.jpg"].error_type == "too_large" and ".txt member" in items["capped.jpg"].message


def test_a_zip_that_is_no_zip_or_cut_short_is_one_reject(tmp_path):
    whole = write_zip(tmp_path / "whole.zip", {f"{i}.jpg": jpeg(i) for i in range(3)}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(whole[: len(whole) - 30])  # its central directory's end lost
    (tmp_path / "text.zip").write_bytes(b"not a zip at all")
    for name in ("cut.zip", "text.zip"):
        [reject] = read(tmp_path / name)
        assert (reject.stage, reject.error_type) == ("read", "corrupt_shard")
        assert reject.source == str(tmp_path / name)


def test_a_zip_without_its_suffix_is_said_to_be_one(tmp_path):
    (tmp_path / "download").write_bytes(write_zip(tmp_path / "a.zip", {"a.jpg": jpeg(1)}).read_bytes())
    [reject] = read(tmp_path / "download")
    assert reject.error_type == "not_an_image"
    assert reject.message.startswith("zip data in a file whose name does not end in .zip")


def test_memorize_a_folder_of_zips_and_images(tmp_path):
    """Zips are shards wherever shards are found (a folder, a glob); their records dedup
    with the others' (loose.jpg holds b.png's bytes: an exact duplicate across shards)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_zip(inputs / "photos.zip", FOLDER)
    (inputs / "loose.jpg").write_bytes(FOLDER["photos/b.png"])
    assert main(["memorize", str(inputs), "--memory", str(tmp_path / "m")]) == 0
    images = dict(duckdb.sql(f"select source, caption from '{tmp_path}/m/images/*.parquet'").fetchall())
    pairs = duckdb.sql(f"select d.source, i.source from '{tmp_path}/m/duplicates/*.parquet' d "
                       f"join '{tmp_path}/m/images/*.parquet' i using (image_id)").fetchall()
    found = {source.split("/in/", 1)[1] for source in [*images, *(d for d, _ in pairs)]}
    assert found == {"photos.zip#photos/a.jpg", "photos.zip#photos/b.png", "photos.zip#photos/deep/c.jpeg",
                     "photos.zip#top.webp", "loose.jpg"}
    assert {s.split("/in/", 1)[1] for s in pairs[0]} == {"loose.jpg", "photos.zip#photos/b.png"}
    assert images[f"{inputs}/photos.zip#photos/a.jpg"] == "a cat on a mat"


@pytest.mark.parametrize("name", ["a.zip", "A.ZIP"])
def test_zip_kind(name):
    assert shard_kind(name) == "zip" and shard_kind(f"https://h/{name}?sig=1") == "zip"
    assert shard_kind("x.zip.tar") == "tar"
