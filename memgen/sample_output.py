"""The sample directory on disk: the images in images/, index.parquet, contact sheet, and
manifest.json written last.

Pure I/O through fsspec, no Beam. Consecutive memory parts share an output file
(images/sample-NNNNNN.tar / .parquet, or the MDS shards images/sample-NNNNNN.SSSSS.mds,
numbered from 0 without gaps: `file_numbers`) or write a set of files in images/; the
bytes of a chosen image are read from its part and written by the same worker. The
images have a folder of their own, as a memory's tables do: a glob over it (DuckDB's
`images/*.parquet`, webdataset's shards, `--reference SAMPLE/images`, an MDS dataset's
folder) reads the images and nothing else (index.parquet and the contact sheet beside
the Parquet parts were read as part of the sample).
Names and content depend only on the memory and the seed: tar members carry fixed
metadata (mtime 0, uid 0), JSON keys are sorted. Inside a file, images follow the
parts' order and their row order; index.parquet lists the whole sample in rank order.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from memgen.contact_sheet import contact_sheet, thumbnail
from memgen.decode import DEFAULT_MAX_PIXELS
from memgen.manifest import finished
from memgen.mdsfile import INDEX as MDS_INDEX
from memgen.mdsfile import SIZE_LIMIT, Column, ShardWriter, index_json
from memgen.memory import (
    MANIFEST,
    MemoryDirError,
    ParquetPart,
    join,
    manifest_digest,
    part_rows,
    read_manifest,
    refuse_finished,
    run_above,
    why_no_manifest,
    write_manifest,
)
from memgen.outputs import AtomicFile, Claim, claim_output, make_folder, temporaries, write_whole
from memgen.safe_names import extension, safe_join, sample_stem
from memgen.sampling import Chosen
from memgen.schema import load_json, table_schema

INDEX = "index.parquet"
CONTACT_SHEET = "contact_sheet.jpg"
IMAGES_DIR = "images"
SHEET_IMAGES = 64  # thumbnails on the contact sheet: the first ranks of the sample
IMAGES_PER_FILE = 1000  # a tar or Parquet file of the sample holds this many images or a little more
_SUFFIX = {"webdataset": "tar", "parquet": "parquet"}


@dataclass
class PartResult:
    """What one part's writer reports: index rows and thumbnails (small), counts."""

    index_rows: list[dict[str, Any]] = field(default_factory=list)
    thumbs: list[tuple[int, bytes | None]] = field(default_factory=list)
    image_bytes: int = 0
    mds_shards: list[dict[str, Any]] = field(default_factory=list)  # --format mds: their index.json entries


def sample_memory(sample: str, memory: str | None = None) -> tuple[dict[str, Any], str]:
    """A finished sample's manifest, and the memory its images are read from: `memory`
    when the sample was drawn from it (same manifest.json: the memory may have moved),
    else the memory its manifest names. MemoryDirError when neither is that memory. (A
    sample whose manifest has no sha256 of its memory's: the memory it names, else `memory`.)"""
    manifest = read_manifest(sample)
    if manifest is None:
        raise MemoryDirError(f"{sample} is not a finished sample ({why_no_manifest(sample)})"
                             f"{run_above(sample)}")
    if manifest.get("job") != "sample":
        raise MemoryDirError(f"{sample} is not a sample (its manifest.json is not from memgen sample)")
    recorded, digest = manifest["memory"], manifest.get("memory_manifest_sha256")
    if digest is None:  # a sample that names its memory only: that, else `memory` on trust
        found = [m for m in (recorded, memory) if m and read_manifest(m) is not None]
    else:
        found = [m for m in (memory, recorded) if m and manifest_digest(m) == digest]
    if found:
        return manifest, found[0]
    if read_manifest(recorded) is not None:  # "is not at X any more nor is it --memory X" said nothing
        raise MemoryDirError(f"the memory sample {sample} was drawn from is not at {recorded} any more: "
                             "a memory made anew there since holds other parts; draw the sample anew"
                             f"{' or give the memory it was drawn from as --memory' if memory else ''}")
    raise MemoryDirError(f"the memory sample {sample} was drawn from is not at {manifest['memory']} "
                         f"any more{' nor is it --memory ' + memory if memory else ''}: "
                         "give its new place as --memory")


def uniform_population(sample: str) -> int | None:
    """The unique images a uniform sample was drawn from; None for a weighted one, whose
    share of copies leans to the most copied images and estimates no population's."""
    manifest = read_manifest(sample) or {}
    population = manifest.get("population")
    uniform = manifest.get("mode") == "uniform" and isinstance(population, int) and population > 0
    return population if uniform else None


