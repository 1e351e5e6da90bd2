"""The `memgen` command line: one subcommand per job."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from functools import partial

from apache_beam.options.pipeline_options import PipelineOptions

from memgen.memory import MemoryDirError, join, manifests_held, memory_claim, prepare_output, read_manifest
from memgen.outputs import OutputDirError
from memgen.pipelines import usage
from memgen.pipelines.errors import UsageError
from memgen.pipelines.failures import behind, storage_error, storage_line, without_stage
from memgen.pipelines.interrupts import Watch, end_workers
from memgen.pipelines.logs import log_progress
from memgen.pipelines.memorize import MemorizeConfig, MemorizeOptions, build
from memgen.pipelines.options import check_urls, parse_job
from memgen.pipelines.run import execute, is_dry, nothing_to_run, writable
from memgen.shards import NoInputError, discover, listing_digest
from memgen.summary import memorize_summary, no_image_kept


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
    writable(flag, url)  # before the output is read: a silent http server held this for minutes
    try:
        found = finished()
        return found is not None and all(found.get(key) == value for key, value in recorded().items())
    except Exception:  # noqa: BLE001 - an unusable URL, a damaged manifest: execute() says which
        return False


def _run_unless_made(flag: str, url: str, finished: Callable[[], dict | None], recorded: Callable[[], dict],
                     run: Callable[[], bool]) -> bool | None:
    """None when `url` holds this same command's finished output (_made_by_this_command), asked
    again when `run()` is refused a finished output: a first try of this command (a
    scheduler's) may have finished it while this one listed its inputs. Else whether `run()`
    ran."""
    made = partial(_made_by_this_command, flag, url, finished, recorded)
    if made():
        return None
    try:
        return run()
    except MemoryDirError:
        if made():
            return None
        raise


def _not_made_again(flag: str, url: str, why: str, hint: str = "") -> UsageError:
    """The refusal of this same command's finished output, which may be out of date (inputs
    listed anew, a memory rebuilt at the same path): not another's (it advised deleting it)."""
    return UsageError(f"{flag} {url} already holds the finished output of this same command; it is not made "
                      f"again ({why}): choose another {flag}, or delete it to make it anew{hint}")


def _new_shards_hint(why: str, memory: str) -> str:
    """For a memory whose inputs list otherwise now (a night's new shards beside the old):
    --known keeps the new images without reading the old shards again."""
    if not why.startswith("its inputs list"):
        return ""
    return f"; to keep only what it does not hold, memorize into another --memory with --known {memory}"


# reject reasons that a rerun may not give: a shard missing or not answering then, or changed
# between its two reads
RERUN_MAY_READ = ("missing", "unreadable", "changed_during_run", "representative_changed")


def _nothing_to_run(command: str, flag: str, url: str, options: PipelineOptions, over: str = "") -> bool:
    """Says that `url` holds this command's finished output, once a Flex launcher has its empty
    job; whether the command goes on (not a dry run: it prints the summary)."""
    dry = is_dry(options)
    if not dry:
        nothing_to_run(options)
    print(f"{'dry run: ' if dry else ''}memgen {command}: {flag} {url} already holds the finished output of "
          f"this command{over}: nothing to run", file=sys.stderr)
    return not dry


def _out_of_date(manifest: dict, config: MemorizeConfig, options: PipelineOptions) -> str | None:
    """Why the same command's finished memory may not be what a run now would write (None: it
    is): it predates listing digests, it holds rejects a run now may read, or its inputs list
    otherwise now (a glob or folder is listed anew, a file rewritten under its name; asked
    last, as it costs a listing)."""
    if "listing_digest" not in manifest:
        return "it was written before memorize recorded its listing"
    unread = sum(manifest["counts"]["rejects_by_reason"].get(why, 0) for why in RERUN_MAY_READ)
    if unread:
        return f"{unread} of its rejects are {' or '.join(RERUN_MAY_READ)}: a run now may read them"
    if manifest.get("known_digests", []) != config.known_digests():
        return "a --known memory was made anew since"
    check_urls(config.urls(), options)
    listed = discover(list(config.inputs), config.reader.http_timeout)
    if manifest["listing_digest"] != listing_digest(listed):
        return (f"its inputs list {len(listed)} shards now, {manifest['shards']} then, or others, or other "
                "captions or metadata, or files written anew since")
    return None


