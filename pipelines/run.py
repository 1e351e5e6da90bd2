"""Running a job's pipeline: the runner chosen and validated, a dry run's listing, the run
itself on this machine or submitted to a service, and its output claimed around it."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState, create_runner

from memgen.outputs import Claim
from memgen.pipelines.errors import UsageError, first_line
from memgen.pipelines.interrupts import outlived_interrupt
from memgen.pipelines.local_runner import LocalRunner
from memgen.pipelines.options import check_urls, runs_as

JOB_SERVER_CONNECT_S = 10  # a job server on the network answers a connection within this
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
    writable(claim.flag, claim.url)
    runner = validated_runner(options)
    prepare(claim, True)  # an output refused before the inputs are listed (a bucket's listing takes long)
    if is_dry(options):
        print(dry_run(runner, options, lambda pipeline: wire(pipeline, claim)))
        return False
    if runs_as(runner, "PortableRunner"):  # before the output is claimed: nothing could run
        job_server_answers(options.view_as(PortableOptions).job_endpoint)
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
        result = _submit(pipeline, runner)
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


def _submit(pipeline: beam.Pipeline, runner: PipelineRunner) -> PipelineResult:
    """The pipeline handed to its service; UsageError when it cannot be (no job server, no
    API, no package, no credentials): nothing ran."""
    try:
        return pipeline.run()
    except Exception as e:  # noqa: BLE001 - whatever the runner raised before anything ran
        raise UsageError(f"{type(runner).__name__} could not start the pipeline: "
                         f"{type(e).__name__}: {first_line(e)}"[:500]) from None


def job_server_answers(endpoint: str | None) -> None:
    """UsageError when a --job_endpoint given as HOST:PORT takes no connection (a Flink or
    Spark job server not started, a mistyped port): Beam would wait --job_server_timeout,
    300 s by default, for it. Other forms (none, embed, a gRPC target) are Beam's to judge."""
    host, _, port = (endpoint or "").rpartition(":")
    if not host or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=JOB_SERVER_CONNECT_S).close()
    except OSError as e:  # refused, unresolvable, unreachable, or no answer in time
        raise UsageError(f"--job_endpoint {endpoint}: no job server takes connections there "
                         f"({type(e).__name__}: {e}); start it, or correct the address") from None


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


def nothing_to_run(options: PipelineOptions) -> None:
    """A command that finds nothing to run (its output finished already: a scheduler's retry)
    still leaves a Flex Template's launcher the job file it reads (--template_location): an
    empty pipeline's, whose job ends at once. Without one the launch fails ("Unable to open
    template file")."""
    if options.view_as(GoogleCloudOptions).template_location:
        runner = validated_runner(options)
        pipeline = beam.Pipeline(runner=runner, options=options)
        _ = pipeline | "NothingToRun" >> beam.Create([])
        _submit(pipeline, runner).wait_until_finish()


def writable(flag: str, url: str) -> None:
    """UsageError for an output that cannot be written: http(s) (a run wrote nothing, then
    ended in a traceback)."""
    if url.startswith(("http://", "https://")):
        raise UsageError(f"{flag} {url}: http(s) cannot be written (use a folder, s3:// or gs://)")


def is_dry(options: PipelineOptions) -> bool:
    """Whether --dry_run was given."""
    return options.view_as(TestOptions).dry_run