def sample_claim(out: str) -> Claim:
    """A new sample run's claim on `out` (memgen.outputs)."""
    return Claim(out, "sample", "--out", MANIFEST)


def prepare_sample_output(claim: Claim, check_only: bool = False) -> None:
    """Refuse a finished sample (or any finished run); clear what an unfinished one left
    (`check_only`: refuse only)."""
    refuse_finished(claim)
    # sample-* at the top: where versions before images/ wrote the files
    claim_output(claim, (IMAGES_DIR, INDEX, CONTACT_SHEET, "sample-*", ".sample-*",
                         *map(temporaries, (MANIFEST, INDEX, CONTACT_SHEET))), check_only)


def output_name(number: int, fmt: str) -> str:
    """images/sample-NNNNNN.tar|parquet, the output file `number`; images/ for folders; the
    stem of its shards images/sample-NNNNNN.SSSSS.mds for MDS."""
    if fmt == "folder":
        return IMAGES_DIR
    stem = f"{IMAGES_DIR}/sample-{number:06d}"
    return stem if fmt == "mds" else f"{stem}.{_SUFFIX[fmt]}"


def file_numbers(chosen_parts: Iterable[str]) -> dict[str, int]:
    """The output file of each memory part that holds chosen images (`chosen_parts`: the part
    of each): consecutive parts, sorted, share a file until it holds IMAGES_PER_FILE images,
    and files are numbered 0, 1, 2, ... so a brace range names them all (one file a part, named
    after it, made `sample-{000000..000039}.tar` miss files, and a sample of a memory of small
    parts a tar an image)."""
    counts = Counter(chosen_parts)
    numbers: dict[str, int] = {}
    number, held = 0, 0
    for part in sorted(counts):
        if held >= IMAGES_PER_FILE:
            number, held = number + 1, 0
        numbers[part] = number
        held += counts[part]
    return numbers


def sample_rows_schema() -> pa.Schema:
    """--format parquet: the memory schema plus the sampling columns of the index."""
    images = table_schema("images")
    index, doc = table_schema("sample_index"), load_json("sample_index")
    extra = [index.field(f["name"]) for f in doc["fields"] if f.get("sampling")]
    # the version of the sampling columns
    return pa.schema([*images, *extra], metadata={"memgen_table": "sample", "version": str(doc["version"])})


