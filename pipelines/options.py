"""Command-line parsing shared by every job: job flags + positionals + Beam flags.

Every job option is a PipelineOptions flag, so the same names work on the command
line, in Flex Templates and in Airflow. All Beam option classes are parsed too, so
a flag that nobody knows is an error instead of being silently dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from typing import NoReturn
from urllib.parse import urlsplit

import fsspec
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
    _BeamArgumentParser,
)
from apache_beam.runners.runner import PipelineRunner, create_runner

from memgen.outputs import OBJECT_STORES
from memgen.pipelines.errors import UsageError
from memgen.records import printable
from memgen.shards import input_folder_holding

LOCAL_RUNNER = "FnApiRunner"  # in-process; Beam's DirectRunner would first try to download Prism
BEAM_EPILOG = (
    "Any other flag goes to Apache Beam, e.g. --runner=DataflowRunner --project=P --region=R "
    "--temp_location=gs://B/tmp, or --direct_num_workers=4 --direct_running_mode=multi_processing. "
    f"Default runner: {LOCAL_RUNNER} (local, in-process, no network)."
)


# --direct_num_workers above this many per core is a mistake, not a speed-up
WORKERS_PER_CORE = 4
DRY_RUN = "--dry_run"  # Beam's own flag (TestOptions): DataflowRunner builds the job, submits nothing
DRY_RUN_HELP = ("build and validate the pipeline for the chosen runner, print its stages, run nothing "
                "(also --dry_run=true|false)")
# fsspec protocols that hold no files of shards (data: is a URL's own bytes; a run's
# inputs and outputs are files and folders)
_NOT_STORAGE = frozenset({"data"})
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


# Beam parses every job's options class with one parser, so a flag that several jobs
# take is declared once, here, and each job adds it with add_shared().
SHARED_FLAGS: dict[str, dict] = {
    "--memory": {"help": "memory directory (local path or fsspec URL): memorize writes it, "
                         "sample and evaluate read it"},
    "--out": {"help": "output directory: the sample (sample), report.json + report.html (evaluate)"},
    "--seed": {"type": int, "default": 0, "help": "seed of every random choice (default 0)"},
}


_FOLDERS = ("--memory", "--sample", "--out")  # the flags that name a job's folder, listed and written


def check_urls(urls: Iterable[tuple[str, str]], options: PipelineOptions) -> None:
    """UsageError for an empty URL, or one whose protocol fsspec does not know or cannot
    open here (gs:// without gcsfs), memory:// for an output or with worker processes, a
    local path with Dataflow: found before the run, not as a worker's traceback. `urls`:
    (flag, URL) pairs; the command line checks them, so parsing a job's options (a Flex
    Template launch, the deploy tests) needs no filesystem package."""
    runner = options.view_as(StandardOptions).runner
    separate = (options.view_as(DirectOptions).direct_running_mode == "multi_processing"
                or runner not in (None, LOCAL_RUNNER))
    # always remote, under any of its names (DataflowRunner, dataflow, its module path)
    dataflow = runner is not None and runs_as(create_runner(runner), "DataflowRunner")
    for flag, url in urls:
        if not url.strip():
            raise UsageError(f"{flag} is an empty string")
        if printable(url) != url and flag != "INPUT":  # inputs' names are read as they are
            raise UsageError(f"{flag} {printable(url)}: the name is not UTF-8, which Parquet and JSON "
                             "cannot hold (rename it)")
        scheme, sep, rest = url.partition("://")
        if sep and scheme in OBJECT_STORES:  # (a local folder named s3 is a folder)
            bucket, _, key = rest.partition("/")
            if not bucket:
                raise UsageError(f"{flag} {url} names no bucket")
            # s3fs writes s3://b//m under the key /m but lists m/: a memory it wrote was "damaged"
            # (a file named so, an input or a calibration CSV, is read as named)
            if flag in _FOLDERS and "//" in f"/{key.rstrip('/')}":
                raise UsageError(f"{flag} {url} has an empty folder name (//), which {scheme}:// lists "
                                 "otherwise than it writes")
        # fsspec would write to a chain's first name (s3://b/crawl::2024 is s3://b/crawl); a
        # chain named before "://" (simplecache::s3://b/m), or an http host [::1], is not a folder's name
        if flag in _FOLDERS and "::" in (rest.partition("/")[2] if sep else url):
            raise UsageError(f"{flag} {url}: fsspec reads '::' as a chain of file systems: choose a "
                             "folder name without it")
        if url.startswith("memory://") and flag in _FOLDERS:
            raise UsageError(f"{flag} {url}: memory:// is held by this process alone, so what memgen "
                             "wrote there would be gone when it ends (use a folder or a bucket)")
        if url.startswith("memory://") and separate:  # each process would have its own
            raise UsageError(f"{flag} {url}: memory:// lives in one process; workers in other "
                             "processes do not see it (use a folder, or the in-process runner)")
        if dataflow and ("://" not in url or url.startswith("file://")):
            raise UsageError(f"{flag} {url} is a local path: Dataflow's workers do not see this "
                             "machine's disk (use gs://...)")
        if scheme in ("http", "https"):
            try:
                urlsplit(url).port  # noqa: B018 - parsing it is the check ([::1 unclosed, a port over 65535)
            except ValueError as e:
                raise UsageError(f"{flag} {url} is not a URL: {e}") from None
        try:
            fs = fsspec.core.url_to_fs(url)[0]
        except ImportError as e:  # fsspec's own advice: "Please install gcsfs to access Google Storage"
            cloud = " (pip install 'memgen[cloud]' for s3:// and gs://)" if scheme in OBJECT_STORES else ""
            raise UsageError(f"{flag} {url}: {e}{cloud}") from None
        except ValueError as e:  # "Protocol not known: foo"
            raise UsageError(f"{flag} {url}: {e}") from None
        except OSError as e:  # a file system that connects when made (ftp, sftp) and is refused
            e.add_note(f"{flag} {url}")
            raise
        except Exception as e:  # noqa: BLE001 - one made of more than a URL (reference://, zip:// of no zip)
            raise UsageError(f"{flag} {url}: {type(e).__name__}: {e}") from None
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        if protocols & _NOT_STORAGE:
            raise UsageError(f"{flag} {url}: {', '.join(sorted(protocols))}: holds no files or folders")


def refuse_inside(flag: str, output: str, kind: str, inputs: Sequence[str]) -> None:
    """UsageError when an output lies inside an input folder (or a glob's match): a later run
    over that input would read the output's files as its own."""
    holder = input_folder_holding(output, list(inputs))
    if holder:
        raise UsageError(f"{flag} {output} is inside the {kind} {holder}: a run over it would read "
                         f"these files as its own; choose a {flag} outside it")


def runs_as(runner: PipelineRunner, *kinds: str) -> bool:
    """Whether the runner is one of these Beam runner classes, or a subclass of one (Beam
    names runners several ways: DataflowRunner, dataflow, a module path)."""
    return any(cls.__name__ in kinds for cls in type(runner).__mro__)


def add_shared(parser: argparse.ArgumentParser, flag: str) -> None:
    try:
        parser.add_argument(flag, **SHARED_FLAGS[flag])
    except argparse.ArgumentError:  # another job's options class added the same definition
        pass


def boolean(value: str) -> bool:
    """argparse type for flags that take true/false (Flex Templates pass --flag=true)."""
    if value.lower() not in _BOOLEANS:
        raise argparse.ArgumentTypeError(f"takes true or false, got {value!r}")
    return _BOOLEANS[value.lower()]


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        raise UsageError(message)


class _Parser(OneLineParser, _BeamArgumentParser):
    pass


def parse_job(prog: str, description: str, options_cls: type[PipelineOptions], argv: list[str],
              positional: str | None = None, positional_flag: str | None = None) -> PipelineOptions:
    """Parse argv for one job; positionals (e.g. INPUT...) are appended to `positional_flag`,
    and so is everything after `--` (a file named -x.jpg)."""
    argv, after = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    if "-h" in argv or "--help" in argv:
        _help_parser(prog, description, options_cls, positional).print_help(sys.stdout)
        raise SystemExit(0)
    if after and not positional:
        raise UsageError(f"unrecognized arguments: {' '.join(after)}")
    argv = _bare_dry_run(argv)
    parser = _Parser(prog=prog, allow_abbrev=False)
    if positional:
        parser.add_argument("_positional", nargs="*")
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    known, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    _refuse_empty(options_cls, known)
    _refuse_repeated(options_cls, argv)
    overrides = {}
    flags, positionals = _split_flags(parser, argv)
    positionals += after
    others = _other_jobs_flags(options_cls)
    foreign = [flag for flag in flags if flag.split("=", 1)[0] in others]
    if foreign:  # every job's flags are parsed (Beam's one parser), but only its own apply
        raise UsageError(f"unrecognized arguments: {' '.join(foreign)} (not a flag of {prog})")
    if positionals:
        overrides[positional_flag] = [*getattr(known, positional_flag), *positionals]
    options = PipelineOptions(flags, **overrides)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = LOCAL_RUNNER
    try:
        create_runner(standard.runner)  # imports it: a misspelt name fails here, in one line
    except (ValueError, ImportError) as e:
        raise UsageError(f"--runner {standard.runner}: {e}") from None
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:  # 0 means one per core; below it the runner fails mid-run
        raise UsageError(f"--direct_num_workers must be 0 (one per core) or more, got {workers}")
    most = WORKERS_PER_CORE * (os.cpu_count() or 1)
    if workers is not None and workers > most:  # a process each: a typo (400 for 4) swaps the machine
        raise UsageError(f"--direct_num_workers must be at most {most} ({WORKERS_PER_CORE} per core here), "
                         f"got {workers}")
    test_options = options.view_as(TestOptions)
    test_options.dry_run = _boolean(DRY_RUN, test_options.dry_run)
    return options


def _refuse_repeated(cls: type[PipelineOptions], argv: list[str]) -> None:
    """UsageError for a flag of one value, the job's or Beam's, given more than once (the last
    one was taken silently: `--memory a ... --memory b` wrote b, `--runner=DataflowRunner ...
    --runner=FnApiRunner` ran here); --input, --reference and Beam's lists gather theirs."""
    for options_cls in (cls, *_beam_options_classes()):
        parser = argparse.ArgumentParser(add_help=False)
        options_cls._add_argparse_args(parser)  # noqa: SLF001
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._StoreAction):  # noqa: SLF001 - one value: not append or extend
                names = action.option_strings  # --sample_size and its alias --sample-size count together
                values = [word.partition("=")[2] if "=" in word else next(iter(argv[i + 1:i + 2]), "")
                          for i, word in enumerate(argv) for name in names
                          if word == name or word.startswith(name + "=")]
                # Beam's own flag twice with one value (a launcher adding what a parameter names) is harmless
                if len(values) > 1 and (options_cls is cls or len(set(values)) > 1):
                    raise UsageError(f"{names[0]} is given {len(values)} times; give it once")


