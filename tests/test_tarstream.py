"""tar_members against tarfile, the reference, on what tarfile writes; and on damage."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import signal
import tarfile
from collections import Counter

import pytest

from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from memgen.tarstream import TarDamage, read_up_to, tar_members
from shardkit import jpeg, sample, write_tar

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
BIG = 1 << 30


def payload(n: int, seed: int = 0) -> bytes:
    period = bytes((i * 7 + seed) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


def build(entries: list[tuple[str, bytes, dict]], fmt: int = tarfile.PAX_FORMAT, **open_args) -> bytes:
    """An archive written by tarfile; entries are (name, data, TarInfo attributes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **open_args) as tar:
        for name, data, attrs in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def rich_entries(fmt: int) -> list[tuple[str, bytes, dict]]:
    entries = [("empty.txt", b"", {})]
    entries += [(f"sizes/{n}.bin", payload(n, n), {}) for n in (1, 511, 512, 513, 70_000)]
    entries += [
        ("a" * 100, b"name fills the whole field, no NUL", {}),
        ("d" * 50 + "/" + "n" * 50, b"101 chars: ustar splits it into prefix + name", {}),
        ("ünïcødé/名前.jpg", b"unicode", {}),
        ("bad\udcff.txt", b"undecodable byte: pax writes hdrcharset=BINARY", {}),
        ("dir.with.dots/sub/key.a.b.json", b"{}", {}),
        ("folder", b"", {"type": tarfile.DIRTYPE}),
        ("olddir/", b"", {"type": tarfile.AREGTYPE}),  # V7 style: a directory
        ("old.txt", b"an AREGTYPE file", {"type": tarfile.AREGTYPE}),
        ("contiguous.bin", b"CONTTYPE is a regular file", {"type": tarfile.CONTTYPE}),
        ("symlink", b"", {"type": tarfile.SYMTYPE, "linkname": "sizes/1.bin"}),
        ("hardlink", b"", {"type": tarfile.LNKTYPE, "linkname": "sizes/1.bin"}),
        ("fifo", b"", {"type": tarfile.FIFOTYPE}),
        ("after/the.fifo", b"still read", {}),
    ]
    if fmt == tarfile.USTAR_FORMAT:
        return entries  # ustar cannot hold a 101-char name without a slash, nor > 255 chars
    return entries + [
        ("x" * 101, b"gnu: an L header; pax: a path record", {}),
        ("long/" + "y" * 300 + ".txt", b"longer than name + prefix", {}),
        ("longlink", b"", {"type": tarfile.SYMTYPE, "linkname": "z" * 150}),  # gnu: a K header
        ("last.txt", b"after the long link", {}),
    ]


def reference(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def ours(f, max_bytes: int = BIG, head: int = 0) -> list[tuple[str, bytes]]:
    return [(m.name, m.data) for m in tar_members(f, max_bytes, head) if m.link is None and m.special is None]


class ShortReads(io.RawIOBase):
    """A file-like that returns at most 7 bytes a read."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._inner.read(min(n, 7) if n >= 0 else 7)


def with_checksum(header: bytes | bytearray) -> bytes:
    header = bytearray(header)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def offsets(data: bytes) -> list[int]:
    """Header offsets of the members tarfile sees."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [m.offset for m in tar.getmembers()]


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_links_are_members_by_their_target_as_tarfile_reads_them(fmt):
    """Hard and symbolic links (a long target in a GNU "K" or pax header too), in archive
    order among the files: a reader accounts for them (they were skipped like directories,
    and a hard-linked image's record vanished)."""
    data = build(rich_entries(fmt), fmt)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        expected = [(m.name, m.linkname) for m in tar if m.islnk() or m.issym()]
    members = list(tar_members(io.BytesIO(data), BIG, 0))
    assert [(m.name, m.link) for m in members if m.link is not None] == expected
    assert ("hardlink", "sizes/1.bin") in expected and all(m.data == b"" for m in members if m.link)
    assert fmt == tarfile.USTAR_FORMAT or ("longlink", "z" * 150) in expected
    names = [m.name for m in members]
    assert names.index("contiguous.bin") < names.index("symlink") < names.index("after/the.fifo")


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_same_members_as_tarfile_in_every_format(fmt):
    data = build(rich_entries(fmt), fmt)
    expected = reference(data)
    assert len(expected) == len([e for e in rich_entries(fmt) if e[2].get("type", b"0") in b"0\x007"]) - 1
    assert ours(io.BytesIO(data)) == expected
    assert ours(ShortReads(data)) == expected
    sizes = [m.size for m in tar_members(io.BytesIO(data), BIG, 0) if m.link is None and m.special is None]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:  # devices and pipes: by what they are
        specials = [m.name for m in tar if m.isfifo() or m.ischr() or m.isblk()]
    assert specials and [m.name for m in tar_members(io.BytesIO(data), BIG, 0) if m.special] == specials
    assert sizes == [len(d) for _, d in expected]


def test_ustar_refuses_names_it_cannot_hold():
    # why the ustar archive above has no 101-char name without a slash, nor a 300-char one
    with pytest.raises(ValueError):
        build([("x" * 101, b"", {})], tarfile.USTAR_FORMAT)


def test_gzip_stream_and_pax_global_header():
    entries = rich_entries(tarfile.PAX_FORMAT)
    data = build(entries, pax_headers={"comment": "a global header first"})
    assert data[156:157] == tarfile.XGLTYPE
    with gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(data))) as f:
        assert ours(f) == reference(data)


