"""How a failed run is judged: storage refused or failed (one line: the user's to fix) or
memgen's own error (its traceback, which a bug report needs), through what a Beam runner
re-raises of a worker's error."""

from __future__ import annotations

import builtins
import errno
import re
import tempfile
from typing import NamedTuple

from memgen.memory import MemoryDirError
from memgen.outputs import STORAGE_CLIENTS, from_storage_client
from memgen.pipelines.errors import first_line

# What a disk says when it fails during a run (full, read-only, a revoked right). Other
# OSErrors from inside a pipeline, not raised by a storage client, are memgen's (Pillow's
# decode errors are OSErrors): their traceback is shown.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                   errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENETUNREACH,
                   errno.EHOSTUNREACH}
# a frame of a storage client's code in a traceback sent as text
_HTTP_FILES = "fsspec.implementations.http"  # fsspec's own client of http(s) servers
_CLIENT_FILE = re.compile(r"site-packages/(" + "|".join(sorted(STORAGE_CLIENTS))
                          + r"|fsspec/implementations/http\.py)")


class RunError(NamedTuple):
    """What a failed run raised, as main judges it."""

    error: BaseException  # the worker's error a runner re-raised, or what main caught
    in_run: bool  # raised inside a pipeline's worker
    by_client: bool  # raised in a storage client's code


def storage_error(failed: RunError) -> bool:
    """Storage refused or could not be reached (no access, no credentials, no network), or
    failed during the run (a full disk, a bucket gone)."""
    e = failed.error
    if from_storage_client(e):  # no credentials, an endpoint that does not answer
        return True
    if failed.by_client and isinstance(e, ValueError):  # fsspec's HTTP file: no Range requests there
        return True
    return isinstance(e, OSError) and (not failed.in_run or failed.by_client or e.errno in _STORAGE_ERRNOS)


def _by_client(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.split(".")[0] in STORAGE_CLIENTS or module == _HTTP_FILES:
            return True
        tb = tb.tb_next
    return False


# How a Beam runner re-raises a worker's error: the error's own type with " [while running
# 'Stage']" added, or a RuntimeError whose text (worker processes send the whole traceback)
# ends "OSError: [Errno 28] ... [while running 'Stage']", maybe after "RuntimeError: "s; a
# class that is not a builtin is named with its module (botocore.exceptions.X).
_WHILE_RUNNING = re.compile(r" \[while running '[^']*'\]$")
_RERAISED = re.compile(r"(?:RuntimeError: )*([A-Za-z_][\w.]*)(?:: (.*))?$")
_ERRNO = re.compile(r"\[Errno (\d+)\] ")
_DAMAGED = f"{MemoryDirError.__module__}.{MemoryDirError.__name__}"


def without_stage(error: BaseException) -> str:
    """An error's text without the stage a runner named in it (" [while running 'Stage']")."""
    return _WHILE_RUNNING.sub("", str(error))


def behind(e: BaseException) -> RunError:
    """The error a runner's `e` re-raises: `e` itself when it kept its type, else the one it
    was raised in handling (in-process workers), or one made from its text's last line
    (worker processes send only text); `e`, not in a run, when no worker raised it."""
    lines = str(e).strip().splitlines()
    running = _WHILE_RUNNING.search(lines[-1]) if lines else None
    if running is None:
        return RunError(e, False, False)
    named = _RERAISED.match(lines[-1][:running.start()])
    if type(e) is not RuntimeError or named is None:
        return RunError(e, True, _by_client(e))
    module, _, name = named.group(1).rpartition(".")
    message = named.group(2) or ""
    inner = e.__cause__ or e.__context__
    while inner is not None and type(inner).__name__ != name:  # wrapped more than once
        inner = inner.__cause__ or inner.__context__
    if inner is not None:
        return RunError(inner, True, _by_client(inner))
    by_client = bool(_CLIENT_FILE.search(str(e)))  # the traceback in the text
    builtin = getattr(builtins, name, None) if not module else None
    if isinstance(builtin, type) and issubclass(builtin, OSError):
        code = _ERRNO.match(message)
        sent = builtin(int(code.group(1)), message[code.end():]) if code else builtin(message)
        return RunError(sent, True, by_client)
    if builtin is KeyboardInterrupt:
        return RunError(KeyboardInterrupt(), True, False)
    if f"{module}.{name}" == _DAMAGED:  # a damaged memory part, found in a worker process
        return RunError(MemoryDirError(message), True, False)
    if module.split(".")[0] in STORAGE_CLIENTS:  # its class is not importable here, its text is
        return RunError(type(name, (Exception,), {"__module__": module})(message), True, True)
    return RunError(e, True, by_client)


def _staging_hint(error: BaseException) -> str:
    """A full disk may be the local one where files for an object store are staged (TMPDIR):
    the error names no path."""
    if getattr(error, "errno", None) != errno.ENOSPC:
        return ""
    return (f" (the output's disk, or {tempfile.gettempdir()}, where files bound for an object store are "
            "staged: TMPDIR moves them)")


def storage_line(error: BaseException) -> str:
    """The one line a storage error is said in: its type, its first line, what memgen was
    doing (the notes it added: which input, which flag) and where a full disk may be."""
    about = "".join(f" ({note})" for note in getattr(error, "__notes__", ()))
    return f"{type(error).__name__}: {first_line(error)}{about}{_staging_hint(error)}"
