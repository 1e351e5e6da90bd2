"""A local multi-process run (--direct_running_mode=multi_processing) prints what a run in
one process prints: memgen's progress lines, then its summary or its one-line error.

Beam's worker processes printed ~45 INFO lines a run, each failed bundle's traceback
(~380 lines when storage failed, before the one-line error) and, on Ctrl-C, tracebacks
of the worker processes and of the runner's threads (memgen.pipelines.worker).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memgen.pipelines.interrupts import _descendants
from shardkit import jpeg, sample, write_tar

MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    for s in range(3):
        write_tar(folder / f"shard-{s}.tar", [sample(f"s{s}k{i}", jpeg(10 * s + i)) for i in range(4)])
    return folder


def memorize(shards: Path, memory: Path, *flags: str, hook: str = "", **popen) -> subprocess.Popen:
    """`memgen memorize` in a new process group; `hook`: code every process of the run (the
    command and its workers) runs at start-up, as sitecustomize."""
    env = dict(os.environ)
    if hook:
        folder = memory.parent / f"hook-{memory.name}"
        folder.mkdir()
        (folder / "sitecustomize.py").write_text(hook)
        env["PYTHONPATH"] = os.pathsep.join([str(folder), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "memgen.pipelines.cli", "memorize", str(shards / "*.tar"),
                             "--memory", str(memory), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True, **popen)


def wait_for(path: Path, failure: str) -> None:
    """Until a hook creates `path` (2 minutes at most)."""
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), failure


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@pytest.mark.parametrize("runner", ["FnApiRunner", "DirectRunner"])
def test_workers_print_only_memgens_progress_lines(shards, tmp_path, runner):
    """DirectRunner, which runs the pipeline on FnApiRunner here (after trying to download
    Prism), bypassed memgen's workers."""
    pids = tmp_path / "pids"
    hook = f"import os\nwith open({str(pids)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
    code, out, err = finish(memorize(shards, tmp_path / "one", hook=""))
    assert code == 0
    code, out_multi, err_multi = finish(memorize(shards, tmp_path / "multi", *MULTI_PROCESS,
                                                 f"--runner={runner}", hook=hook))
    assert code == 0
    assert len(set(pids.read_text().split())) >= 3  # the command and two worker processes
    assert sorted(err_multi.splitlines()) == sorted(err.splitlines())
    assert [line.split()[:3] for line in err.splitlines()] == [["read", "shard", f"{i}/3"] for i in (1, 2, 3)]
    assert out_multi.splitlines()[:3] == out.splitlines()[:3]  # the summary (its time aside)


def test_failing_storage_in_a_worker_is_one_line(shards, tmp_path):
    hook = ("import memgen.materialize\n"
            "def fails(shard, config):\n    raise OSError(28, 'No space left on device')\n"
            "memgen.materialize.read_shard = fails\n")
    code, _, err = finish(memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook))
    assert code == 2
    lines = err.splitlines()
    assert lines[-1].startswith("memgen memorize: error: OSError: [Errno 28] No space left on device")
    assert all(line.startswith("read shard ") for line in lines[:-1]), err


def test_ctrl_c_of_a_multi_process_run_is_one_line(shards, tmp_path):
    started = tmp_path / "started"
    hook = ("import pathlib, time, memgen.materialize\n"
            "def slow(shard, config):\n"
            f"    pathlib.Path({str(started)!r}).touch()\n"
            "    time.sleep(120)\n"
            "memgen.materialize.read_shard = slow\n")
    process = memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook)
    wait_for(started, "no worker reached the write stage")
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    code, _, err = finish(process)
    assert code == 130
    lines = err.splitlines()
    assert lines[-1] == "memgen memorize: interrupted; the same command finishes the run"
    assert all(line.startswith("read shard ") for line in lines[:-1]), err


WORKERS_ONLY = 'import os\nif "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:  # in worker processes only\n'


def test_a_worker_killed_mid_run_is_one_line(shards, tmp_path):
    """The system's out-of-memory killer, a crash: 300 lines of the runner's threads' tracebacks,
    the exit status garbled among them, and "RuntimeError: Channel closed prematurely"."""
    hook = WORKERS_ONLY + ("    import memgen.materialize\n"
                           "    memgen.materialize.read_shard = lambda shard, c: os.kill(os.getpid(), 9)\n")
    code, _, err = finish(memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook))
    assert code == 1
    lines = err.splitlines()
    assert lines[-1] == ("memgen memorize: error: a worker process was killed by SIGKILL (as the system does "
                         "when memory runs out); the same command finishes the run")
    assert "Traceback" not in err and "Killed" not in lines and len(lines) <= 3 + 3, err  # progress lines
    # (the worker's shell, exec'd away now, said "Killed")


def test_a_worker_killed_before_its_first_bundle_ends_the_run_in_one_line(shards, tmp_path):
    """A worker that ends holding no bundle fails none: the runner waited for it forever."""
    flag = tmp_path / "first-worker"
    hook = WORKERS_ONLY + (f"    try:\n        os.close(os.open({str(flag)!r}, os.O_CREAT | os.O_EXCL))\n"
                           "    except FileExistsError:\n        pass\n"
                           "    else:  # the first worker only, as it starts\n"
                           "        os.kill(os.getpid(), 9)\n")
    code, _, err = finish(memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook))
    assert code == 1 and flag.exists()
    assert err.splitlines()[-1] == ("memgen memorize: error: a worker process was killed by SIGKILL (as the "
                                    "system does when memory runs out); the same command finishes the run")


