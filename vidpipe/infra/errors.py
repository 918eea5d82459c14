"""One exception tree for vidpipe.

``PermanentError`` means a retry cannot help (bad input, bad config): fail
fast with a message a user can act on. ``TransientError`` means it might
(storage or database hiccup, a preempted worker): tasks retry only these.
Like PyAV's errors, the leaves also subclass the matching builtin where one
fits, so callers can catch either.
"""

from __future__ import annotations


class VidpipeError(Exception):
    """Base of every error vidpipe raises on purpose."""

    retryable: bool = False


class PermanentError(VidpipeError):
    """Retrying will not help; the message says what to change."""


class InvalidMedia(PermanentError, ValueError):
    """The upload is not a video or audio file vidpipe can read."""


class UnsupportedCodec(InvalidMedia):
    """The container is fine but a stream's codec is not supported."""


class LimitExceeded(PermanentError, ValueError):
    """The upload is over a configured limit (size, duration, pixels, fps)."""


class ConfigError(PermanentError, ValueError):
    """The configuration is invalid."""


class TransientError(VidpipeError):
    """A retry may succeed (I/O hiccup, killed worker)."""

    retryable = True


class StorageError(TransientError, OSError):
    """Reading or writing the object store failed."""


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


class PlaylistInvalid(PermanentError):
    """The HLS output failed validation; it is never published."""
