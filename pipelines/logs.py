"""The command line's logging: memgen's progress lines on stderr, plainly; Beam's own
INFO chatter off. Shared by the command and its local worker processes."""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class _Stderr(logging.StreamHandler):
    """A handler that writes to sys.stderr as it is when a line is logged (a test's capture
    replaces it, and closes the one before)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _stream: TextIO) -> None:
        pass


class _OneLine(logging.Formatter):
    """The message alone, without the newline a captured warning's text ends with."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip("\n")


def log_progress(stream: TextIO | None = None) -> None:
    """memgen's progress lines on `stream` (default: stderr), plainly; Beam's own INFO chatter
    stays off."""
    log = logging.getLogger("memgen")
    if not log.handlers:
        handler = _Stderr() if stream is None else logging.StreamHandler(stream)
        handler.setFormatter(_OneLine("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    # They log a worker's error with its traceback before the runner re-raises it, or a
    # connection to a worker process that ended; main then says it in one line (storage,
    # interrupt, a worker killed) or lets the traceback through (a bug).
    for name in ("apache_beam.runners.common", "apache_beam.runners.portability.local_job_service",
                 "apache_beam.runners.worker.data_plane",
                 "apache_beam.runners.portability.fn_api_runner.worker_handlers"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def show_warnings(stream: TextIO) -> None:
    """Python's warnings (Pillow's, say) on `stream`, as a process's own stderr shows them."""
    logging.captureWarnings(True)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLine("%(message)s"))
    logging.getLogger("py.warnings").addHandler(handler)
