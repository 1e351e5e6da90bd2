"""LocalRunner: Beam's FnApiRunner, whose worker processes (--direct_running_mode=
multi_processing) start as memgen.pipelines.worker instead of Beam's own command, and whose
bundles drop their output buffers when done (worker.release_output_streams).

Beam's worker printed its INFO lines (~45 a run), every failed bundle's traceback (~380
lines when storage fails, before the command's one-line error) and, on Ctrl-C, its
traceback to the terminal it inherits; memgen's worker shows memgen's progress lines,
as a run in one process does, and nothing of Beam's.
"""

from __future__ import annotations

import os
import shlex
import sys

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import Pipeline
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import RunnerResult
from apache_beam.transforms.environments import Environment, SubprocessSDKEnvironment

from memgen.pipelines.worker import COMMAND_PID, release_output_streams

# The interpreter's -W options too (`python -W error ...`): workers warn as the command does;
# a worker ends with the command (memgen.pipelines.worker), whose process it is told. Beam
# runs it through a shell: exec'd, no shell stays to print "Killed" when a worker is.
WORKER_COMMAND = " ".join(shlex.quote(word) for word in [
    "exec", "env", f"{COMMAND_PID}={os.getpid()}", sys.executable,
    *(f"-W{option}" for option in sys.warnoptions), "-m", "memgen.pipelines.worker"])


class LocalRunner(FnApiRunner):
    """FnApiRunner whose worker processes run memgen.pipelines.worker."""

    NAME = "FnApiRunner"  # what the command line calls it (--runner=FnApiRunner)

    def run_pipeline(self, pipeline: Pipeline, options: PipelineOptions) -> RunnerResult:
        release_output_streams()  # the in-process worker's (a worker process does its own)
        return super().run_pipeline(pipeline, options)

    # FnApiRunner.run_pipeline sets the environment of Beam's worker command for
    # multi_processing; a runner option cannot change that command, this setter does.
    @property
    def _default_environment(self) -> Environment:
        return self._environment

    @_default_environment.setter
    def _default_environment(self, environment: Environment) -> None:
        if isinstance(environment, SubprocessSDKEnvironment):
            environment = SubprocessSDKEnvironment.from_command_string(WORKER_COMMAND)
        self._environment = environment