def write_file(number: int, chosen: Iterable[Chosen], out: str, fmt: str,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> PartResult:
    """Write output file `number` (file_numbers): the chosen rows of its memory parts, each
    part read once, in order; returns the index rows. `max_pixels`: the memory's cap, which
    its images fit (their contact sheet thumbnails)."""
    by_part: dict[str, dict[str, Chosen]] = defaultdict(dict)
    for c in map(Chosen._make, chosen):
        by_part[c.part][c.image_id] = c
    result = PartResult()
    with _WRITERS[fmt](out, output_name(number, fmt)) as writer:
        for part, by_id in sorted(by_part.items()):
            for row in part_rows(part, None, frozenset(by_id), batch_rows=256):
                c = by_id[row["image_id"]]
                file, member = writer.add(row, c)
                result.index_rows.append(index_row(row, c, posixpath.basename(part), file, member))
                result.image_bytes += len(row["image"])
                if c.rank < SHEET_IMAGES:
                    result.thumbs.append((c.rank, thumbnail(row["image"], max_pixels=max_pixels)))
    result.mds_shards = writer.shards.shards if fmt == "mds" else []
    return result


def sampling_fields(row: dict[str, Any], c: Chosen) -> dict[str, Any]:
    """The index's `sampling` fields of a chosen memory row; `key` names it in every format
    (webdataset's and img2dataset's key: the sampling key is `log_key`, as a float `key` made
    memgen read its own Parquet samples under keys like -0.0123)."""
    return {"key": sample_stem(c.rank, row["source"]), "rank": c.rank, "weight": c.weight, "u": c.u,
            "log_key": c.key, "inclusion_probability": c.inclusion_probability}


def index_row(row: dict[str, Any], c: Chosen, memory_part: str, file: str,
              member: str | None) -> dict[str, Any]:
    names = table_schema("sample_index").names
    values = {**row, **sampling_fields(row, c), "memory_part": memory_part, "file": file, "member": member}
    return {k: values[k] for k in names}


def _metadata_json(row: dict[str, Any], c: Chosen) -> bytes:
    """The row's fields, its crawl metadata as an object (the memory holds it as JSON text:
    embedded as a string, a loader had to parse it twice), and the sampling fields; strict
    JSON in ASCII (a number too large for a float is null, as NaN is; a lone surrogate, which
    UTF-8 cannot hold, stays escaped)."""
    keep = ("image_id", "source", "url", "copies", "exact_copies", "width", "height", "format", "n_bytes")
    metadata = json.loads(row["metadata"] or "null", parse_float=_finite, parse_constant=lambda _: None)
    fields = {k: row[k] for k in keep} | {"metadata": metadata}
    return json.dumps(fields | sampling_fields(row, c), sort_keys=True, allow_nan=False).encode()


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


class _TarWriter:
    """KEY.EXT (original bytes), KEY.txt (caption, if any), KEY.json; KEY has no dot (webdataset)."""

    def __init__(self, out: str, name: str) -> None:
        self.name = name
        fs, path = fsspec.core.url_to_fs(join(out, name))
        self.target = AtomicFile(fs, path)

    def __enter__(self) -> _TarWriter:
        self.tar = tarfile.open(fileobj=self.target.open(), mode="w", format=tarfile.GNU_FORMAT)
        self.count = 0
        return self

    def add(self, row: dict[str, Any], c: Chosen) -> tuple[str, str | None]:
        """(the file, the member) that hold the row's image, as the index names them."""
        key = sample_stem(c.rank, row["source"])
        image_member = f"{key}.{extension(row['format'])}"
        self._member(image_member, row["image"])
        if row["caption"] is not None:  # as img2dataset: no caption, no KEY.txt (an empty one reads as "")
            self._member(f"{key}.txt", row["caption"].encode())
        self._member(f"{key}.json", _metadata_json(row, c))
        self.count += 1
        return self.name, image_member

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        self.tar.addfile(info, io.BytesIO(data))

    def __exit__(self, exc_type, *_) -> None:
        try:
            self.tar.close()
            if exc_type is None and self.count:
                self.target.commit()
                return
        except BaseException:
            self.target.discard()
            raise
        self.target.discard()


class _ParquetWriter:
    """The chosen memory rows with the sampling columns."""

    def __init__(self, out: str, name: str) -> None:
        self.name = name
        self.part = ParquetPart(join(out, name), sample_rows_schema())

    def __enter__(self) -> _ParquetWriter:
        self.part.__enter__()
        return self

    def add(self, row: dict[str, Any], c: Chosen) -> tuple[str, str | None]:
        self.part.add({**row, **sampling_fields(row, c)})
        return self.name, None

    def __exit__(self, *exc) -> None:
        self.part.__exit__(*exc)


class _FolderWriter:
    """images/STEM.EXT, STEM.txt (caption, if any), STEM.json; STEM from safe_names, checked by safe_join."""

    def __init__(self, out: str, name: str) -> None:
        self.name = name
        self.fs, self.path = fsspec.core.url_to_fs(join(out, name))

    def __enter__(self) -> _FolderWriter:
        make_folder(self.fs, self.path)
        return self

    def add(self, row: dict[str, Any], c: Chosen) -> str:
        stem = sample_stem(c.rank, row["source"])
        name = f"{stem}.{extension(row['format'])}"
        files = [(name, row["image"]), (f"{stem}.json", _metadata_json(row, c))]
        if row["caption"] is not None:
            files.append((f"{stem}.txt", row["caption"].encode()))
        for file, data in files:
            with self.fs.open(safe_join(self.path, file), "wb") as f:
                f.write(data)
        return f"{self.name}/{name}", None

    def __exit__(self, *_) -> None:
        pass


class _MdsWriter:
    """MDS shards, as MosaicML Streaming's MDSWriter writes them (at most its 64 MiB each): a
    sample an image, its columns `image` (the original bytes), `caption` (a string, or null
    without one), `key` and `json` (KEY.json's object). The dataset's images/index.json lists
    the shards of every file (finish_sample)."""

    def __init__(self, out: str, name: str) -> None:
        self.out = out
        self.shards = ShardWriter(MDS_COLUMNS, lambda n: f"{name}.{n:05d}.mds", MDS_SHARD_BYTES)

    def __enter__(self) -> _MdsWriter:
        return self

    def add(self, row: dict[str, Any], c: Chosen) -> tuple[str, str | None]:
        values = {"image": row["image"], "caption": json.dumps(row["caption"]).encode(),
                  "key": sample_stem(c.rank, row["source"]).encode(), "json": _metadata_json(row, c)}
        self._write(self.shards.add(values))
        return self.shards.current, None

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self._write(self.shards.finish())

    def _write(self, shard: tuple[str, bytes] | None) -> None:
        if shard is not None:
            name, data = shard
            write_whole(join(self.out, name), lambda f: f.write(data))


MDS_SHARD_BYTES = SIZE_LIMIT  # MDSWriter's default
# caption: JSON, a string or null (a str column holds no null: "" would read back as a caption)
MDS_COLUMNS = [Column("caption", "json", None), Column("image", "bytes", None), Column("json", "json", None),
               Column("key", "str", None)]  # sorted by name, as MDSWriter orders them
_WRITERS = {"webdataset": _TarWriter, "parquet": _ParquetWriter, "folder": _FolderWriter, "mds": _MdsWriter}
FORMATS = tuple(_WRITERS)


def _write_empty(out: str, fmt: str) -> str:
    """The one file of a sample without images (an empty memory): an empty Parquet part or
    tar, or the images/ folder, so that a glob over images/ matches, as a memory's empty
    table does (`--reference OUT/images`, DuckDB, webdataset). Returns its name."""
    name = output_name(0, fmt)
    fs, path = fsspec.core.url_to_fs(join(out, name))
    if fmt == "folder":
        make_folder(fs, path)
        return name
    make_folder(fs, posixpath.dirname(path))
    with fs.open(path, "wb") as f:
        if fmt == "parquet":
            pq.write_table(sample_rows_schema().empty_table(), f, compression="zstd")
        else:
            tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT).close()
    return name