def test_a_warning_in_a_worker_is_shown_as_in_one_process(shards, tmp_path):
    hook = ("import warnings, memgen.materialize\n"
            "read = memgen.materialize.read_shard\n"
            "def warns(shard, config):\n"
            "    warnings.warn('a warning from the write stage')\n"
            "    return read(shard, config)\n"
            "memgen.materialize.read_shard = warns\n")
    code, _, err = finish(memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook))
    assert code == 0
    said = [line for line in err.splitlines() if "UserWarning: a warning from the write stage" in line]
    assert said and all(line.endswith("UserWarning: a warning from the write stage") for line in said)
    assert "" not in err.splitlines()  # the captured warning's own newline made a blank line


def test_the_workers_take_the_interpreters_warning_options():
    """`python -W error` made warnings errors in one process, not in the workers."""
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c",
                           "from memgen.pipelines.local_runner import WORKER_COMMAND; print(WORKER_COMMAND)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[4:] == ["-Werror::UserWarning", "-m", "memgen.pipelines.worker"]


def test_a_worker_imports_nothing_before_it_can_take_ctrl_c():
    """Beam imported at the top of the worker's module: Ctrl-C while it imported printed the
    import's traceback."""
    done = subprocess.run([sys.executable, "-c", "import sys, memgen.pipelines.worker; print(sorted("
                           "m for m in sys.modules if m.split('.')[0] in ('apache_beam', 'numpy')))"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_ctrl_c_to_the_command_alone_while_workers_start_ends_it(shards, tmp_path):
    """The runner waited for worker processes the signal had not reached: the command hung
    (a second Ctrl-C printed the line and hung still, joining the runner's threads)."""
    process, workers = _workers_starting(shards, tmp_path, 120)
    os.kill(process.pid, signal.SIGINT)
    began = time.monotonic()
    code, _, err = finish(process)
    assert code == 130 and time.monotonic() - began < 60
    assert err.splitlines() == ["memgen memorize: interrupted; the same command finishes the run"]
    time.sleep(1)
    assert workers and not [pid for pid in workers if _running(pid)]


def test_sigterm_ends_a_run_as_ctrl_c_does_workers_too(shards, tmp_path):
    """SIGTERM (`timeout`, `kill`, a scheduler) took its default action: the command died
    silently and left its worker processes running (printing tracebacks later)."""
    started = tmp_path / "started"
    hook = WORKERS_ONLY + ("    import pathlib, time, memgen.readers\n"
                           "    def stuck(shard, config, first_read=False):\n"
                           f"        pathlib.Path({str(started)!r}).touch()\n"
                           "        time.sleep(120)\n"
                           "        yield from ()\n"
                           "    memgen.readers.read_shard = stuck\n")
    process = memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook)
    wait_for(started, "no worker process read a shard")
    workers = _descendants(process.pid)
    os.kill(process.pid, signal.SIGTERM)
    code, _, err = finish(process)
    assert (code, err.splitlines()) == (143, ["memgen memorize: ended by SIGTERM; the same command "
                                              "finishes the run"])
    _ended(workers)


def test_workers_end_with_a_command_killed_while_they_start(shards, tmp_path):
    """SIGKILL, which the command cannot catch, left workers that were starting waiting a
    minute for it, then printing tracebacks long after it ended."""
    process, workers = _workers_starting(shards, tmp_path, 3)
    os.kill(process.pid, signal.SIGKILL)
    _ended(workers, within=15)  # before the command is reaped: a parent may take its time
    finish(process)


def _workers_starting(shards: Path, tmp_path: Path, seconds: float) -> tuple[subprocess.Popen, list[int]]:
    """A multi-process memorize whose worker processes wait `seconds` as they start, once one
    does; and the processes it started."""
    started = tmp_path / "started"
    hook = WORKERS_ONLY + (f"    import pathlib, time\n    pathlib.Path({str(started)!r}).touch()\n"
                           f"    time.sleep({seconds})\n")
    process = memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook)
    wait_for(started, "no worker process started")
    return process, _descendants(process.pid)


def _ended(workers: list[int], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while [pid for pid in workers if _running(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not [pid for pid in workers if _running(pid)]


def _running(pid: int) -> bool:
    """Alive, not a zombie (an orphan's exit status waits for a parent that reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_command_gives_back_the_signal_handler_and_thread_hook(tmp_path):
    """They stayed the command's: a program that called main() had every later Ctrl-C turn
    its logging off and end it, and its own child processes, 15 s later."""
    from memgen.pipelines.cli import main

    before = signal.getsignal(signal.SIGINT), threading.excepthook
    assert main(["sample", "--memory", str(tmp_path / "none"), "--n", "1", "--out", str(tmp_path / "s")]) == 2
    assert (signal.getsignal(signal.SIGINT), threading.excepthook) == before
    assert logging.root.manager.disable == logging.NOTSET


def test_the_local_runner_drops_each_bundles_output_buffer():
    """The SDK harness kept every stage's last output stream (a C buffer of up to 16 MB) until
    the run ended: about half of memorize's peak RSS per record (benchmarks/README.md)."""
    import apache_beam as beam
    from apache_beam.runners.worker.bundle_processor import DataOutputOperation

    from memgen.pipelines.local_runner import LocalRunner

    with beam.Pipeline(runner=LocalRunner()) as p:
        _ = p | beam.Create(range(10)) | beam.Map(lambda x: x * 2)
    assert getattr(DataOutputOperation.finish, "releases_stream", False)
