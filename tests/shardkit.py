"""Test helpers: generated photos-like images and img2dataset-style shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


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
    """samples: (key, {ext: bytes}); compressed as the name says (.gz/.tgz, .bz2/.tbz2, .xz/.txz)."""
    name = str(path)
    mode = next((m for suffixes, m in (((".gz", ".tgz"), "w:gz"), ((".bz2", ".tbz2", ".tbz"), "w:bz2"),
                                       ((".xz", ".txz"), "w:xz")) if name.endswith(suffixes)), "w")
    with tarfile.open(path, mode) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
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
