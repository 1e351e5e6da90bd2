"""Reading a shard's bytes from where it lives: an http(s) body streamed front to back and
asked for again where a cut or a silent server left it (a changed shard is refused), a
Parquet shard over http(s) copied to local disk, network errors of a stream raised as
OSErrors (which the readers turn into rejects), and the words a reject says them in.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import IO

import fsspec
import fsspec.compression

from memgen.outputs import from_storage_client
from memgen.records import Shard
from memgen.shards import compression, http_answer, storage_options
from memgen.tarstream import skip


def open_http(shard: Shard, http_timeout: float) -> IO[bytes]:
    """An http(s) shard's bytes, streamed front to back (servers without Range support fail
    ranged reads, and each costs a request) and resumed where a cut left them (_Resumed);
    a Parquet or zip shard, which is read from its end first, copied to local disk."""
    body = _Resumed(_HttpBody(shard, http_timeout))
    if shard.kind in ("parquet", "zip"):
        return _local_copy(body)
    decompress = compression(shard.uri)
    return _Decompressed(body, fsspec.compression.compr[decompress](body, mode="rb")) if decompress else body


class _HttpBody:
    """Opens an http(s) shard's body from a byte on, for _Resumed: with a Range request, or
    whole with the bytes before skipped when the server sends no ranges (or compresses the
    body on the way: ranges would count its compressed bytes). A resumed body must be the
    same file: an ETag or Last-Modified other than the first answer's is ShardChanged, and a
    range that starts elsewhere than asked a TransferError (their bytes spliced in made wrong
    images)."""

    def __init__(self, shard: Shard, http_timeout: float) -> None:
        self._fs, self._path = fsspec.core.url_to_fs(shard.location,
                                                     **storage_options(shard.uri, http_timeout))
        self._first: tuple[str | None, str | None] | None = None  # (ETag, Last-Modified)
        self._ranges = True
        self._size: int | None = None  # the first answer's Content-Length, when not compressed

    def __call__(self, offset: int) -> IO[bytes]:
        if self._size is not None and offset >= self._size:
            return io.BytesIO()  # cut after the last byte: asking for more would be a 416
        ranged = {"headers": {"Range": f"bytes={offset}-"}} if offset and self._ranges else {}
        try:
            # block_size=0 streams; a size (any) skips fsspec's info(), a HEAD before each GET
            body = FailsAsOSError(self._fs.open(self._path, "rb", block_size=0, size=1, **ranged))
        except Exception as e:
            status = next((s for error in (e, e.__cause__, e.__context__)
                           if (s := getattr(error, "status", None)) in (404, 410, 416)), None)
            if offset and status:  # gone, or shorter than what was read: not worth asking again
                raise ShardChanged(f"asked again from byte {offset}, the server answered {status}: "
                                   "the shard is gone or shorter now") from e
            raise
        with contextlib.ExitStack() as failing:
            failing.callback(body.close)
            answer = body.r.headers
            version = (answer.get("ETag"), answer.get("Last-Modified"))
            if self._first is None:
                self._first = version
                self._ranges = answer.get("Content-Encoding", "identity").lower() == "identity"
                length = answer.get("Content-Length", "")
                self._size = int(length) if self._ranges and length.isdigit() else None
            elif version != self._first:
                raise ShardChanged(f"the server sent another version of the shard when asked again from byte "
                                   f"{offset} (ETag, Last-Modified {self._first} then {version})")
            start = _range_start(answer.get("Content-Range")) if body.r.status == 206 else 0
            if start not in (0, offset):
                raise TransferError(f"asked for bytes from {offset}, the server sent them from {start}")
            if offset and start == 0 and skip(body, offset) < offset:
                raise TransferError(f"the server sent less than the {offset} bytes it sent before")
            failing.pop_all()
        return body


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a 206 answer's `Content-Range: bytes START-END/SIZE`."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", content_range or "")
    return int(match.group(1)) if match else None


RESUMES = 4  # times a cut or silent http(s) body is asked for again from where it stopped
RESUME_WAIT = 1.0  # seconds before the first time, doubled each next time


class _Resumed:
    """A body that outlives its connection being cut or going silent: it is asked for again
    from the first byte not yet read, RESUMES times at most without a byte more, RESUME_WAIT,
    then twice as long, apart. A long download otherwise became one unreadable reject at its first reset, and
    aiohttp drops the bytes of the read that fails: records before the cut went with it."""

    def __init__(self, open_at: Callable[[int], IO[bytes]]) -> None:
        self._open_at, self._offset, self._resumed = open_at, 0, 0
        self._failed_at = -1  # where the last failure left the body: a failure further on starts afresh
        self._stream: IO[bytes] | None = open_at(0)

    def read(self, n: int = -1) -> bytes:
        while True:
            if self._stream is None:
                try:
                    self._stream = self._open_at(self._offset)
                except ShardChanged:
                    raise
                except Exception as e:  # noqa: BLE001 - asked again in vain: one more failed attempt
                    self._failed(TransferError(f"asked again from byte {self._offset}: {open_message(e)}"))
                    continue
            try:
                data = self._stream.read(n)
            except (TransferError, TimeoutError) as e:  # any other error is damage to the body
                self._failed(e)
                continue
            self._offset += len(data)
            return data

    def _failed(self, error: OSError) -> None:
        """Drop the stream and wait to ask again; `error` once RESUMES times have failed too."""
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None
        if self._offset > self._failed_at:  # bytes came since: a flaky link, not a dead one
            self._resumed, self._failed_at = 0, self._offset
        if self._resumed == RESUMES:
            raise error
        time.sleep(RESUME_WAIT * 2**self._resumed)
        self._resumed += 1

    def __getattr__(self, name: str):  # size, for a single file too large to download
        return getattr(self._stream, name)

    def __enter__(self) -> _Resumed:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


class _Decompressed:
    """A decompressing reader over a body, closing both."""

    def __init__(self, body: IO[bytes], reader: IO[bytes]) -> None:
        self._body, self._reader = body, reader

    def read(self, n: int = -1) -> bytes:
        return self._reader.read(n)

    def __enter__(self) -> _Decompressed:
        return self

    def __exit__(self, *_) -> None:
        try:
            self._reader.close()
        finally:
            self._body.close()


class TransferError(OSError):
    """A storage client failed to deliver a stream (a connection cut mid-body): the shard is
    unreadable this time, not damaged."""


class ShardChanged(TransferError):
    """A shard asked for again was another file than the one being read: not asked again."""


class FailsAsOSError:
    """A shard's stream whose failed reads are OSError, whichever client raised (aiohttp's
    ClientPayloadError when a server closes before the end of the body it announced ended
    the whole run), and a TransferError when storage failed to deliver (see `_stream_error`).
    Other errors are memgen's, and stay as they are."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        try:
            return self._stream.read(n)
        except Exception as e:
            failed = _stream_error(e)
            if failed is None:
                raise
            raise failed from e

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def __enter__(self) -> FailsAsOSError:
        return self

    def __exit__(self, *_) -> None:
        self._stream.close()


