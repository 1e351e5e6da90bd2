"""Flex Template entry point: the launcher runs `python launch.py --name=value ...`.

The image is built for one job (MEMGEN_JOB, set by build.sh); the template parameters
and the launcher's Beam flags (--runner, --project, --region, --temp_location, ...)
are passed to `memgen JOB` unchanged, except that ${YESTERDAY} in a value becomes the
UTC date of the day before the launch (YYYY-MM-DD): that is how a static Cloud
Scheduler body points each night's run at that day's shard folder and a new memory; and
`known`, one parameter, may name several memories separated by commas.
A launch that names no image for the workers gets this image's own (MEMGEN_IMAGE, set
by build.sh): Beam's stock image, which they would start otherwise, has no memgen.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from memgen.pipelines.cli import main
from memgen.pipelines.errors import UsageError

YESTERDAY = "${YESTERDAY}"
# a template parameter holds one value: several known memories are separated by commas
LIST_FLAGS = ("--known",)
# Beam's flags that name the workers' container; a Flex launch passes --template_location
IMAGE_FLAGS = ("--sdk_container_image", "--worker_harness_container_image")
TEMPLATE_FLAG = "--template_location"


def render(argv: list[str], today: dt.date) -> list[str]:
    day = (today - dt.timedelta(days=1)).isoformat()
    return [arg.replace(YESTERDAY, day) for arg in argv]


def listed(argv: list[str]) -> list[str]:
    """argv with each --known=a,b as --known=a --known=b, and --known a,b as --known a b, as the
    command line takes several."""
    split = []
    for n, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if flag in LIST_FLAGS and equals:
            split.extend(f"{flag}={v}" for v in value.split(","))
        elif n and argv[n - 1] in LIST_FLAGS:  # the bare flag's value (it was --known= then a,b)
            split.extend(arg.split(","))
        else:
            split.append(arg)
    return split


def given(argv: list[str], flags: tuple[str, ...]) -> bool:
    return any(arg in flags or arg.split("=", 1)[0] in flags for arg in argv)


def with_image(argv: list[str], image: str) -> list[str]:
    """argv with the workers' image when a Flex launch names none: `image` (this image's
    own name); UsageError when that is unknown too, before anything is claimed (the workers
    would fail on "No module named memgen" after the output folder was)."""
    if not given(argv, (TEMPLATE_FLAG,)) or given(argv, IMAGE_FLAGS):
        return argv
    if not image:
        raise UsageError("the launch names no image for the workers (sdk_container_image, or "
                         "environment.sdkContainerImage), and this image was built without its own "
                         "name (MEMGEN_IMAGE: build.sh passes it)")
    return [*argv, f"{IMAGE_FLAGS[0]}={image}"]


if __name__ == "__main__":
    job, today = os.environ["MEMGEN_JOB"], dt.datetime.now(dt.UTC).date()
    try:
        argv = with_image(listed(render(sys.argv[1:], today)), os.environ.get("MEMGEN_IMAGE", ""))
    except UsageError as e:
        print(f"memgen {job}: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main([job, *argv]))
