"""Flex Template entry point: the launcher runs `python launch.py --name=value ...`.

The image is built for one job (MEMGEN_JOB, set by build.sh); the template parameters
and the launcher's Beam flags (--runner, --project, --region, --temp_location, ...)
are passed to `memgen JOB` unchanged, except that ${YESTERDAY} in a value becomes the
UTC date of the day before the launch (YYYY-MM-DD): that is how a static Cloud
Scheduler body points each night's run at that day's shard folder and a new memory.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from memgen.pipelines.cli import main

YESTERDAY = "${YESTERDAY}"


def render(argv: list[str], today: dt.date) -> list[str]:
    day = (today - dt.timedelta(days=1)).isoformat()
    return [arg.replace(YESTERDAY, day) for arg in argv]


if __name__ == "__main__":
    today = dt.datetime.now(dt.UTC).date()
    sys.exit(main([os.environ["MEMGEN_JOB"], *render(sys.argv[1:], today)]))