# report.json's inputs.digests, by the flag that names each input
FLAGS_OF_DIGESTS = {"memory": "--memory", "sample": "--sample", "references": "--reference",
                    "calibration": "--calibration", "model": "--classifier"}


def _report_out_of_date(report: dict, digests: Callable[[], dict[str, str | None]]) -> str | None:
    """Why the same command's finished report may not be what a run now would write (None:
    it is): it predates input digests, some of its images could not be read then (a run now
    may read them), or what its inputs hold differs now (asked last, as `digests()` lists
    the references)."""
    if report["inputs"].get("digests") is None:
        return "it was written before evaluate recorded its inputs' digests"
    failed = [report["concept"]["failures"]["by_type"], *report["distances"]["failures"].values()]
    unread = sum(by_type.get(why, 0) for by_type in failed for why in RERUN_MAY_READ)
    if unread:
        return f"{unread} of its images were {' or '.join(RERUN_MAY_READ)}: a run now may read them"
    return _inputs_differ(report, digests)


def _inputs_differ(report: dict, digests: Callable[[], dict[str, str | None]]) -> str | None:
    """What the report read that holds otherwise now (a memory or sample made anew at the same
    path, references listing otherwise, another calibration list or model file); None when
    each is as then, or the report did not record them."""
    recorded = report["inputs"].get("digests")
    if recorded is None:
        return None
    changed = [FLAGS_OF_DIGESTS[name] for name, digest in digests().items() if recorded.get(name) != digest]
    return f"what it read differs now: {', '.join(changed)}" if changed else None


def memorize(argv: list[str]) -> dict | None:
    """Run memorize; returns the manifest (None for a dry run)."""
    options = parse_job("memgen memorize", "Fingerprint, deduplicate and store web image shards.",
                        MemorizeOptions, argv, positional="INPUT", positional_flag="input")
    config = MemorizeConfig.from_options(options)
    memory = config.memory
    ran = _run_unless_made(
        "--memory", memory, partial(read_manifest, memory), config.recorded,
        lambda: execute(options, config.urls(), memory_claim(memory),
                        lambda pipeline, claim: build(pipeline, config, claim), prepare_output))
    if ran is None:
        manifest = read_manifest(memory)
        why = _out_of_date(manifest, config, options)
        if why:
            raise _not_made_again("--memory", memory, why, _new_shards_hint(why, memory))
        same = f" over the same {manifest['shards']} shards"
        if not _nothing_to_run("memorize", "--memory", memory, options, same):
            return None
    elif not ran:
        return None
    manifest = _finished(read_manifest(memory), "--memory", memory)
    print(memorize_summary(manifest))
    why = no_image_kept(memory, manifest)
    if why:
        print(why)
    return manifest