def test_pax_global_path_applies_as_in_tarfile():
    data = build([("a.txt", b"1", {}), ("b.txt", b"2", {})], pax_headers={"path": "everyone/"})
    assert ours(io.BytesIO(data)) == reference(data) == [("everyone", b"1"), ("everyone", b"2")]


def test_chained_extended_headers_the_first_wins_as_in_tarfile():
    pax = build([("from-pax.txt" + "é", b"p" * 10, {"size": 10})])  # an "x" header (path), then the member
    gnu = build([("from-gnu-" + "g" * 100, b"g" * 20, {})], tarfile.GNU_FORMAT)  # an "L" header, then it
    assert pax[156:157] == tarfile.XHDTYPE and gnu[156:157] == tarfile.GNUTYPE_LONGNAME

    def sized(n: int) -> bytes:  # an "x" header holding only a size
        header = with_checksum(pax[:124] + b"%011o\0" % 10 + pax[136:512])
        return header + (b"10 size=%d\n" % n).ljust(512, b"\0")

    for data in (pax[:1024] + gnu, gnu[:1024] + pax, sized(5) + sized(7) + pax[:1024] + gnu):
        assert ours(io.BytesIO(data)) == reference(data) != []
    assert reference(data) == [("from-pax.txté", b"g" * 5)]
    # an "x" header carries the global records of its time, over those of a later "g"
    def global_path(path: str) -> bytes:
        return build([("a.txt", b"", {})], pax_headers={"path": path})[:1024]

    data = global_path("first") + sized(1) + global_path("second") + pax[1024:]
    assert ours(io.BytesIO(data)) == reference(data) == [("first", b"p")]


def test_links_and_directories_carry_no_data_as_in_tarfile():
    entries = [("folder", b"", {"type": tarfile.DIRTYPE}), ("link", b"", {"type": tarfile.SYMTYPE}),
               ("a.txt", b"a", {})]
    data = bytearray(build(entries, tarfile.USTAR_FORMAT))
    for at in offsets(bytes(data))[:2]:  # a size field tarfile ignores for these types
        data[at + 124:at + 136] = b"%011o\0" % 1024
        data[at:at + 512] = with_checksum(data[at:at + 512])
    assert ours(io.BytesIO(bytes(data))) == reference(bytes(data)) == [("a.txt", b"a")]


def test_oversized_members_give_their_head_and_the_rest_follows():
    entries = [("small.txt", b"s", {}), ("big.bin", payload(5000), {}), ("huge.bin", payload(3 << 20), {}),
               ("next.txt", b"n", {})]
    members = list(tar_members(io.BytesIO(build(entries)), 4000, 10))
    assert [(m.name, m.size, m.data) for m in members] == [
        ("small.txt", 1, b"s"), ("big.bin", 5000, payload(5000)[:10]),
        ("huge.bin", 3 << 20, payload(3 << 20)[:10]), ("next.txt", 1, b"n")]
    assert [m.data for m in tar_members(io.BytesIO(build(entries)), 4000, 10_000)][1] == payload(5000)


def test_base256_size_is_read():
    data = bytearray(build([("a.bin", payload(700), {}), ("b.txt", b"b", {})], tarfile.USTAR_FORMAT))
    data[124:136] = b"\x80" + (700).to_bytes(11, "big")  # GNU base-256, as nti reads it
    data[:512] = with_checksum(data[:512])
    expected = [("a.bin", payload(700)), ("b.txt", b"b")]
    assert ours(io.BytesIO(bytes(data))) == reference(bytes(data)) == expected


def test_signed_checksum_is_accepted():
    data = bytearray(build([("é.txt", b"x", {})], tarfile.USTAR_FORMAT))  # a byte >= 128 in the name
    signed = sum(b - 256 if b >= 128 else b for b in data[:148] + data[156:512]) + 256
    data[148:156] = b"%06o\0 " % signed
    assert ours(io.BytesIO(bytes(data))) == reference(bytes(data)) == [("é.txt", b"x")]


