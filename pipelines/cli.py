"""The `memgen` command line: one subcommand per job."""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner, PipelineState, create_runner

from memgen.memory import MemoryDirError, join, memory_claim, prepare_output, read_manifest
from memgen.outputs import STORAGE_CLIENTS, Claim, OutputDirError, from_storage_client
from memgen.pipelines.errors import UsageError
from memgen.pipelines.interrupts import Watch, end_workers, outlived_interrupt
from memgen.pipelines.local_runner import LocalRunner
from memgen.pipelines.logs import log_progress
from memgen.pipelines.memorize import MemorizeConfig, MemorizeOptions, build
from memgen.pipelines.options import check_urls, parse_job, runs_as
from memgen.shards import NoInputError
from memgen.summary import memorize_summary

USAGE = """usage: memgen COMMAND [options]

commands:
  memorize   web image shards -> deduplicated Parquet memory
  sample     memory -> reproducible sample (webdataset, parquet or folder) + contact sheet
  evaluate   memory (+ sample, reference) -> report.json and report.html: cat fraction
             with 95% confidence intervals, distances between image sets, copying
  demo       build a small web-like corpus from bundled photos and run the jobs on it

`memgen COMMAND --help` describes each command."""


DRY_RUN_DEPTH = 2  # job stages and their named steps; deeper levels are Beam's own expansions


def execute(options: PipelineOptions, urls: Iterable[tuple[str, str]], claim: Claim,
            wire: Callable[[beam.Pipeline, Claim], None], prepare: Callable[[Claim, bool], None]) -> bool:
    """Run the pipeline that `wire` builds; with --dry_run only build, validate and print it.

    `urls`: the job's (flag, URL) pairs, checked first (check_urls), then the runner's
    options. `prepare(claim, check_only)` checks the output folder before the pipeline is
    built (which lists the inputs), and claims it once it is, so a mistake found while
    building it (no input, no memory) writes nothing; a dry run only checks. OutputDirError
    when another run took the folder over meanwhile. Returns whether it ran.
    """
    check_urls(urls, options)
    _writable(claim.flag, claim.url)
    runner = validated_runner(options)
    prepare(claim, True)  # an output refused before the inputs are listed (a bucket's listing takes long)
    if _dry(options):
        print(dry_run(runner, options, lambda pipeline: wire(pipeline, claim)))
        return False
    pipeline = beam.Pipeline(runner=runner, options=options)
    wire(pipeline, claim)
    prepare(claim, False)
    if not _submits(runner):  # runs here: what it raises is the run's (main judges it)
        try:
            pipeline.run().wait_until_finish()
        except KeyboardInterrupt:
            if not claim.finished():
                raise
            outlived_interrupt()  # Ctrl-C as the runner shut its workers down, after the result
        except Exception:
            if claim.taken_over():  # the run failed on what the other run cleared: say that
                claim.check()
            raise
    else:
        try:
            result = pipeline.run()
        except Exception as e:  # noqa: BLE001 - nothing ran: no job server, no API, no package
            raise UsageError(f"{type(runner).__name__} could not start the pipeline: "
                             f"{type(e).__name__}: {_first_line(e)}"[:500]) from None
        result.wait_until_finish()
        # A Flex Template's launcher passes --template_location: DataflowRunner writes the job
        # there for the service to start, and returns (state DONE, no job)
        template = options.view_as(GoogleCloudOptions).template_location
        if template or result.state != PipelineState.DONE:
            done = f"job written to {template}" if template else f"pipeline submitted, state {result.state}"
            print(f"{type(runner).__name__}: {done}; {claim.flag} {claim.url} is finished when its job is")
            return False
    claim.check()
    return True


def _first_line(error: BaseException) -> str:
    """An error's first line that says something (hdfs's is 7 lines, a job server's more)."""
    return next((line for line in str(error).splitlines() if line.strip()), "")


def _where(error: BaseException) -> str:
    """A full disk may be the local one where files for an object store are staged (TMPDIR):
    the error names no path."""
    if getattr(error, "errno", None) != errno.ENOSPC:
        return ""
    return (f" (the output's disk, or {tempfile.gettempdir()}, where files bound for an object store are "
            "staged: TMPDIR moves them)")


def _submits(runner: PipelineRunner) -> bool:
    """Whether the runner hands the pipeline to a service (Dataflow, a Flink, Spark or Prism
    job server) rather than running it in this process."""
    return runs_as(runner, "DataflowRunner", "PortableRunner")


