"""A small web-like corpus built from photos that ship inside installed packages.

Each photo appears as an original, a byte-identical copy in another shard, and
transformed copies (resized, recompressed, cropped, brightened, PNG) — the kinds of
duplicates a crawl holds — with captions and JSON metadata, written as
img2dataset-style WebDataset shards. A few broken records test the rejects path.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from PIL import Image, ImageEnhance

# (package, resource path, caption): photos shipped in the demo extra's wheels.
PHOTOS = [
    ("skimage", "data/chelsea.png", "Chelsea the cat sitting on a rug"),
    ("skimage", "data/astronaut.png", "portrait of astronaut Eileen Collins"),
    ("skimage", "data/coffee.png", "a cup of coffee on a saucer"),
    ("skimage", "data/rocket.jpg", "a rocket on the launch pad"),
    ("skimage", "data/motorcycle_left.png", "a motorcycle in a workshop"),
    ("skimage", "data/hubble_deep_field.jpg", "galaxies in the Hubble deep field"),
    ("skimage", "data/retina.jpg", "fundus photograph of a human retina"),
    ("skimage", "data/camera.png", "black and white photo of a cameraman"),
    ("skimage", "data/coins.png", "old coins on a table"),
    ("sklearn", "datasets/images/china.jpg", "a Chinese temple by the lake"),
    ("sklearn", "datasets/images/flower.jpg", "a flower in close-up"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "portrait of Grace Hopper"),
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # a PNG copy is stored as KEY.png, as img2dataset names its files
# Held out of the memory: the reference ("test") set of the evaluation.
HELD_OUT = [
    ("skimage", "data/ihc.png", "immunohistochemistry stain under the microscope"),
    ("skimage", "data/moon.png", "the surface of the moon"),  # not the right motorcycle: 4 bits off the left
    ("skimage", "data/gravel.png", "gravel on the ground"),
    ("skimage", "data/brick.png", "a brick wall"),
    ("skimage", "data/grass.png", "grass"),
    ("skimage", "data/color.png", "colour test chart"),
]

Transform = Callable[[Image.Image], Image.Image]
TRANSFORMS: dict[str, Transform] = {
    "resized": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.LANCZOS),
    "cropped": lambda im: im.crop((im.width // 25, im.height // 25, im.width, im.height)),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
}


def photo_bytes(package: str, path: str) -> bytes:
    return resources.files(package).joinpath(path).read_bytes()


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def corpus_records() -> list[tuple[str, str, bytes, str, dict]]:
    """(shard name, key, image bytes, caption, metadata) for the whole corpus, in order."""
    records = []
    for n, (package, path, caption) in enumerate(PHOTOS):
        image = Image.open(io.BytesIO(photo_bytes(package, path)))
        image.load()
        original = _jpeg(image, 92)
        url = f"https://example.org/photos/{n:03d}.jpg"
        records.append(("00000", f"{n:03d}_original", original, caption, {"url": url}))
        records.append(("00001", f"{n:03d}_mirror", original, caption,
                        {"url": f"https://mirror.example.net/{n:03d}.jpg"}))
        records.append(("00001", f"{n:03d}_q40", _jpeg(image, 40), caption.upper(), {"url": url + "?q=40"}))
        for name, transform in TRANSFORMS.items():
            records.append(("00002", f"{n:03d}_{name}", _jpeg(transform(image), 85),
                            f"{caption} ({name})", {"url": f"{url}?{name}"}))
        records.append(("00002", f"{n:03d}_png", _png(image), caption, {"url": url[:-4] + ".png"}))
    broken = [
        ("truncated", _jpeg(Image.open(io.BytesIO(photo_bytes("skimage", "data/coffee.png"))), 90)[:2000]),
        ("not_an_image", b"<html><body>404 not found</body></html>"),
        ("empty", b""),
    ]
    for key, data in broken:
        records.append(("00002", f"broken_{key}", data, "broken record", {"url": None}))
    return records


def held_out_records() -> list[tuple[str, str, bytes, str, dict]]:
    """The reference set: photos not in the corpus, plus one leaked copy of a corpus photo."""
    records = []
    for n, (package, path, caption) in enumerate(HELD_OUT):
        image = Image.open(io.BytesIO(photo_bytes(package, path)))
        records.append(("reference", f"ref{n:03d}", _jpeg(image, 90), caption, {"url": None}))
    leaked = Image.open(io.BytesIO(photo_bytes(*PHOTOS[0][:2])))
    records.append(("reference", "leaked_000", _jpeg(TRANSFORMS["resized"](leaked), 80), PHOTOS[0][2],
                    {"url": None}))
    return records


def write_corpus(folder: Path) -> list[Path]:
    """Write the corpus as WebDataset shards (the last one gzipped); returns their paths."""
    return write_shards(folder, corpus_records())


def write_reference(folder: Path) -> list[Path]:
    return write_shards(folder, held_out_records())


def write_shards(folder: Path, records: list[tuple[str, str, bytes, str, dict]]) -> list[Path]:
    """Records grouped into img2dataset-style WebDataset shards (the last one gzipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: dict[str, list] = {}
    for shard, key, data, caption, meta in records:
        shards.setdefault(shard, []).append((key, data, caption, meta))
    paths = []
    for i, (shard, items) in enumerate(sorted(shards.items())):
        gzipped = len(shards) > 1 and i == len(shards) - 1  # one gzipped shard shows both kinds
        path = folder / (f"{shard}.tar.gz" if gzipped else f"{shard}.tar")
        with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as tar:
            for key, data, caption, meta in items:
                meta = {"key": key, "caption": caption, **meta}
                image = "png" if data.startswith(PNG_SIGNATURE) else "jpg"  # broken ones: as saved
                for ext, payload in ((image, data), ("txt", caption.encode()),
                                     ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        paths.append(path)
    return paths