def _beam_options_classes() -> list[type[PipelineOptions]]:
    """Beam's own options classes (StandardOptions, DirectOptions, GoogleCloudOptions, ...)."""
    found, stack = [], [PipelineOptions]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return [c for c in found if c.__module__.startswith("apache_beam.")]


def _flags_of(cls: type[PipelineOptions]) -> dict[str, str]:
    """A job's flags and their option names."""
    parser = argparse.ArgumentParser(add_help=False)
    cls._add_argparse_args(parser)  # noqa: SLF001
    return {flag: action.dest for flag, action in parser._option_string_actions.items()}  # noqa: SLF001


def _other_jobs_flags(options_cls: type[PipelineOptions]) -> set[str]:
    """Flags that other memgen jobs define and this one does not."""
    jobs = [cls for cls in PipelineOptions.__subclasses__() if cls.__module__.startswith("memgen.pipelines.")]
    return set().union(*map(_flags_of, jobs)) - set(_flags_of(options_cls))


def _refuse_empty(options_cls: type[PipelineOptions], parsed: argparse.Namespace) -> None:
    """UsageError for a flag of the job given an empty string (--classifier "" ran the default
    classifier, --image_column "" the default column)."""
    for flag, dest in sorted(_flags_of(options_cls).items()):
        value = getattr(parsed, dest, None)
        if value == "" or (isinstance(value, list) and "" in value):
            raise UsageError(f"{flag} is an empty string")


