"""zstd-compressed tars (.tar.zst, .tar.zstd, .tzst): found, read as their plain twins, and
their damage (a cut, corrupt bytes, no tar inside) a corrupt_shard reject after the records
before it."""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from memgen.readers import ReaderConfig, read_shard
from memgen.records import Record, Reject, Shard
from memgen.shards import compression, discover, shard_kind
from memgen.zstdstream import ZstdReader
from shardkit import jpeg, sample, write_tar

SUFFIXES = [".tar.zst", ".tar.zstd", ".tzst"]


def read(uri: str) -> list:
    return list(read_shard(Shard(0, uri, shard_kind(uri)), ReaderConfig()))


def records_of(items: list) -> list[tuple]:
    return [(r.data, r.caption, r.source.rsplit("#", 1)[1]) for r in items if isinstance(r, Record)]


def read_all(data: bytes, n: int = 1000) -> bytes:
    reader, out = ZstdReader(io.BytesIO(data)), []
    while chunk := reader.read(n):
        out.append(chunk)
    return b"".join(out)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_zstd_tar_in_a_folder_is_read_as_its_plain_twin(tmp_path, suffix):
    """A folder walk skipped them as other files; given by name, each was a not_an_image reject."""
    samples = [sample(f"s{i}", jpeg(i), f"caption {i}") for i in range(4)]
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir(), packed.mkdir()
    write_tar(plain / "a.tar", samples)
    write_tar(packed / f"a{suffix}", samples)
    assert discover([str(packed)]) == [Shard.of(0, str(packed / f"a{suffix}"), "tar")]
    twin = records_of(read(str(plain / "a.tar")))
    assert len(twin) == 4 and records_of(read(str(packed / f"a{suffix}"))) == twin


def test_img2dataset_metadata_beside_a_zstd_tar_is_skipped_as_beside_a_tar(tmp_path, caplog):
    write_tar(tmp_path / "00000.tar.zst", [sample("000000001", jpeg(1))])
    pq.write_table(pa.table({"url": ["http://x"], "status": ["success"]}), tmp_path / "00000.parquet")
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        assert [s.uri for s in discover([str(tmp_path)])] == [str(tmp_path / "00000.tar.zst")]
    assert caplog.messages == [f"{tmp_path}: skipped 1 files that are neither shards nor images"
                               " (parquet beside its tar, TFRecord or folder 1)"]


def test_a_signed_urls_zstd_tar_is_decompressed_by_its_paths_suffix():
    assert shard_kind("https://h/s.tar.zst?sig=1") == "tar"
    assert compression("https://h/s.tar.zst?sig=1") == compression("s3://b/s.tzst") is not None


def test_a_zstd_stream_is_read_across_frames_and_ends_only_between_them():
    """zstandard's stream_reader ends a stream cut inside a frame as if it were whole. Frames
    here: one with a checksum (as the zstd CLI writes them), a skippable one (seekable zstd's
    table), one with no content size: every cut between two of them reads, every other is an
    EOFError."""
    data = bytes(range(256)) * 8 + jpeg(3)  # compressible, then not: compressed and raw blocks
    frames = [zstandard.ZstdCompressor(write_checksum=True).compress(data),
              (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345",
              zstandard.ZstdCompressor(write_content_size=False).compress(data[:300])]
    stream = b"".join(frames)
    assert read_all(stream) == data + data[:300]
    ends = {sum(len(f) for f in frames[:i]) for i in range(len(frames) + 1)}
    for cut in range(len(stream) + 1):
        try:
            read_all(stream[:cut])
        except EOFError:
            assert cut not in ends, cut
        else:
            assert cut in ends, cut


def third_block(frame: bytes) -> int:
    """Where a zstd frame's third block starts (RFC 8878: a 3-byte header, last bit, type, size)."""
    at = zstandard.frame_header_size(frame)
    for _ in range(2):
        header = int.from_bytes(frame[at:at + 3], "little")
        at += 3 + (1 if (header >> 1) & 3 == 1 else header >> 3)
    return at


@pytest.mark.parametrize("damage", ["cut", "cut in its checksum", "bad block", "bad checksum", "junk after"])
def test_a_damaged_zstd_tar_keeps_the_records_before_the_damage(tmp_path, damage):
    """A .tar.zst cut short was said as a tar's damage (a member cut, no end marker), or not at
    all when the tar inside was whole (cut in the frame's checksum); corrupt zstd data was a
    traceback (ZstdError is no DAMAGE)."""
    # 60 samples: zstd decodes whole blocks of up to 128 kB, 20 of these samples
    path = write_tar(tmp_path / "a.tar.zst", [sample(f"s{i}", jpeg(i, quality=95)) for i in range(60)])
    data = path.read_bytes()
    at = third_block(data)
    damaged = {"cut": data[:len(data) * 2 // 3], "cut in its checksum": data[:-2],
               "bad block": data[:at] + b"\xff\xff\xff" + data[at + 3:],  # type 3: reserved
               "bad checksum": data[:-4] + bytes(4),  # what the zstd CLI checks last
               "junk after": data + b"not zstd at all"}[damage]
    path.write_bytes(damaged)
    items = read(str(path))
    records = [i for i in items if isinstance(i, Record)]
    assert [r.data for r in records] == [jpeg(i, quality=95) for i in range(len(records))]
    assert (1 <= len(records) < 60) if damage in ("cut", "bad block") else len(records) == 60
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert items[-1] is reject and (reject.stage, reject.error_type) == ("read", "corrupt_shard")
    cut = "zstd stream ended inside a frame"
    said = {"cut": cut, "cut in its checksum": cut, "bad block": "ZstdError", "bad checksum": "checksum",
            "junk after": "ZstdError"}
    assert said[damage] in reject.message


def test_a_zstd_frame_that_holds_no_tar_is_a_corrupt_shard(tmp_path):
    path = tmp_path / "a.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"these are no tar headers " * 100))
    (reject,) = read(str(path))
    assert (reject.stage, reject.error_type) == ("read", "corrupt_shard") and "TarDamage" in reject.message


@pytest.mark.parametrize("window_log", [27, 30])
def test_a_zstd_window_over_128_mib_is_an_unsupported_compression_reject(tmp_path, window_log):
    """`zstd --long=30` (streamed: no content size) writes frames that ask for a 1 GiB window;
    zstandard refused them with "Frame requires too much memory" alone. 128 MiB (--long's
    default, 27) is read, as the zstd CLI reads it without --long."""
    tar = tmp_path / "a.tar"
    write_tar(tar, [sample(f"s{i}", jpeg(i)) for i in range(3)])
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log, enable_ldm=True)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as writer:
        writer.write(tar.read_bytes())
    assert zstandard.get_frame_parameters(out.getvalue()).window_size == 1 << window_log
    (tmp_path / "a.tar.zst").write_bytes(out.getvalue())
    items = read(str(tmp_path / "a.tar.zst"))
    if window_log == 27:
        assert len(records_of(items)) == 3
        return
    (reject,) = items
    assert reject.error_type == "unsupported_compression"  # not damage: the shard is whole
    said = "a frame's window is 1024 MiB (written by zstd --long); windows up to 128 MiB are read"
    assert said in reject.message


def test_a_zstd_tar_named_as_a_plain_tar_says_so(tmp_path):
    path = tmp_path / "a.tar"
    write_tar(tmp_path / "a.tar.zst", [sample("s", jpeg(1))]).rename(path)
    (reject,) = read(str(path))
    assert reject.error_type == "corrupt_shard" and "zstd data where a tar header should be" in reject.message
