"""The worker processes of a local multi-process run (--direct_running_mode=multi_processing).

FnApiRunner starts each as `python -m apache_beam.runners.worker.sdk_worker_main`, which
prints Beam's INFO lines (~45 a run), every failed bundle's traceback (~700 lines when
storage fails, before the command's one-line error) and, on Ctrl-C, each worker's
traceback to the terminal it inherits. `LocalRunner` starts them as
`python -m memgen.pipelines.worker`: the same SDK harness, whose stderr shows memgen's
progress lines as a run in one process does, and nothing of Beam's. A worker's failure
still reaches the command through the runner, which says it in one line (storage,
interrupt) or shows a bug's traceback (memgen.pipelines.cli).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import traceback
from typing import TextIO

from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.environments import Environment, SubprocessSDKEnvironment

WORKER_COMMAND = f"{shlex.quote(sys.executable)} -m memgen.pipelines.worker"


class LocalRunner(FnApiRunner):
    """FnApiRunner whose worker processes run `main` below."""

    # FnApiRunner.run_pipeline sets the environment of Beam's worker command for
    # multi_processing; a runner option cannot change that command, this setter does.
    @property
    def _default_environment(self) -> Environment:
        return self._environment

    @_default_environment.setter
    def _default_environment(self, environment: Environment) -> None:
        if isinstance(environment, SubprocessSDKEnvironment):
            environment = SubprocessSDKEnvironment.from_command_string(WORKER_COMMAND)
        self._environment = environment


class _Stderr(logging.StreamHandler):
    """A handler that writes to sys.stderr as it is when a line is logged (a test's capture
    replaces it, and closes the one before)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _stream: TextIO) -> None:
        pass


def log_progress(stream: TextIO | None = None) -> None:
    """memgen's progress lines on `stream` (default: stderr), plainly; Beam's own INFO chatter
    stays off."""
    log = logging.getLogger("memgen")
    if not log.handlers:
        handler = _Stderr() if stream is None else logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    # They log a worker's error with its traceback before the runner re-raises it; main then
    # prints it in one line (storage, interrupt) or lets the traceback through (a bug).
    for name in ("apache_beam.runners.common", "apache_beam.runners.portability.local_job_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def main() -> int:
    # Nothing of Beam's on the terminal: the harness prints a failed bundle's traceback to
    # sys.stderr and sends it to the runner, as it sends every log record (to the
    # local_job_service logger, which log_progress() silences in the command).
    terminal, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 - the process's
    logging.getLogger().handlers = [logging.NullHandler()]
    log_progress(terminal)
    logging.captureWarnings(True)  # Python warnings (Pillow's, say) still show, as in one process
    logging.getLogger("py.warnings").addHandler(logging.StreamHandler(terminal))
    from apache_beam.runners.worker import sdk_worker_main

    try:
        sdk_worker_main.main(sys.argv)
    except KeyboardInterrupt:  # the command says "interrupted" once
        return 130
    except BaseException:
        traceback.print_exc(file=terminal)  # the harness itself failed: nothing else will say why
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
