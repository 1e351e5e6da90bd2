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
import threading
import time
import traceback

COMMAND_PID = "MEMGEN_COMMAND_PID"  # the environment variable naming the command's process


def main() -> int:
    terminal = sys.stderr
    _end_with_command()
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

        release_output_streams()
        sdk_worker_main.main(sys.argv)
    except KeyboardInterrupt:  # the command says "interrupted" once
        return 130
    except BaseException:
        if _command_runs():  # else its connection to the command is what failed
            traceback.print_exc(file=terminal)  # the harness itself failed: nothing else will say why
        return 1
    return 0


def release_output_streams() -> None:
    """Make Beam's SDK harness drop a bundle's output streams once the bundle is done
    (idempotent; in this process).

    The harness keeps a stage's BundleProcessor for the stage's next bundle, and each of its
    DataOutputOperations kept its last bundle's stream: a C buffer grown by doubling to hold
    the stage's output (up to 16 MB; it is flushed past 10 MB), freed only when the processor
    is shut down at the end of the run: every stage's last output stayed allocated, about
    half of what memorize's peak RSS grew by a record. A bundle sets a new stream before it
    writes (BundleProcessor.process_bundle)."""
    from apache_beam.runners.worker.bundle_processor import DataOutputOperation

    finish = DataOutputOperation.finish
    if getattr(finish, "releases_stream", False):
        return

    def finish_and_release(self) -> None:
        finish(self)
        self.output_stream = None

    finish_and_release.releases_stream = True
    DataOutputOperation.finish = finish_and_release


def _end_with_command() -> None:
    """End this worker, quietly, once the command that started it is gone (killed by SIGKILL,
    which it cannot catch): left running, a worker printed tracebacks minutes after the
    command ended, and could still write parts."""
    def watch() -> None:
        while _command_runs():
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _command_runs() -> bool:
    """Whether the command still runs: its process exists and has not ended (a zombie, which
    its parent has not reaped yet; Linux's /proc tells, elsewhere existing is running)."""
    try:
        pid = int(os.environ.get(COMMAND_PID) or 0) or os.getppid()
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):  # another user's process, say: not ours to judge
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


if __name__ == "__main__":
    sys.exit(main())
