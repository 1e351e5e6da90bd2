"""Crawl-like corpora generated from the real photos (never committed: benchmarks/out/).

Record i is a JPEG "rendition" (resize factor and quality drawn from a keyed hash of i)
of a "picture": a crop (60-90% of the frame, hash-drawn offset) of one real photo.
About 70% of records show a new picture, 20% re-render an earlier picture (near
duplicates: the same crop at another size and quality) and 10% repeat an earlier
record's bytes (exact duplicates), as a crawl holds the same image at many sizes. The
same bytes are written as WebDataset tar shards (memgen's input) and optionally as a
flat folder (imagededup's input).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from multiprocessing import Pool
from pathlib import Path

from PIL import Image, ImageOps

from benchmarks.common import photos

MAX_SIDE = 2500  # renditions are capped so that no image nears the pixel cap of memorize
EXACT_COPY_EVERY = 10  # every 10th record repeats an earlier record's bytes
NEAR_SHARE = 0.2 / 0.9  # of the other records: re-render an earlier picture


def _draw(index: int, salt: str) -> float:
    """A uniform [0, 1) number from a keyed hash (deterministic, no global RNG)."""
    digest = hashlib.blake2b(f"{salt}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _recipe(i: int) -> tuple[int, int]:
    """(picture, rendition) of record i."""
    if i > 0 and i % EXACT_COPY_EVERY == 0:
        return _recipe(int(_draw(i, "copy") * i))  # the very bytes of an earlier record
    if i > 0 and _draw(i, "near") < NEAR_SHARE:
        return _recipe(int(_draw(i, "near-of") * i))[0], i
    return i, i


def _render(job: tuple[int, int, str, tuple[float, float], tuple[int, int]]) -> bytes:
    picture, rendition, path, (scale_lo, scale_hi), (q_lo, q_hi) = job
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    keep = 0.6 + 0.3 * _draw(picture, "crop")
    w, h = round(img.width * keep), round(img.height * keep)
    left = int((img.width - w) * _draw(picture, "left"))
    top = int((img.height - h) * _draw(picture, "top"))
    img = img.crop((left, top, left + w, top + h))
    scale = min(scale_lo + (scale_hi - scale_lo) * _draw(rendition, "scale"), MAX_SIDE / max(w, h))
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    out = io.BytesIO()
    quality = q_lo + int((q_hi - q_lo) * _draw(rendition, "quality"))
    img.resize(size, Image.Resampling.BILINEAR).save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_corpus(out: Path, n_images: int, *, scale: tuple[float, float] = (0.5, 1.0),
                quality: tuple[int, int] = (60, 96), shard_size: int = 1000, folder: bool = False,
                processes: int = 2, max_bytes: float = float("inf")) -> dict:
    """Write n_images records (fewer once max_bytes of images are written) into
    out/shards/*.tar, and into out/folder/ when asked.

    Streams: an exact copy is rendered again from its recipe (deterministic, same bytes),
    so the generator never holds the corpus in memory.
    """
    sources = [str(p) for p in photos() if p.suffix.lower() in (".jpg", ".jpeg")]
    recipes = [_recipe(i) for i in range(n_images)]
    jobs = [(picture, rendition, sources[picture % len(sources)], scale, quality)
            for picture, rendition in recipes]
    (out / "shards").mkdir(parents=True, exist_ok=True)
    if folder:
        (out / "folder").mkdir(exist_ok=True)
    n_bytes = 0
    tar = None
    with Pool(processes) as pool:
        for i, data in enumerate(pool.imap(_render, jobs, chunksize=8)):
            if i % shard_size == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(out / "shards" / f"{i // shard_size:05d}.tar", "w")
            key = f"{i:08d}"
            _add(tar, f"{key}.jpg", data)
            _add(tar, f"{key}.txt", f"generated image {i}".encode())
            _add(tar, f"{key}.json", json.dumps({"url": f"https://example.com/{key}.jpg"}).encode())
            if folder:
                (out / "folder" / f"{key}.jpg").write_bytes(data)
            n_bytes += len(data)
            if n_bytes >= max_bytes:
                break
    if tar is not None:
        tar.close()
    recipes = recipes[: i + 1]
    return {"images": i + 1, "image_bytes": n_bytes, "shards": -(-(i + 1) // shard_size),
            "distinct_recipes": len(set(recipes)), "pictures": len({p for p, _ in recipes})}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
