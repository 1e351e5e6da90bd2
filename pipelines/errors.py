"""Errors that mean the user asked for something unusable: one line, non-zero exit."""


class UsageError(ValueError):
    pass


def first_line(error: BaseException) -> str:
    """An error's first line that says something (hdfs's is 7 lines, a job server's more)."""
    return next((line for line in str(error).splitlines() if line.strip()), "")