def validated_runner(options: PipelineOptions) -> PipelineRunner:
    """The chosen runner, after the checks it makes before it submits anything
    (DataflowRunner: project, region, gs:// locations; without contacting Google Cloud, given
    --temp_location: without one, Beam itself would look for a default bucket)."""
    runner = create_runner(options.view_as(StandardOptions).runner)
    # FnApiRunner's worker processes, if any, log as the command does; DirectRunner would try
    # to download Prism first, then run the pipeline on FnApiRunner
    if type(runner) is FnApiRunner or runs_as(runner, "SwitchingDirectRunner"):
        runner = LocalRunner()
    with _held_back(logging.getLogger("apache_beam.options.pipeline_options")) as warnings:
        errors = PipelineOptionsValidator(options, runner).validate()
    if errors:  # which Beam warned about first ("Invalid GCS path ..."): the one line says it
        raise UsageError("; ".join(errors))
    for warning in warnings:
        logging.getLogger(warning.name).handle(warning)
    return runner


@contextlib.contextmanager
def _held_back(log: logging.Logger) -> Iterator[list[logging.LogRecord]]:
    """The records `log` gets in the block, held back from its handlers."""
    held: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = held.append
    log.addHandler(handler)
    log.propagate, propagated = False, log.propagate
    try:
        yield held
    finally:
        log.removeHandler(handler)
        log.propagate = propagated


def runner_name(runner: PipelineRunner) -> str:
    """The runner as the command line names it (LocalRunner is FnApiRunner there)."""
    return getattr(runner, "NAME", type(runner).__name__)


def dry_run(runner: PipelineRunner, options: PipelineOptions, wire: Callable[[beam.Pipeline], None]) -> str:
    """The pipeline's stages, as `runner` (validated_runner's) would be given them; it is
    never asked to run."""
    pipeline = beam.Pipeline(runner=runner, options=options)
    wire(pipeline)
    proto = pipeline.to_runner_api()  # serializes every DoFn and coder, as submission would
    transforms = proto.components.transforms
    lines = [f"dry run: {runner_name(runner)}, pipeline built and validated, not run"]

    def walk(ids, depth: int) -> None:
        for transform_id in ids:
            transform = transforms[transform_id]
            lines.append("  " * depth + transform.unique_name.rsplit("/", 1)[-1])
            if depth < DRY_RUN_DEPTH:
                walk(transform.subtransforms, depth + 1)

    for root in proto.root_transform_ids:
        walk(transforms[root].subtransforms, 1)
    return "\n".join(lines)


def _finished(manifest: dict | None, flag: str, url: str) -> dict:
    """The manifest of a run that ended; UsageError when it is not where this machine reads
    (the workers of a remote runner given a local path write their own disks)."""
    if manifest is None:
        raise UsageError(f"{flag} {url}: the run ended, but its manifest.json is not there (a remote "
                         "runner's workers cannot write this machine's disk: give them a bucket)")
    return manifest


def _made_by_this_command(flag: str, url: str, finished: Callable[[], dict | None],
                          recorded: Callable[[], dict]) -> bool:
    """Whether `url` holds the finished output of this same command (`finished()`: what its
    manifest or report records; `recorded()`: of this command): a run killed after it wrote
    it, a scheduler's retry. What cannot be read here is said by the run's own checks."""
    _writable(flag, url)  # before the output is read: a silent http server held this for minutes
    try:
        found = finished()
        return found is not None and all(found.get(key) == value for key, value in recorded().items())
    except Exception:  # noqa: BLE001 - an unusable URL, a damaged manifest: execute() says which
        return False


def _not_made_again(flag: str, url: str) -> UsageError:
    """The refusal of this same command's finished output, which may be out of date (inputs
    listed anew, a memory rebuilt at the same path): not another's (it advised deleting it)."""
    return UsageError(f"{flag} {url} already holds the finished output of this same command; it is not made "
                      f"again (its inputs may have changed since): choose another {flag}, or delete it to "
                      "make it anew")


def _writable(flag: str, url: str) -> None:
    """UsageError for an output that cannot be written: http(s) (a run wrote nothing, then
    ended in a traceback)."""
    if url.startswith(("http://", "https://")):
        raise UsageError(f"{flag} {url}: http(s) cannot be written (use a folder, s3:// or gs://)")


def _dry(options: PipelineOptions) -> bool:
    return options.view_as(TestOptions).dry_run