def _split_flags(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(flags with their values, positionals) of argv, told apart by position as argparse
    does: a value equal to a positional (`memorize a.tar --memory a.tar`) stays a value."""
    flags: list[str] = []
    positionals: list[str] = []
    taking = 0  # values the last flag may still take; -1: any number, up to the next flag
    for arg in argv:
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            flags.append(arg)
            action = parser._option_string_actions.get(arg.split("=", 1)[0])  # noqa: SLF001
            taking = 0 if "=" in arg or action is None else _values_taken(action.nargs)
        elif taking:
            flags.append(arg)
            taking -= taking > 0
        else:
            positionals.append(arg)
    return flags, positionals


def _values_taken(nargs: int | str | None) -> int:
    if nargs is None or nargs == "?":
        return 1
    if isinstance(nargs, int):
        return nargs
    return -1  # "*", "+", "...": what follows, up to the next flag


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


def _bare_dry_run(argv: list[str]) -> list[str]:
    """Beam's --dry_run takes a value; a bare --dry_run (not followed by true, false, ...) means true."""
    return [f"{a}=true" if a == DRY_RUN and (i + 1 == len(argv) or argv[i + 1].lower() not in _BOOLEANS)
            else a for i, a in enumerate(argv)]


def _boolean(flag: str, value: bool | str) -> bool:
    try:
        return value if isinstance(value, bool) else boolean(value)
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"{flag} {e}") from None


def _help_parser(prog: str, description: str, options_cls: type[PipelineOptions],
                 positional: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=BEAM_EPILOG)
    if positional:
        parser.add_argument(positional, nargs="*", help="input shard URLs (same as --input)")
    options_cls._add_argparse_args(parser)
    parser.add_argument(DRY_RUN, action="store_true", help=DRY_RUN_HELP)
    return parser