# storage clients' errors for a connection lost or cut short (aiohttp's, inside its
# ClientPayloadError, and botocore's), not for bytes that arrived and cannot be decoded
_CUT = frozenset({"ContentLengthError", "TransferEncodingError", "ClientConnectionError",
                  "IncompleteReadError", "ConnectionClosedError", "ReadTimeoutError",
                  "ResponseStreamingError"})


def _stream_error(e: Exception) -> OSError | None:
    """What a storage client's failed read is to the readers (None: not a client's, raised as
    it is): ShardChanged for an object rewritten while read (s3fs's FileExpired); a
    TransferError, worth a retry, for a connection cut or an error the store answered mid-read
    (s3fs raises a 500 or a throttling answer as an OSError from botocore's error: it was a
    corrupt_shard, and a retry then had nothing to read again); an OSError, damage, for a body
    that arrived and cannot be decoded."""
    raised = [error for error in (e, e.__cause__, e.__context__) if error is not None]
    if isinstance(e, TimeoutError | TransferError) or not any(map(from_storage_client, raised)):
        return None  # a silent server's timeout is said as such (read_message)
    said = f"{type(e).__name__}: {e}"
    if type(e).__name__ == "FileExpired":
        return ShardChanged(f"the shard was rewritten while it was read ({said})")
    if isinstance(e, OSError) or _cut(e):
        return TransferError(said)
    return OSError(said)


def _cut(e: BaseException) -> bool:
    inner = [e, e.__cause__, e.__context__, *(a for a in e.args if isinstance(a, BaseException))]
    return any(cls.__name__ in _CUT for error in inner if error is not None for cls in type(error).__mro__)


def _local_copy(stream: IO[bytes]) -> IO[bytes]:
    """A stream copied to a temporary file on local disk: what Parquet, which reads its
    footer first, needs of a shard that can only be streamed."""
    copy = tempfile.TemporaryFile()
    try:
        with stream:
            shutil.copyfileobj(stream, copy, 1 << 20)
    except BaseException:
        copy.close()
        raise
    copy.seek(0)
    return copy


def open_error(e: Exception) -> str:
    """missing: the shard is not there; unreadable: it could not be asked for or refused
    (fsspec's HTTP says FileNotFoundError for a 500 and a refused connection too: those are
    worth a retry, a 404 is not)."""
    cause = e.__cause__
    status = getattr(cause, "status", None)
    asked_in_vain = (status is not None and status != 404) or (
        isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError))
    return "missing" if isinstance(e, FileNotFoundError) and not asked_in_vain else "unreadable"


def open_message(e: Exception) -> str:
    """The error, and for a shard that could not be asked for, why (fsspec's says only its URL)."""
    cause = e.__cause__
    if cause is None or open_error(e) == "missing":
        return _said(e)
    return f"{_said(e)}; {_said(cause)}"


def _said(e: BaseException) -> str:
    """An error, an HTTP client's by its status line (its own text repeats the URL)."""
    return f"{type(e).__name__}: {http_answer(e) or e}"[:500]


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def transfer_failed(e: BaseException) -> bool:
    """Whether a shard's stream failed in transfer, by a timeout or a cut connection (the tar
    reader wraps it): worth a retry, not damage to the shard."""
    return _raised_by(e, (TimeoutError, TransferError))


def _raised_by(e: BaseException, kinds: tuple[type, ...]) -> bool:
    """`e`, or the error it wraps, is one of `kinds`."""
    return any(isinstance(failed, kinds) for failed in (e, e.__cause__))


def silent_server(e: BaseException, shard: Shard, http_timeout: float) -> str | None:
    """A timeout of a shard read over http(s), said with how long the server was silent
    (fsspec's says nothing); None for any other failure."""
    if shard.uri.startswith(("http://", "https://")) and _raised_by(e, (TimeoutError,)):
        return f"TimeoutError: the server sent nothing for {http_timeout:g} s (--http_timeout)"
    return None


def read_message(e: BaseException, shard: Shard, http_timeout: float) -> str:
    """Why a shard's stream failed; over http(s) a timeout says after how long (silent_server),
    and a failed transfer that it was asked for again (_Resumed)."""
    if not shard.uri.startswith(("http://", "https://")):
        return error_text(e)
    said = silent_server(e, shard, http_timeout) or error_text(e)
    resumed = transfer_failed(e) and not _raised_by(e, (ShardChanged,))
    return f"{said}; the same after asking {RESUMES} more times" if resumed else said