def memorize(argv: list[str]) -> dict | None:
    """Run memorize; returns the manifest (None for a dry run)."""
    options = parse_job("memgen memorize", "Fingerprint, deduplicate and store web image shards.",
                        MemorizeOptions, argv, positional="INPUT", positional_flag="input")
    config = MemorizeConfig.from_options(options)
    memory = config.memory
    if _made_by_this_command("--memory", memory, partial(read_manifest, memory), config.recorded):
        raise _not_made_again("--memory", memory)
    if not execute(options, config.urls(), memory_claim(memory),
                   lambda pipeline, claim: build(pipeline, config, claim), prepare_output):
        return None
    manifest = _finished(read_manifest(memory), "--memory", memory)
    print(memorize_summary(manifest))
    return manifest


def sample(argv: list[str]) -> dict | None:
    """Run sample; returns the sample's manifest (None for a dry run)."""
    from memgen.pipelines import sample as job
    from memgen.sample_output import prepare_sample_output, sample_claim, sample_summary

    options = parse_job("memgen sample", "Draw a seeded, reproducible sample of a memory's images.",
                        job.SampleOptions, argv)
    config = job.SampleConfig.from_options(options)
    # a sample is pinned by its memory's manifest digest: the same command draws the same sample
    if _made_by_this_command("--out", config.out, partial(read_manifest, config.out), config.recorded):
        print(f"{'dry run: ' if _dry(options) else ''}memgen sample: --out {config.out} already holds the "
              "finished output of this command: nothing to run", file=sys.stderr)
        if _dry(options):
            return None
    elif not execute(options, config.urls(), sample_claim(config.out),
                     lambda pipeline, claim: job.build(pipeline, config, claim), prepare_sample_output):
        return None
    manifest = _finished(read_manifest(config.out), "--out", config.out)
    print(sample_summary(manifest))
    return manifest


def demo(argv: list[str]) -> None:
    from memgen.pipelines.demo import main as demo_main

    demo_main(argv)


def evaluate(argv: list[str]) -> dict | None:
    """Run evaluate; prints a summary and returns the report (None for a dry run)."""
    from memgen.pipelines import evaluate as job
    from memgen.report import (
        REPORT,
        concept_summary,
        finished_inputs,
        page_missing,
        prepare_report_output,
        read_report,
        report_claim,
    )

    options = parse_job("memgen evaluate", "Measure a memory: concept fraction with CIs, distances "
                        "between image sets, copying (report.json, report.html).", job.EvaluateOptions, argv)
    config = job.EvaluateConfig.from_options(options)
    if _made_by_this_command("--out", config.out, partial(finished_inputs, config.out), config.inputs):
        raise _not_made_again("--out", config.out)
    if page_missing(config.out, config.inputs()):  # killed after report.json: only the page is left
        if _dry(options):
            print(f"dry run: {config.out} holds this report but not its page; a run writes report.html only")
            return None
        logging.getLogger("memgen").info("%s holds this report but not its page: writing it", config.out)
    elif not execute(options, config.urls(), report_claim(config.out),
                     lambda pipeline, claim: job.build(pipeline, config, claim), prepare_report_output):
        return None
    report = read_report(config.out)
    print(concept_summary(report["concept"]))
    print(f"report: {join(config.out, REPORT)}")
    print(f"report.html: {job.write_report_html(config, report)}")
    return report


COMMANDS = {"memorize": memorize, "sample": sample, "evaluate": evaluate, "demo": demo}


# What a disk says when it fails during a run (full, read-only, a revoked right). Other
# OSErrors from inside a pipeline, not raised by a storage client, are memgen's (Pillow's
# decode errors are OSErrors): their traceback is shown.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                   errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENETUNREACH,
                   errno.EHOSTUNREACH}
# a frame of a storage client's code in a traceback sent as text
_HTTP_FILES = "fsspec.implementations.http"  # fsspec's own client of http(s) servers
_CLIENT_FILE = re.compile(r"site-packages/(" + "|".join(sorted(STORAGE_CLIENTS))
                          + r"|fsspec/implementations/http\.py)")


class RunError(NamedTuple):
    """What a failed run raised, as main judges it."""

    error: BaseException  # the worker's error a runner re-raised, or what main caught
    in_run: bool  # raised inside a pipeline's worker
    by_client: bool  # raised in a storage client's code


def _storage_error(failed: RunError) -> bool:
    """Storage refused or could not be reached (no access, no credentials, no network), or
    failed during the run (a full disk, a bucket gone)."""
    e = failed.error
    if from_storage_client(e):  # no credentials, an endpoint that does not answer
        return True
    if failed.by_client and isinstance(e, ValueError):  # fsspec's HTTP file: no Range requests there
        return True
    return isinstance(e, OSError) and (not failed.in_run or failed.by_client or e.errno in _STORAGE_ERRNOS)


