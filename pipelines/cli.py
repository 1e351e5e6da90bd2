"""The `memgen` command line: one subcommand per job."""

from __future__ import annotations

import logging
import sys

import apache_beam as beam

from memgen.memory import MemoryDirError, read_manifest
from memgen.pipelines.errors import UsageError
from memgen.pipelines.memorize import MemorizeConfig, MemorizeOptions, build
from memgen.pipelines.options import parse_job
from memgen.shards import NoInputError
from memgen.summary import memorize_summary

USAGE = """usage: memgen COMMAND [options]

commands:
  memorize   web image shards -> deduplicated Parquet memory
  demo       build a small web-like corpus from bundled photos and run the jobs on it

`memgen COMMAND --help` describes each command."""


def memorize(argv: list[str]) -> dict:
    """Run memorize; returns the manifest."""
    options = parse_job("memgen memorize", "Fingerprint, deduplicate and store web image shards.",
                        MemorizeOptions, argv, positional="INPUT", positional_flag="input")
    config = MemorizeConfig.from_options(options)
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, config)
    manifest = read_manifest(config.memory)
    print(memorize_summary(manifest))
    return manifest


def demo(argv: list[str]) -> None:
    from memgen.pipelines.demo import main as demo_main

    demo_main(argv)


COMMANDS = {"memorize": memorize, "demo": demo}


def _log_progress() -> None:
    """memgen's progress lines on stderr, plainly; Beam's own INFO chatter stays off."""
    log = logging.getLogger("memgen")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"memgen: error: unknown command {command!r} (try memgen --help)", file=sys.stderr)
        return 2
    _log_progress()
    try:
        COMMANDS[command](rest)
    except (UsageError, NoInputError, MemoryDirError) as e:
        print(f"memgen {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
