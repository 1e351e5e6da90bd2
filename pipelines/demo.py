"""memgen demo: a web-like corpus from bundled photos, then the jobs on it."""

from __future__ import annotations

import shutil
from pathlib import Path

from memgen.democorpus import write_corpus, write_reference
from memgen.pipelines.errors import UsageError
from memgen.pipelines.options import OneLineParser

MARKER = ".memgen-demo"


def _fresh_folder(out: Path) -> None:
    """The demo owns its folder: it rebuilds one it made, and refuses anything else."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    try:
        if out.exists() and any(out.iterdir()):
            if not (out / MARKER).exists():
                raise UsageError(f"{out} is not empty and was not made by memgen demo")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).touch()
    except OSError as e:
        raise UsageError(f"--out {out} cannot be written: {type(e).__name__}: {e}") from None


def main(argv: list[str]) -> None:
    from memgen.pipelines.cli import evaluate, memorize, sample

    parser = OneLineParser(prog="memgen demo", description=__doc__)
    parser.add_argument("--out", default="demo-out",
                        help="folder for corpus and outputs (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.out.strip():  # Path("") is the working directory
        raise UsageError("--out is an empty string")
    if "://" in args.out:  # it made a local folder named "s3:"
        raise UsageError(f"--out {args.out}: the demo writes a local folder, not a URL")
    out = Path(args.out).resolve()
    _fresh_folder(out)
    shards = write_corpus(out / "corpus")
    print(f"corpus: {len(shards)} WebDataset shards in {out / 'corpus'}")
    memory, samples, report = out / "memory", out / "sample", out / "report"
    memorize([*map(str, shards), "--memory", str(memory)])
    print(f"memory: {memory}  (try: duckdb -c \"select source, copies from '{memory}/images/*.parquet'\")")
    sampled = sample(["--memory", str(memory), "--n", "8", "--weighted", "--out", str(samples)])
    print(f"sample: {samples}  contact sheet: {samples / sampled['contact_sheet']}")
    reference = write_reference(out / "reference")
    evaluate(["--memory", str(memory), "--sample", str(samples), "--out", str(report),
              *(f"--reference={r}" for r in reference)])