def _by_client(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.split(".")[0] in STORAGE_CLIENTS or module == _HTTP_FILES:
            return True
        tb = tb.tb_next
    return False


# How a Beam runner re-raises a worker's error: the error's own type with " [while running
# 'Stage']" added, or a RuntimeError whose text (worker processes send the whole traceback)
# ends "OSError: [Errno 28] ... [while running 'Stage']", maybe after "RuntimeError: "s; a
# class that is not a builtin is named with its module (botocore.exceptions.X).
_WHILE_RUNNING = re.compile(r" \[while running '[^']*'\]$")
_RERAISED = re.compile(r"(?:RuntimeError: )*([A-Za-z_][\w.]*)(?:: (.*))?$")
_ERRNO = re.compile(r"\[Errno (\d+)\] ")


def _behind(e: BaseException) -> RunError:
    """The error a runner's `e` re-raises: `e` itself when it kept its type, else the one it
    was raised in handling (in-process workers), or one made from its text's last line
    (worker processes send only text); `e`, not in a run, when no worker raised it."""
    lines = str(e).strip().splitlines()
    running = _WHILE_RUNNING.search(lines[-1]) if lines else None
    if running is None:
        return RunError(e, False, False)
    named = _RERAISED.match(lines[-1][:running.start()])
    if type(e) is not RuntimeError or named is None:
        return RunError(e, True, _by_client(e))
    module, _, name = named.group(1).rpartition(".")
    message = named.group(2) or ""
    inner = e.__cause__ or e.__context__
    while inner is not None and type(inner).__name__ != name:  # wrapped more than once
        inner = inner.__cause__ or inner.__context__
    if inner is not None:
        return RunError(inner, True, _by_client(inner))
    by_client = bool(_CLIENT_FILE.search(str(e)))  # the traceback in the text
    builtin = getattr(builtins, name, None) if not module else None
    if isinstance(builtin, type) and issubclass(builtin, OSError):
        code = _ERRNO.match(message)
        sent = builtin(int(code.group(1)), message[code.end():]) if code else builtin(message)
        return RunError(sent, True, by_client)
    if builtin is KeyboardInterrupt:
        return RunError(KeyboardInterrupt(), True, False)
    if module.split(".")[0] in STORAGE_CLIENTS:  # its class is not importable here, its text is
        return RunError(type(name, (Exception,), {"__module__": module})(message), True, True)
    return RunError(e, True, by_client)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)  # no command is a mistake: stderr, exit 2
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"memgen: error: unknown command {command!r} (try memgen --help)", file=sys.stderr)
        return 2
    log_progress()
    with Watch(command) as watch, _reader_may_leave():
        return _run(command, rest, watch)


class _Stdout:
    """sys.stdout while a command runs: a reader that went away (`memgen ... | head -1`) does
    not end the run, whose outputs are what it is for (it ended with "error: BrokenPipeError",
    exit 2, after a memory was written whole, and the demo halfway): what is left to print goes
    to /dev/null."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with self._left():
            return self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with self._left():
            self._stream.flush()

    @contextlib.contextmanager
    def _left(self):
        try:
            yield
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())  # Python's own advice

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _reader_may_leave():
    stream = sys.stdout
    if not hasattr(stream, "fileno") or isinstance(stream, _Stdout):
        yield
        return
    try:
        stream.fileno()
    except (OSError, ValueError):  # not a file (pytest's capture): nothing to guard
        yield
        return
    sys.stdout = _Stdout(stream)
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout = stream


def _run(command: str, rest: list[str], watch: Watch) -> int:
    try:
        COMMANDS[command](rest)
    except (UsageError, NoInputError, MemoryDirError, OutputDirError) as e:
        print(f"memgen {command}: error: {e}", file=sys.stderr)
        return 2
    except (Exception, KeyboardInterrupt) as e:
        failed = _behind(e)
        cause = failed.error
        if isinstance(cause, KeyboardInterrupt):
            if watch.interrupted:  # a signal: the worker processes may not have had it
                end_workers()
            print(watch.interrupted_line(), file=sys.stderr)
            return watch.exit_code
        if watch.worker_ended:
            print(watch.worker_line(), file=sys.stderr)
            return 1
        if not _storage_error(failed):
            raise  # memgen's own bug: the traceback is what a report needs
        about = "".join(f" ({note})" for note in getattr(cause, "__notes__", ()))  # what it was doing
        said = f"{type(cause).__name__}: {_first_line(cause)}{about}{_where(cause)}"
        print(f"memgen {command}: error: {said}"[:1000], file=sys.stderr)
        return 2
    return 0

if __name__ == "__main__":
    from memgen.pipelines import ended

    sys.exit(ended(main()))
