"""What `memgen` says without a command to run (its usage, an unknown command), answered
before the command line's modules import: Beam's take a second or more."""

from __future__ import annotations

import sys

COMMANDS = ("memorize", "sample", "evaluate", "demo")

USAGE = """usage: memgen COMMAND [options]

commands:
  memorize   web image shards -> deduplicated Parquet memory
  sample     memory -> reproducible sample (webdataset, parquet, folder or MDS) + contact sheet
  evaluate   memory (+ sample, reference) -> report.json and report.html: cat fraction
             with 95% confidence intervals, distances between image sets, copying
  demo       build a small web-like corpus from bundled photos and run the jobs on it

`memgen COMMAND --help` describes each command."""


def answered(argv: list[str]) -> int | None:
    """The exit code of a command line that names no command to run (the usage printed, or
    one line on stderr), else None."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)  # no command is a mistake: stderr, exit 2
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"memgen: error: unknown command {argv[0]!r} (try memgen --help)", file=sys.stderr)
        return 2
    return None
