"""How a command run ends when it does not end by itself: Ctrl-C or SIGTERM (`timeout`,
`kill`, a scheduler stopping a task), or a local worker process that ends mid-run (killed
by the system when memory runs out, crashed), each in one line.

While a run goes, `Watch` holds the process's SIGINT and SIGTERM handlers and thread hook
(and gives them back after); SIGTERM ends a run as Ctrl-C does (its default action left the
worker processes running, to print tracebacks minutes later). After Ctrl-C the local
runner's threads fail as its worker processes end
("Exception in thread run_worker: ... exited with return code -2", grpc.RpcError) and its
logs say so: their tracebacks, printed while the interrupt unwinds, would bury the one
line the command prints. If the runner does not stop (it waits for worker processes that
a signal to the command alone did not reach, or for one that ended before it took a
bundle), the process ends QUIT_AFTER seconds later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

QUIT_AFTER = 15.0  # seconds the runner has, after Ctrl-C, to stop before the process ends anyway
# how LocalRunner's worker processes (and their shells) are started: what Ctrl-C may end
WORKER_COMMANDS = ("-m memgen.pipelines.worker", "apache_beam.runners.worker.sdk_worker_main")
# what LocalRunner's thread that waits for a worker process raises when it ends mid-run
_WORKER_EXIT = re.compile(r"Worker subprocess exited with return code (-?\d+)")
_current: Watch | None = None


class Watch:
    """A context manager around one command's run; `command` names it in the lines it prints."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.interrupted = False
        self.signal = signal.SIGINT  # the signal that interrupted the run
        self.worker_ended: str | None = None  # how, in words
        self._ending = False  # the run outlived an interrupt: its workers are being ended
        self._cancel = threading.Event()
        self._handlers: dict[int, object] = {}
        self._hook = None
        self._disabled = logging.root.manager.disable  # the level logging.disable() was at

    def __enter__(self) -> Watch:
        global _current
        # signal handlers belong to the main thread; a signal ignored (SIGINT of a background job) stays so
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._handlers[signum] = signal.signal(signum, self._interrupt)
        self._hook, threading.excepthook = threading.excepthook, self._thread_failed
        _current = self
        return self

    def __exit__(self, *_) -> None:
        global _current
        _current = None
        self._cancel.set()
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        threading.excepthook = self._hook
        logging.disable(self._disabled)

    def interrupted_line(self) -> str:
        name = signal.Signals(self.signal).name
        how = "interrupted" if self.signal == signal.SIGINT else f"ended by {name}"
        return f"memgen {self.command}: {how}; the same command finishes the run"

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports it."""
        return 128 + self.signal

    def worker_line(self) -> str:
        return (f"memgen {self.command}: error: a worker process {self.worker_ended}; "
                "the same command finishes the run")

    def _interrupt(self, signum, frame) -> None:
        if not self.interrupted:
            self.interrupted, self.signal = True, signum
            logging.disable(logging.CRITICAL)
            self._end_later(self.interrupted_line, self.exit_code)
        raise KeyboardInterrupt

    def _end_later(self, line: Callable[[], str], code: int) -> None:
        """Unless the run ends first, end its workers and the process QUIT_AFTER seconds from
        now, saying `line`, with exit status `code`."""
        threading.Thread(target=self._quit_later, args=(self._cancel, line, code), daemon=True).start()

    def _quit_later(self, cancel: threading.Event, line: Callable[[], str], code: int) -> None:
        if cancel.wait(QUIT_AFTER):
            return
        end_workers()
        print(line(), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)

    def outlived(self) -> None:
        """The run outlived a Ctrl-C (its result was written as the runner shut down): its
        workers are ended, the watchdog called off, logging back; the runner's threads that
        fail as the workers end stay quiet (they printed ~60 lines after the result)."""
        self._ending = True
        end_workers()
        self._cancel.set()
        self._cancel, self.interrupted = threading.Event(), False
        logging.disable(self._disabled)

    def _thread_failed(self, args: threading.ExceptHookArgs) -> None:
        if self.interrupted or self.worker_ended or self._ending:
            return
        ended = _WORKER_EXIT.search(str(args.exc_value))
        if isinstance(args.exc_value, RuntimeError) and ended:  # the command says it once, in one line
            self.worker_ended = _how_it_ended(int(ended.group(1)))
            logging.disable(logging.CRITICAL)  # the runner's threads and logs fail in turn
            # a worker that ended holding no bundle (killed as it started, say) fails none: the
            # runner would wait for it forever
            self._end_later(self.worker_line, 1)
            return
        if not any(kind.__name__ == "RpcError" for kind in type(args.exc_value).__mro__):
            self._hook(args)  # a worker's connection lost: what ended it is said by the command


def outlived_interrupt() -> None:
    """For a run that outlived a Ctrl-C (memgen.pipelines.cli.execute)."""
    if _current is not None:
        _current.outlived()


def end_workers() -> None:
    """Ends this process's local worker processes (a Ctrl-C sent to the command alone did not
    reach them); no other process it started."""
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if any(worker in command for worker in WORKER_COMMANDS):
                os.kill(pid, signal.SIGTERM)


def _descendants(pid: int) -> list[int]:
    """The processes started by `pid`, and by them (Linux's /proc; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))

    def tree(parent: int) -> list[int]:
        return [d for child in children.get(parent, []) for d in (child, *tree(child))]

    return tree(pid)


def _how_it_ended(code: int) -> str:
    """A worker's exit status in words (its shell says 128 + N for signal N)."""
    number = -code if code < 0 else code - 128 if code > 128 else 0
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"exited with status {code}"
    why = " (as the system does when memory runs out)" if name == "SIGKILL" else ""
    return f"was killed by {name}{why}"