def test_a_tar_without_end_of_archive_blocks_gives_its_members_then_says_it_was_cut():
    """Every writer ends a tar with them: a tar cut at a member's end (a full disk) lost its
    later members without a word, as tarfile loses them."""
    entries = [("a.txt", b"a" * 600, {}), ("b.txt", b"b", {})]
    data = build(entries)
    end = offsets(data)[-1] + 1024  # b.txt's header and one data block
    names, damage = collect(data[:end])
    assert names == [name for name, _ in reference(data)] == ["a.txt", "b.txt"]
    assert str(damage) == f"no end-of-archive marker: cut short after a member at byte {end}"


def test_tars_joined_by_cat_are_read_whole_and_junk_after_the_end_is_damage():
    """`cat a.tar b.tar > ab.tar` (tarfile and GNU tar without --ignore-zeros stop at a's
    end-of-archive blocks: b's members were lost without a word)."""
    a, b = build([("a.txt", b"a" * 600, {})]), build([("b.txt", b"b", {})])
    assert [m.name for m in tar_members(io.BytesIO(a + b), BIG, 0)] == ["a.txt", "b.txt"]
    assert [m.name for m in tar_members(io.BytesIO(a + bytes(100)), BIG, 0)] == ["a.txt"]  # short padding
    names, damage = collect(a + b"not a tar header".ljust(512, b"x"))
    assert names == ["a.txt"] and str(damage) == f"data after the end-of-archive blocks at byte {len(a)}"
    for short in (b"\n", bytes(100) + b"junk"):  # less than a block: no header cut short either
        names, damage = collect(a + short)
        assert names == ["a.txt"] and str(damage) == f"data after the end-of-archive blocks at byte {len(a)}"


def three_members() -> bytes:
    return build([(f"m{i}.bin", payload(700, i), {}) for i in range(4)], tarfile.USTAR_FORMAT)


def collect(data: bytes, max_bytes: int = BIG) -> tuple[list[str], TarDamage]:
    names = []
    with pytest.raises(TarDamage) as damage:
        for m in tar_members(io.BytesIO(data), max_bytes, 0):
            names.append(m.name)
    return names, damage.value


def test_bad_checksum_after_the_first_header_is_reported():
    data = bytearray(three_members())
    third = offsets(bytes(data))[2]
    data[third] ^= 1
    names, damage = collect(bytes(data))
    assert names == ["m0.bin", "m1.bin"]
    assert damage.offset == third and f"bad header checksum at byte {third}" in str(damage)
    assert damage.member == ""
    assert [n for n, _ in reference(bytes(data))] == ["m0.bin", "m1.bin"]  # tarfile says nothing


def test_truncated_data_names_the_member():
    data = three_members()
    cut = offsets(data)[1] + 512 + 300
    names, damage = collect(data[:cut])
    assert names == ["m0.bin"] and damage.member == "m1.bin" and damage.offset == cut
    assert "unexpected end of data" in str(damage)
    names, damage = collect(data[:cut], max_bytes=100)  # also while skipping an oversized member
    assert names == ["m0.bin"] and damage.member == "m1.bin"


def test_truncated_padding_and_header():
    data = three_members()
    second = offsets(data)[1]
    names, damage = collect(data[: second - 10])  # m0's data is whole, its padding is not
    assert names == ["m0.bin"] and damage.member == "" and "unexpected end of data" in str(damage)
    names, damage = collect(data[: second + 100])
    assert names == ["m0.bin"] and str(damage) == f"truncated header at byte {second}"


def test_garbage_and_empty_file():
    names, damage = collect(b"this is not a tar archive" * 100)
    assert names == [] and str(damage) == "invalid number field b'vethis i' in header at byte 0"
    names, damage = collect(b"0" * 2048)
    assert names == [] and str(damage) == "bad header checksum at byte 0"
    names, damage = collect(b"")
    assert str(damage) == "empty file at byte 0"


@pytest.mark.parametrize("compress, kind", [
    (gzip.compress, "gzip .tar.gz"), (bz2.compress, "bzip2 .tar.bz2"), (lzma.compress, "xz .tar.xz")])
def test_a_compressed_tar_named_as_a_tar_says_so(compress, kind):
    """"invalid number field b'\\xcaH...' in header" gave no clue."""
    names, damage = collect(compress(three_members()))
    what, suffix = kind.split()
    assert names == [] and str(damage) == (f"{what} data where a tar header should be (a {suffix} file named "
                                           "as a tar? the suffix says how a shard is read) at byte 0")


def test_a_file_shorter_than_a_header_is_damage_not_a_crash():
    """What `curl -o` saves from a 404 ended the run with an IndexError."""
    names, damage = collect(b"Not Found")
    assert names == [] and str(damage) == "truncated header at byte 0"
    assert str(collect(gzip.compress(b""))[1]).startswith("gzip data where a tar header should be")


