"""One exception tree for vidpipe, and the one rule for what a retry can fix.

Whose fault, and whether a retry helps, are the two questions every failure
answers:

- ``UploadRejected``: the upload itself cannot be decoded, breaks a limit or
  is hostile. Permanent; the video becomes ``rejected``; exit 2.
- ``ConfigError``: the configuration is wrong. Permanent; the video keeps the
  status it had; exit 2, with what to change.
- ``InternalError``: a fault of vidpipe's (our output failed our own
  validation). Permanent; the video becomes ``failed``; exit 1, with what to
  report.
- ``TransientError``: storage or database hiccup, a preempted worker, a cached
  attempt gone from storage, memory exhausted. Retried with backoff.

Like PyAV's errors, the leaves also subclass the matching builtin where one
fits, so callers can catch either.
"""

from __future__ import annotations


class VidpipeError(Exception):
    """Base of every error vidpipe raises on purpose."""

    retryable: bool = False


class PermanentError(VidpipeError):
    """Retrying will not help; the message says what to change."""


class UploadRejected(PermanentError):
    """The upload's own fault: the message says what is wrong with the file."""


class InvalidMedia(UploadRejected, ValueError):
    """The upload is not a video or audio file vidpipe can read."""


class UnsupportedCodec(InvalidMedia):
    """The container is fine but a stream's codec is not supported."""


class LimitExceeded(UploadRejected, ValueError):
    """The upload is over a configured limit (size, duration, pixels, fps)."""


class ConfigError(PermanentError, ValueError):
    """The configuration is invalid."""


class InternalError(PermanentError):
    """A fault of vidpipe's, not of the upload or the configuration."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"{message}. This is a bug in vidpipe, not a problem with the upload: "
            "please report it with this message and the run's log"
        )


class OutputInvalid(InternalError):
    """Our own HLS output failed validation; it is never published."""


class TransientError(VidpipeError):
    """A retry may succeed (I/O hiccup, killed worker)."""

    retryable = True


class StorageError(TransientError, OSError):
    """Reading or writing the object store failed."""


class AttemptVanished(TransientError):
    """A cached attempt's files are no longer in storage; encode a fresh one."""


class ResourceExhausted(TransientError, MemoryError):
    """The machine ran out of memory (or another resource) loading or running a stage."""


class EncodeError(VidpipeError):
    """ffmpeg failed. ``stderr_tail`` holds the end of its log."""

    def __init__(self, message: str, stderr_tail: str = "", retryable: bool = False) -> None:
        detail = (
            f"{message}\n--- ffmpeg stderr (tail) ---\n{stderr_tail}" if stderr_tail else message
        )
        super().__init__(detail)
        self.stderr_tail = stderr_tail
        self.retryable = retryable


class EncodeTimeout(EncodeError):
    """ffmpeg ran past its timeout and its process group was killed."""


# errno values an import or allocation fails with when memory runs out.
_OUT_OF_MEMORY_TEXT = ("failed to map segment", "cannot allocate memory", "out of memory")


def is_retryable(exc: BaseException) -> bool:
    """Whether a retry of the same work can succeed.

    Our errors say so themselves. A media error from PyAV or ffmpeg is
    permanent even though PyAV's classes subclass ``OSError`` (a seek that
    returns EPERM fails the same way every time). Other I/O, network and
    memory failures are transient.
    """
    if isinstance(exc, VidpipeError):
        return exc.retryable
    if _is_media_error(exc):
        return False
    return isinstance(exc, OSError | TimeoutError | ConnectionError | MemoryError)


def _is_media_error(exc: BaseException) -> bool:
    return any(cls.__module__.split(".")[0] == "av" for cls in type(exc).__mro__[:-1])


def import_failure(what: str, exc: ImportError, hint: str) -> VidpipeError:
    """The error for a heavy library that failed to import.

    Out of memory (``failed to map segment``) is a resource failure of this
    machine, retried elsewhere; a missing package is the installation's fault.
    """
    text = str(exc)
    if any(s in text.lower() for s in _OUT_OF_MEMORY_TEXT):
        return ResourceExhausted(
            f"{what}: the worker ran out of memory loading it ({text}); "
            "give the worker more memory or run fewer stages at once"
        )
    return ConfigError(f"{what} ({text}); {hint}")


def one_line(exc: BaseException) -> str:
    """What a failure says, everywhere it is said: the CLI, the Prefect UI, the catalog.

    ``error: …`` for a fault of the upload or the configuration (fix the input
    and try again), ``internal error: …`` for ours.
    """
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, PermanentError) and not isinstance(exc, InternalError):
        return f"error: {first}"
    if isinstance(exc, VidpipeError):
        return f"internal error: {first}"
    return f"internal error: {type(exc).__name__}: {first}"
