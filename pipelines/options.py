"""Command-line parsing shared by every job: job flags + positionals + Beam flags.

Every job option is a PipelineOptions flag, so the same names work on the command
line, in Flex Templates and in Airflow. All Beam option classes are parsed too, so
a flag that nobody knows is an error instead of being silently dropped.
"""

from __future__ import annotations

import argparse
import sys

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    TestOptions,
    _BeamArgumentParser,
)

from memgen.pipelines.errors import UsageError

LOCAL_RUNNER = "FnApiRunner"  # in-process; Beam's DirectRunner would first try to download Prism
BEAM_EPILOG = (
    "Any other flag goes to Apache Beam, e.g. --runner=DataflowRunner --project=P --region=R "
    "--temp_location=gs://B/tmp, or --direct_num_workers=4 --direct_running_mode=multi_processing. "
    f"Default runner: {LOCAL_RUNNER} (local, in-process, no network)."
)


DRY_RUN = "--dry_run"  # Beam's own flag (TestOptions): DataflowRunner builds the job, submits nothing
DRY_RUN_HELP = ("build and validate the pipeline for the chosen runner, print its stages, run nothing "
                "(also --dry_run=true|false)")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


# Beam parses every job's options class with one parser, so a flag that several jobs
# take is declared once, here, and each job adds it with add_shared().
SHARED_FLAGS: dict[str, dict] = {
    "--memory": {"help": "memory directory (local path or fsspec URL): memorize writes it, "
                         "sample and evaluate read it"},
    "--out": {"help": "output directory: the sample (sample), report.json + report.html (evaluate)"},
    "--seed": {"type": int, "default": 0, "help": "seed of every random choice (default 0)"},
}


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


class _Parser(_BeamArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def parse_job(prog: str, description: str, options_cls: type[PipelineOptions], argv: list[str],
              positional: str | None = None, positional_flag: str | None = None) -> PipelineOptions:
    """Parse argv for one job; positionals (e.g. INPUT...) are appended to `positional_flag`."""
    if "-h" in argv or "--help" in argv:
        _help_parser(prog, description, options_cls, positional).print_help(sys.stdout)
        raise SystemExit(0)
    argv = _bare_dry_run(argv)
    parser = _Parser(prog=prog, allow_abbrev=False)
    if positional:
        parser.add_argument("_positional", nargs="*")
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    known, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    overrides = {}
    positionals = list(getattr(known, "_positional", []) or [])
    if positionals:
        overrides[positional_flag] = [*getattr(known, positional_flag), *positionals]
    flags = [a for a in argv if a not in positionals]
    options = PipelineOptions(flags, **overrides)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
    test_options = options.view_as(TestOptions)
    test_options.dry_run = _boolean(DRY_RUN, test_options.dry_run)
    return options


def _bare_dry_run(argv: list[str]) -> list[str]:
    """Beam's --dry_run takes a value; a bare --dry_run (last, or before another flag) means true."""
    return [f"{a}=true" if a == DRY_RUN and (i + 1 == len(argv) or argv[i + 1].startswith("-")) else a
            for i, a in enumerate(argv)]


def _boolean(flag: str, value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() not in _BOOLEANS:
        raise UsageError(f"{flag} takes true or false, got {value!r}")
    return _BOOLEANS[value.lower()]


def _help_parser(prog: str, description: str, options_cls: type[PipelineOptions],
                 positional: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=BEAM_EPILOG)
    if positional:
        parser.add_argument(positional, nargs="*", help="input shard URLs (same as --input)")
    options_cls._add_argparse_args(parser)
    parser.add_argument(DRY_RUN, action="store_true", help=DRY_RUN_HELP)
    return parser