def _write_mds_index(out: str, results: list[PartResult]) -> str:
    """images/index.json, which lists every file's MDS shards, in their names' order, as
    MDSWriter lists a dataset's (an empty sample's lists none). Returns its name."""
    shards = sorted((s for res in results for s in res.mds_shards), key=lambda s: s["raw_data"]["basename"])
    name = f"{IMAGES_DIR}/{MDS_INDEX}"
    write_whole(join(out, name), lambda f: f.write(index_json(shards)))
    return name


def finish_sample(results: Iterable[PartResult], claim: Claim, tau: float | None,
                  manifest: dict[str, Any]) -> dict[str, Any] | None:
    """index.parquet (rank order), contact sheet, then manifest.json: the sample is finished."""
    if not claim.held():
        return None  # another run took --out over; the command line says so
    out = claim.url
    results = list(results)
    rows = sorted((r for res in results for r in res.index_rows), key=lambda r: r["rank"])
    index = pa.Table.from_pylist(rows, schema=table_schema("sample_index"))
    write_whole(join(out, INDEX), lambda f: pq.write_table(index, f, compression="zstd"))
    thumbs = [t for _, t in sorted(t for res in results for t in res.thumbs)]
    # (as image/jpeg on an object store: written there by fs.open, it was binary/octet-stream)
    write_whole(join(out, CONTACT_SHEET), lambda f: contact_sheet(thumbs).save(f, "JPEG", quality=90))
    # a folder sample's files are its images; a webdataset or Parquet sample has one file a part,
    # an MDS one its shards and their index.json
    fmt = manifest["format"]
    files = [IMAGES_DIR] if fmt == "folder" else sorted({r["file"] for r in rows})
    if fmt == "mds":
        files = sorted([*files, _write_mds_index(out, results)])
    elif not rows:
        files = [_write_empty(out, fmt)]
    manifest = {
        **manifest,
        "threshold": tau,
        **finished(manifest),
        "index": INDEX,
        "contact_sheet": CONTACT_SHEET,
        "files": files,
        "counts": {"images": len(rows), "image_bytes": sum(res.image_bytes for res in results),
                   "thumbnails_undecodable": sum(t is None for t in thumbs)},
    }
    write_manifest(out, manifest)
    return manifest


def sample_summary(manifest: dict[str, Any]) -> str:
    """The end-of-run lines printed by `memgen sample`."""
    out = manifest["out"]
    files = (f"{manifest['counts']['images']} image file(s)" if manifest["format"] == "folder"
             else f"{len(manifest['files'])} file(s)")
    rows = [
        ("mode", f"{manifest['mode']} (seed {manifest['seed']})"),
        ("sampled", f"{manifest['counts']['images']} of {manifest['population']} unique images"),
        ("format", f"{manifest['format']}: {files} in {IMAGES_DIR}/"),
        ("image bytes", manifest["counts"]["image_bytes"]),
        ("index", join(out, manifest["index"])),
        ("contact sheet", join(out, manifest["contact_sheet"])),
        ("time (s)", f"{manifest['seconds']:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
