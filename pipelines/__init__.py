"""memgen's jobs and command line (installed as the package memgen.pipelines)."""

import logging
import os
import sys


class _QuietBeamImport(logging.Filter):
    """Beam warns at import time about optional GCP client libraries it does not need here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


# Configured before apache_beam is imported: otherwise logging.warning() at Beam's
# import installs a root handler that prints that line before every command's output.
if not logging.getLogger().handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _handler.addFilter(_QuietBeamImport())
    logging.getLogger().addHandler(_handler)
    logging.getLogger().setLevel(logging.WARNING)


def main() -> int:
    """The `memgen` console script. Its usage is said before the command line's modules
    import (Beam's take a second or more); Ctrl-C while they import ends as it does later,
    in one line with exit code 130, not with the traceback of an import."""
    from memgen.pipelines import usage

    if (code := usage.answered(sys.argv[1:])) is not None:
        return code
    try:
        from memgen.pipelines import cli
    except KeyboardInterrupt:
        print("memgen: interrupted", file=sys.stderr)
        return 130
    return ended(cli.main())


def ended(code: int) -> int:
    """The exit code of a command process; an interrupted one ends at once: the runner's
    threads are still ending, and nothing of theirs is to be waited for or shown."""
    if code in (130, 143):  # SIGINT, SIGTERM
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