def test_a_member_named_like_compressed_data_is_a_member():
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("BZh91AY&SY.jpg")  # bzip2's magic
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert [m.name for m in tar_members(io.BytesIO(data.getvalue()), BIG, 0)] == ["BZh91AY&SY.jpg"]


def test_unsupported_and_malformed_extended_headers():
    data = bytearray(three_members())
    data[156:157] = tarfile.GNUTYPE_SPARSE
    data[:512] = with_checksum(data[:512])
    assert "unsupported GNU sparse member 'm0.bin'" in str(collect(bytes(data))[1])
    data = build([("ü.txt", b"u", {})])  # a pax "x" header holding the path
    assert data[156:157] == tarfile.XHDTYPE and data[512:515] == b"15 "
    names, damage = collect(data[:512] + b"16" + data[514:])
    assert names == [] and "pax header record does not parse" in str(damage)
    names, damage = collect(build([("a.txt", b"a", {})], pax_headers={"size": "1"}))
    assert "unsupported 'size' in a pax global header" in str(damage)
    names, damage = collect(data[:1024])  # the "x" header and no member header after it
    assert str(damage) == "missing header after an extended header at byte 1024"


def test_a_pax_record_without_its_length_is_damage_not_a_hang():
    # found by fuzzing: a damaged size took the parser past the records into NUL padding,
    # where no length parsed and the "=" it found lay behind it: it looped forever
    data = bytearray(build([("a.txt", b"a", {"pax_headers": {"comment": "é"}})]))
    assert data[156:157] == tarfile.XHDTYPE and data[512:526] == "14 comment=é\n".encode()
    data[124:136] = b"%011o\0" % 40  # the "x" header's size now covers 26 bytes of padding
    data[:512] = with_checksum(data[:512])
    names, damage = collect(bytes(data))
    assert names == [] and str(damage).startswith("pax header record does not parse: b'\\x00")


def test_random_damage_ends_in_members_or_tardamage_never_a_hang_or_another_error():
    rng = random.Random(0)
    # long names and pax records with little data: most bytes are headers, where damage bites
    entries = [(f"{i:05d}{'n' * (100 + i)}.jpg", payload(i * 7, i), {"pax_headers": {"comment": "é" * i}})
               for i in range(12)]
    archives = [build(entries, fmt) for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT)]
    outcomes = Counter()
    previous = signal.signal(signal.SIGALRM, _hung)
    try:
        for _ in range(1500):
            outcomes[_read_damaged(rng, bytearray(rng.choice(archives)))] += 1
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["read"] + outcomes["damage"] == 1500 and outcomes["damage"] > 500


def _read_damaged(rng: random.Random, data: bytearray) -> str:
    for _ in range(rng.randint(1, 4)):
        # half of the hits near a block's start, where headers and pax records are
        at = rng.randrange(len(data) // 512) * 512 + rng.randrange(64 if rng.random() < 0.5 else 512)
        if rng.random() < 0.7:
            data[at] = rng.getrandbits(8)
        else:
            del data[at:at + rng.randint(1, 600)]
    signal.alarm(5)
    try:
        for _ in tar_members(io.BytesIO(bytes(data)), 1 << 16, 64):
            pass
        return "read"
    except TarDamage:
        return "damage"
    finally:
        signal.alarm(0)


def _hung(*_) -> None:
    raise AssertionError("tar_members ran for 5 s on a damaged archive of ~30 KB")


def test_reader_flushes_records_and_names_the_damaged_member(tmp_path):
    path = write_tar(tmp_path / "a.tar", [sample(f"s{i}", jpeg(i, quality=95)) for i in range(3)])
    data = path.read_bytes()
    image_at = offsets(data)[2]  # s1.jpg
    path.write_bytes(data[: image_at + 600])
    items = list(read_shard(Shard(0, str(path), "tar"), ReaderConfig()))
    assert [type(i) for i in items] == [Record, Reject]
    assert items[0].data == jpeg(0, quality=95)
    assert items[1].source == f"{path}#s1.jpg" and items[1].error_type == "corrupt_shard"
    assert items[1].message.startswith("TarDamage: unexpected end of data in member 's1.jpg'")


class _Trickle(io.RawIOBase):
    """A stream that gives at most 7 bytes a read, as some network file-likes do."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(min(n, 7))


def test_read_up_to_reads_past_short_reads_and_asks_for_no_huge_buffer(tmp_path):
    data = bytes(range(256)) * 40
    assert read_up_to(_Trickle(data), 1000) == data[:1000]
    assert read_up_to(_Trickle(data), 1 << 20) == data
    path = tmp_path / "small.jpg"
    path.write_bytes(data)
    with open(path, "rb") as f:  # a buffered file's read(n) allocates n bytes: 1 TiB was a MemoryError
        assert read_up_to(f, (1 << 40) + 1) == data
