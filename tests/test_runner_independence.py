"""Runner independence: the same content whatever the runner and worker count.

memorize -> sample -> evaluate runs three times on the same shards: in-process (FnApiRunner),
under the local multi-process runner (FnApiRunner over the Fn API with --direct_num_workers=2
--direct_running_mode=multi_processing, so stages run in separate worker processes), and as
Flink and Spark get a pipeline: PortableRunner hands it, as Beam's runner API protos, to a
job service (Beam's own, in this process: --job_endpoint=embed), whose SDK harness runs it
over the Fn API (--environment_type=LOOPBACK).
Every file of the memory and of the sample must be byte-identical, and so must the
manifests and report.json once their timestamps and own locations are removed. Runners
that submit the pipeline elsewhere fail in one line when they cannot, and end without a
summary when they do.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apache_beam.runners.portability.portable_runner import PortableRunner
from apache_beam.runners.runner import PipelineResult, PipelineState

from memgen.outputs import MARKER
from memgen.pipelines.cli import main
from memgen.pipelines.run import job_server_answers
from shardkit import jpeg, sample, write_tar

MULTI_PROCESS = ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]  # no JVM
TIMING = ("started_at", "finished_at", "seconds")
DATAFLOW = ["--runner=DataflowRunner", "--project=memgen-test", "--region=europe-west4",
            "--temp_location=gs://memgen-test-bucket/tmp"]


def write_corpus(folder: Path) -> Path:
    """5 shards; copies span shards so dedup has to gather across workers."""
    folder.mkdir()
    for s in range(5):
        samples = [sample(f"s{s}k{i}", jpeg(10 * s + i), f"shard {s} item {i}") for i in range(6)]
        samples.append(sample(f"s{s}dup", jpeg(10 * ((s + 1) % 5))))  # exact copy, next shard's
        samples.append(sample(f"s{s}near", jpeg(10 * ((s + 2) % 5) + 1, quality=55)))  # other bytes
        if s == 2:
            samples.append(sample("s2bad", b"\x89PNG not really"))  # a reject
        write_tar(folder / f"shard-{s:03d}.tar", samples)
    return folder


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def without_timing(manifest_bytes: bytes) -> dict:
    manifest = json.loads(manifest_bytes)
    return {k: v for k, v in manifest.items() if k not in TIMING}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "shards")


def run_chain(corpus: Path, root: Path, runner_flags: list[str]) -> tuple[Path, Path, Path]:
    """memorize, sample and evaluate under the given runner flags; returns (memory, sample, report)."""
    memory, sample_dir, report = root / "memory", root / "sample", root / "report"
    assert main(["memorize", str(corpus / "*.tar"), "--memory", str(memory), *runner_flags]) == 0
    assert main(["sample", "--memory", str(memory), "--n", "12", "--seed", "7", "--weighted",
                 "--out", str(sample_dir), *runner_flags]) == 0
    assert main(["evaluate", "--memory", str(memory), "--sample", str(sample_dir), "--reference",
                 str(corpus / "shard-00[01].tar"), "--classifier", "caption", "--out", str(report),
                 *runner_flags]) == 0
    return memory, sample_dir, report


def report_without_timing_and_locations(report: Path) -> dict:
    content = json.loads((report / "report.json").read_text())
    inputs = content["inputs"]
    assert inputs.pop("sample_memory") == inputs["memory"]  # the sample was drawn from --memory
    for key in ("memory", "sample"):  # the runs it read, each named by its own manifest
        manifest = (report.parent / key / "manifest.json").read_bytes()
        assert inputs["digests"].pop(key) == hashlib.sha256(manifest).hexdigest()
    for key in ("started_at", "finished_at", "memory", "sample"):
        inputs.pop(key)
    return content


def assert_same_content(a: Path, b: Path, parquet: set[str]) -> dict:
    """Every file byte-identical except manifest.json, equal without timing and own paths, and
    the marker, which names its run."""
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    assert fa.pop(MARKER).split()[0] == fb.pop(MARKER).split()[0]
    assert {name.split("/")[0] for name in fa if name.endswith(".parquet")} == parquet
    for name in fa:
        if name != "manifest.json":
            assert fa[name] == fb[name], f"{a.name}/{name} differs between runners"
    ma, mb = without_timing(fa["manifest.json"]), without_timing(fb["manifest.json"])
    for key in ("memory", "out"):  # the run's own locations
        assert ma.pop(key, None) in (None, str(a.parent / "memory"), str(a))
        assert mb.pop(key, None) in (None, str(b.parent / "memory"), str(b))
    for m, root in ((ma, a), (mb, b)):  # a sample names the memory run it was drawn from
        if m.get("job") == "sample":
            memory_manifest = (root.parent / "memory" / "manifest.json").read_bytes()
            assert m.pop("memory_manifest_sha256") == hashlib.sha256(memory_manifest).hexdigest()
    assert ma == mb
    return ma


def test_memorize_sample_and_evaluate_give_the_same_in_process_multi_process_and_portable(corpus, tmp_path,
                                                                                       capfd):
    single = run_chain(corpus, tmp_path / "single", [])
    printed = capfd.readouterr().err
    multi = run_chain(corpus, tmp_path / "multi", MULTI_PROCESS)
    # the worker processes print memgen's progress lines, as one process does (and nothing else)
    assert sorted(capfd.readouterr().err.splitlines()) == sorted(printed.splitlines())
    portable = run_chain(corpus, tmp_path / "portable", PORTABLE)

    for other in (multi, portable):
        memory = assert_same_content(single[0], other[0], {"images", "duplicates", "rejects"})
        sample = assert_same_content(single[1], other[1], {"index.parquet"})
        # every number, the Fréchet distances too (their moments are exact sums: memgen.stages.moments)
        report = report_without_timing_and_locations(single[2])
        assert report == report_without_timing_and_locations(other[2])
    assert len(list((single[0] / "images").glob("part-*.parquet"))) == 5
    counts = memory["counts"]
    assert (counts["images"], counts["duplicates_exact"], counts["duplicates_near"], counts["rejects"]) \
        == (30, 5, 5, 1)
    assert any(single[1].glob("images/*.tar")) and sample["mode"] == "weighted"
    spaces = {row["space"] for row in report["distances"]["rows"] if row["fd"] is not None}
    assert {"phash", "thumbnail", "colour"} <= spaces


@pytest.mark.parametrize("dry_run", [["--dry_run"], []])
def test_what_dataflow_would_reject_is_one_line_in_a_dry_run_and_a_real_one(dry_run, capsys):
    """A real run skipped the runner's own checks: Beam's traceback, exit 1 (the dry run said it)."""
    argv = ["memorize", "s3://inputs/shards/*.tar", "--memory", "s3://memories/m", *dry_run,
            "--runner=DataflowRunner", "--project=memgen-test", "--region=europe-west4",
            "--temp_location=/not/a/gcs/path"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "temp_location" in err[0] and err[0].startswith("memgen memorize: error:")


def test_what_dataflow_would_reject_is_one_line_on_the_terminal_too():
    """Beam logged two WARNINGs (Invalid GCS path, Unable to create default GCS bucket)
    before the error that says the same."""
    done = subprocess.run([sys.executable, "-m", "memgen.pipelines.cli", "memorize", "s3://inputs/x.tar",
                           "--memory", "s3://memories/m", *DATAFLOW[:3], "--temp_location=/not/a/gcs/path"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("memgen memorize: error: Invalid GCS path")


@pytest.mark.parametrize("dry_run", [["--dry_run"], []])
def test_a_local_path_with_dataflow_is_refused(corpus, tmp_path, dry_run, capsys):
    """Dataflow's workers would list, read and write their own disks, and the run end without
    a manifest where the launcher looks (a TypeError, exit 1)."""
    assert main(["memorize", str(corpus / "*.tar"), "--memory", "s3://memories/m", *dry_run, *DATAFLOW]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "INPUT" in err[0] and "is a local path" in err[0]
    assert main(["memorize", "s3://inputs/x.tar", "--memory", f"file://{tmp_path}/m", *DATAFLOW]) == 2
    assert "--memory file://" in capsys.readouterr().err
    dataflow = ["--runner=dataflow", *DATAFLOW[1:]]  # Beam's short name
    assert main(["memorize", "s3://inputs/x.tar", "--memory", str(tmp_path / "m"), *dry_run, *dataflow]) == 2
    assert "is a local path" in capsys.readouterr().err


def test_a_runner_that_cannot_start_is_one_line_and_exit_2(corpus, tmp_path, capsys):
    """PortableRunner without a job endpoint (as Flink or Spark without their job server, or
    Prism offline): Beam's traceback, exit 1."""
    assert main(["memorize", str(corpus / "*.tar"), "--memory", str(tmp_path / "m"),
                 "--runner=PortableRunner"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PortableRunner could not start the pipeline: NotImplementedError" in err[0]


def test_a_job_endpoint_that_takes_no_connection_is_one_line_at_once(corpus, tmp_path, capsys):
    """A Flink or Spark job server not started: Beam waited --job_server_timeout (300 s) for
    it, then wrote a traceback; the output folder is not claimed. One that listens passes."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again: nothing listens there
    memory = tmp_path / "m"
    started = time.monotonic()
    assert main(["memorize", str(corpus / "*.tar"), "--memory", str(memory), "--runner=PortableRunner",
                 f"--job_endpoint=localhost:{port}"]) == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--job_endpoint localhost:{port}: no job server takes connections" in err[0]
    assert not memory.exists()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        job_server_answers(f"127.0.0.1:{listening.getsockname()[1]}")
    for beams_to_judge in (None, "embed", "dns:///localhost:1"):
        job_server_answers(beams_to_judge)


class _NoJob(PipelineResult):
    def wait_until_finish(self, duration=None):
        return self.state  # DataflowPipelineResult's, without a job: at once


class TemplateOnly(PortableRunner):
    """What DataflowRunner does in a Flex Template's launch (the launcher passes
    --template_location): writes the job there and returns a result without a job, DONE."""

    def run_pipeline(self, pipeline, options):
        return _NoJob(PipelineState.DONE)


class SubmitOnly(PortableRunner):
    """A runner that returns once the job is submitted, before it ends."""

    def run_pipeline(self, pipeline, options):
        return _NoJob(PipelineState.RUNNING)


@pytest.mark.parametrize(("runner", "said"), [
    ("TemplateOnly", "job written to gs://t/job_object"),
    ("SubmitOnly", "pipeline submitted, state RUNNING"),
])
def test_a_pipeline_submitted_and_not_run_here_ends_without_a_summary(corpus, tmp_path, capsys, runner, said):
    """The command read the manifest the run had not written: TypeError, exit 1, so a Flex
    Template's launcher failed every launch."""
    memory = tmp_path / "m"
    flags = [f"--runner={__name__}.{runner}"]
    flags += ["--template_location=gs://t/job_object"] if runner == "TemplateOnly" else []
    assert main(["memorize", str(corpus / "*.tar"), "--memory", str(memory), *flags]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"{runner}: {said}; --memory {memory} is finished when its job is"
    assert not (memory / "manifest.json").exists()
