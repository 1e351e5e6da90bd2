"""Test helpers: generated photos-like images and img2dataset-style shards."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import json
import sys
import tarfile
import types
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from PIL import Image

from memgen.schema import load_json


def valid_manifest(manifest: dict, schema: str = "manifest.schema") -> dict:
    """`manifest` once it validates against schemas/SCHEMA.json (memorize's by default, or
    "sample_manifest.schema"); jsonschema.ValidationError else."""
    jsonschema.validate(manifest, load_json(schema), cls=jsonschema.Draft202012Validator)
    return manifest


def make_image(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth random scene (blurred blobs): distinct seeds give distinct pHashes."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(low).resize((w, h), Image.BICUBIC)


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image = image.convert("RGB")
        kwargs.setdefault("quality", 90)
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def jpeg(seed: int, **kwargs) -> bytes:
    return encode(make_image(seed), "JPEG", **kwargs)


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """samples: (key, {ext: bytes}); compressed as the name says (.gz/.tgz, .bz2/.tbz2, .xz/.txz,
    .zst/.zstd/.tzst: with a checksum, as the zstd CLI and `tar --zstd` write it)."""
    name = str(path)
    mode = next((m for suffixes, m in (((".gz", ".tgz"), "w:gz"), ((".bz2", ".tbz2", ".tbz"), "w:bz2"),
                                       ((".xz", ".txz"), "w:xz")) if name.endswith(suffixes)), "w")
    zstd = name.endswith((".zst", ".zstd", ".tzst"))  # tarfile writes no zstd before Python 3.14
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") if zstd else tarfile.open(path, mode) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    if zstd:
        path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(plain.getvalue()))
    return path


def sample(key: str, image: bytes, caption: str | None = None, url: str | None = None,
           ext: str = "jpg") -> tuple[str, dict[str, bytes]]:
    members = {ext: image}
    if caption is not None:
        members["txt"] = caption.encode()
    members["json"] = json.dumps({"key": key, "url": url}).encode()
    return key, members


def write_parquet(path: Path, rows: list[dict], image_column: str = "jpg") -> Path:
    table = pa.Table.from_pylist(
        [{"key": r["key"], image_column: r["image"], "caption": r.get("caption"),
          "url": r.get("url"), "width": r.get("width")} for r in rows])
    pq.write_table(table, path)
    return path


def lossless_jpeg(grey: np.ndarray) -> bytes:
    """A lossless JPEG (ITU T.81 process 14, SOF3) of an 8-bit grey image: Pillow reads
    these but cannot write them. First-order prediction (left neighbour; above in the first
    column), one Huffman table giving each difference category a 5-bit code."""
    height, width = grey.shape
    pixels = grey.astype(np.int32)
    predicted = np.empty_like(pixels)
    predicted[0, 0] = 128
    predicted[0, 1:] = pixels[0, :-1]
    predicted[1:, 0] = pixels[:-1, 0]
    predicted[1:, 1:] = pixels[1:, :-1]
    bits: list[str] = []
    for diff in (pixels - predicted).ravel().tolist():
        size = abs(diff).bit_length()  # the category, coded as itself in 5 bits
        extra = (diff if diff >= 0 else diff + (1 << size) - 1) if size else 0
        bits.append(f"{size:05b}" + (f"{extra:0{size}b}" if size else ""))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # pad with 1-bits
    data = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    counts = bytes(4) + bytes([17]) + bytes(11)  # 17 codes of 5 bits
    return b"".join([
        b"\xff\xd8",
        segment(0xC3, bytes([8]) + height.to_bytes(2, "big") + width.to_bytes(2, "big")
                + bytes([1, 1, 0x11, 0])),  # 8 bits, one component
        segment(0xC4, bytes([0x00]) + counts + bytes(range(17))),
        segment(0xDA, bytes([1, 1, 0x00, 1, 0, 0])),  # predictor 1, no point transform
        data, b"\xff\xd9",
    ])


def read_as_reference(shard, reader) -> tuple[list[bytes], list[bytes]]:  # noqa: ANN001 - Shard, ReaderConfig
    """The image bytes evaluate takes from a --reference shard: for the distances
    (image_sets.reference_images) and for report.html's figure (report_figures), which read alike."""
    from memgen.fingerprint import FingerprintConfig
    from memgen.report_figures import _reference_images
    from memgen.stages.image_sets import reference_images  # imported here: Beam, for two tests only

    hashed = [getattr(image, "data", image) for image in reference_images(shard, reader, FingerprintConfig())]
    shown = [image for image, _ in _reference_images([shard], 5, reader)]
    return hashed, shown


def write_mds(out: Path, columns: dict[str, str], rows: list[dict], **kwargs) -> Path:
    """An MDS dataset (its index.json and shards) in the folder `out`, written by MosaicML
    Streaming's own MDSWriter; `kwargs` are its (compression, size_limit)."""
    with _streaming("streaming.base.format.mds.writer").MDSWriter(out=str(out), columns=columns,
                                                                 **kwargs) as writer:
        for row in rows:
            writer.write(row)
    return out


def read_mds(local: Path) -> list[dict]:
    """Every sample of the MDS dataset in the folder `local`, in order, as MosaicML Streaming's
    own StreamingDataset (what a training job reads it with) gives them."""
    dataset = _streaming("streaming.base.dataset").StreamingDataset(local=str(local), shuffle=False,
                                                                    batch_size=1)
    return [dataset[i] for i in range(len(dataset))]


@functools.cache
def _streaming(module: str) -> types.ModuleType:
    """A module of MosaicML Streaming. The `streaming` package's __init__ imports its torch
    DataLoader and transformers (hundreds of MB, not test dependencies), none of which the
    writer and the dataset use: its modules are loaded from the installed package with
    `streaming` and `streaming.base` as bare packages (their __init__ not run). Their own
    code runs as it is."""
    if "streaming" not in sys.modules:
        root = Path(importlib.util.find_spec("streaming").submodule_search_locations[0])
        for name in ("streaming", "streaming.base"):
            package = types.ModuleType(name)
            package.__path__ = [str(root.parent / name.replace(".", "/"))]
            sys.modules[name] = package
    return importlib.import_module(module)
