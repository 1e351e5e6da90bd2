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
    _BeamArgumentParser,
)

from memgen.pipelines.errors import UsageError

LOCAL_RUNNER = "FnApiRunner"  # in-process; Beam's DirectRunner would first try to download Prism
BEAM_EPILOG = (
    "Any other flag goes to Apache Beam, e.g. --runner=DataflowRunner --project=P --region=R "
    "--temp_location=gs://B/tmp, or --direct_num_workers=4 --direct_running_mode=multi_processing. "
    f"Default runner: {LOCAL_RUNNER} (local, in-process, no network)."
)


class _Parser(_BeamArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def parse_job(prog: str, description: str, options_cls: type[PipelineOptions], argv: list[str],
              positional: str | None = None, positional_flag: str | None = None) -> PipelineOptions:
    """Parse argv for one job; positionals (e.g. INPUT...) are appended to `positional_flag`."""
    if "-h" in argv or "--help" in argv:
        _help_parser(prog, description, options_cls, positional).print_help(sys.stdout)
        raise SystemExit(0)
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
    return options


def _help_parser(prog: str, description: str, options_cls: type[PipelineOptions],
                 positional: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=BEAM_EPILOG)
    if positional:
        parser.add_argument(positional, nargs="*", help="input shard URLs (same as --input)")
    options_cls._add_argparse_args(parser)
    return parser