def sample(argv: list[str]) -> dict | None:
    """Run sample; returns the sample's manifest (None for a dry run)."""
    from memgen.pipelines import sample as job
    from memgen.sample_output import prepare_sample_output, sample_claim, sample_summary

    options = parse_job("memgen sample", "Draw a seeded, reproducible sample of a memory's images.",
                        job.SampleOptions, argv)
    config = job.SampleConfig.from_options(options)
    # a sample is pinned by its memory's manifest digest: the same command draws the same sample
    ran = _run_unless_made(
        "--out", config.out, partial(read_manifest, config.out), config.recorded,
        lambda: execute(options, config.urls(), sample_claim(config.out),
                        lambda pipeline, claim: job.build(pipeline, config, claim), prepare_sample_output))
    if ran is None:
        if not _nothing_to_run("sample", "--out", config.out, options):
            return None
    elif not ran:
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
        REPORT_HTML,
        concept_summary,
        copying_summary,
        finished_inputs,
        page_missing,
        prepare_report_output,
        read_report,
        report_claim,
        sets_not_compared,
    )

    options = parse_job("memgen evaluate", "Measure a memory: concept fraction with CIs, distances "
                        "between image sets, copying (report.json, report.html).", job.EvaluateOptions, argv)
    config = job.EvaluateConfig.from_options(options)
    check_urls(config.urls(), options)  # before --out is read: what it raises names its flag
    def page_or_run() -> bool:
        if not page_missing(config.out, config.inputs()):
            return execute(options, config.urls(), report_claim(config.out),
                           lambda pipeline, claim: job.build(pipeline, config, claim), prepare_report_output)
        # killed after report.json: only the page is left; its images unread then stay unread
        # in it: the page shows report.json as it is
        why = _inputs_differ(read_report(config.out), config.digests)
        if why:  # the page would show what the inputs hold now beside another report.json
            raise UsageError(f"--out {config.out} holds this command's report.json without its page, but "
                             f"{why}; delete it to make it anew")
        if is_dry(options):
            print(f"dry run: {config.out} holds this report but not its page; a run writes report.html only")
            return False
        logging.getLogger("memgen").info("%s holds this report but not its page: writing it", config.out)
        job.report_page(config).write(config.out, read_report(config.out))
        nothing_to_run(options)
        return True

    ran = _run_unless_made("--out", config.out, partial(finished_inputs, config.out), config.inputs,
                           page_or_run)
    if ran is None:
        why = _report_out_of_date(read_report(config.out), config.digests)
        if why:
            raise _not_made_again("--out", config.out, why)
        if not _nothing_to_run("evaluate", "--out", config.out, options):
            return None
    elif not ran:
        return None
    report = read_report(config.out)
    for line in sets_not_compared(report):
        logging.getLogger("memgen").warning("%s", line)
    print(concept_summary(report["concept"]))
    for line in copying_summary(report["copying"]):
        print(line)
    print(f"report: {join(config.out, REPORT)}")
    print(f"report.html: {join(config.out, REPORT_HTML)}")
    return report


COMMANDS = {"memorize": memorize, "sample": sample, "evaluate": evaluate, "demo": demo}
assert tuple(COMMANDS) == usage.COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage.answered(argv)) is not None:
        return code
    command, rest = argv[0], argv[1:]
    log_progress()
    with Watch(command) as watch, _reader_may_leave():
        return _run(command, rest, watch)


class StdoutError(Exception):
    """Standard output failed (not a reader that went away): the command's outputs are not it."""


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
        except OSError as e:  # `> file` on a full disk: said as the output's storage failing
            raise StdoutError(f"standard output cannot be written: {e.strerror or e} (what the run "
                              "wrote is whole)") from None

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
        with manifests_held():
            COMMANDS[command](rest)
        sys.stdout.flush()  # what it printed fails here when stdout is a file on a full disk
    except (UsageError, NoInputError, MemoryDirError, OutputDirError, StdoutError) as e:
        # (a damaged memory part found mid-run: the runner named its stage)
        print(f"memgen {command}: error: {without_stage(e)}", file=sys.stderr)
        return 2
    except (Exception, KeyboardInterrupt) as e:
        failed = behind(e)
        cause = failed.error
        if isinstance(cause, KeyboardInterrupt):
            if watch.interrupted:  # a signal: the worker processes may not have had it
                end_workers()
            print(watch.interrupted_line(), file=sys.stderr)
            return watch.exit_code
        if watch.worker_ended:
            print(watch.worker_line(), file=sys.stderr)
            return 1
        if isinstance(cause, MemoryDirError):  # what a worker process found damaged (memory.damaged_data)
            print(f"memgen {command}: error: {cause}", file=sys.stderr)
            return 2
        if not storage_error(failed):
            raise  # memgen's own bug: the traceback is what a report needs
        print(f"memgen {command}: error: {storage_line(cause)}"[:1000], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from memgen.pipelines import ended

    sys.exit(ended(main()))
