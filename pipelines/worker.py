"""A worker process of a local multi-process run (memgen.pipelines.local_runner): Beam's SDK
harness, whose terminal shows memgen's progress lines and Python's warnings, and nothing
of Beam's. A worker's failure still reaches the command through the runner, which says it
in one line (storage, interrupt) or shows a bug's traceback (memgen.pipelines.cli).

Only the standard library is imported before main() guards Ctrl-C: a worker interrupted
while it imports Beam printed the import's traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback


def main() -> int:
    terminal = sys.stderr
    try:
        # The harness prints a failed bundle's traceback to sys.stderr and sends it to the
        # runner, as it sends every log record (to the local_job_service logger, which
        # log_progress() silences in the command): the command says it once.
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
        logging.getLogger().handlers = [logging.NullHandler()]
        from memgen.pipelines.logs import log_progress, show_warnings

        log_progress(terminal)
        show_warnings(terminal)
        from apache_beam.runners.worker import sdk_worker_main

        sdk_worker_main.main(sys.argv)
    except KeyboardInterrupt:  # the command says "interrupted" once
        return 130
    except BaseException:
        traceback.print_exc(file=terminal)  # the harness itself failed: nothing else will say why
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
