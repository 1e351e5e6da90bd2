"""A local multi-process run (--direct_running_mode=multi_processing) prints what a run in
one process prints: memgen's progress lines, then its summary or its one-line error.

Beam's worker processes printed ~45 INFO lines a run, each failed bundle's traceback
(~380 lines when storage failed, before the one-line error) and, on Ctrl-C, tracebacks
of the worker processes and of the runner's threads (memgen.pipelines.worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def test_workers_print_only_memgens_progress_lines(shards, tmp_path):
    pids = tmp_path / "pids"
    hook = f"import os\nwith open({str(pids)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
    code, out, err = finish(memorize(shards, tmp_path / "one", hook=""))
    assert code == 0
    code, out_multi, err_multi = finish(memorize(shards, tmp_path / "multi", *MULTI_PROCESS, hook=hook))
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
    assert lines[-1] == "memgen memorize: error: OSError: [Errno 28] No space left on device"
    assert all(line.startswith("read shard ") for line in lines[:-1]), err


def test_ctrl_c_of_a_multi_process_run_is_one_line(shards, tmp_path):
    started = tmp_path / "started"
    hook = ("import pathlib, time, memgen.materialize\n"
            "def slow(shard, config):\n"
            f"    pathlib.Path({str(started)!r}).touch()\n"
            "    time.sleep(120)\n"
            "memgen.materialize.read_shard = slow\n")
    process = memorize(shards, tmp_path / "m", *MULTI_PROCESS, hook=hook)
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), "no worker reached the write stage"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    code, _, err = finish(process)
    assert code == 130
    lines = err.splitlines()
    assert lines[-1] == "memgen memorize: interrupted; the same command finishes the run"
    assert all(line.startswith("read shard ") for line in lines[:-1]), err
