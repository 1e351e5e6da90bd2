"""Errors that mean the user asked for something unusable: one line, non-zero exit."""


class UsageError(ValueError):
    pass
