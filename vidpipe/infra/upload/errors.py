"""The upload service's errors: leaves of the one tree in ``vidpipe.infra.errors``.

Each carries the HTTP status the tus protocol gives it. ``Refused`` and its
children are permanent: the client must change the request. ``Locked`` and
``Unavailable`` are transient: the same request may succeed later.
"""

from __future__ import annotations

from vidpipe.infra.errors import PermanentError, TransientError


class Refused(PermanentError):
    """A request the protocol turns down; ``status`` is the HTTP answer."""

    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class BadRequest(Refused, ValueError):
    status = 400


class Unauthorized(Refused):
    status = 401


class Forbidden(Refused):
    status = 403


class NotFound(Refused, LookupError):
    status = 404


class Conflict(Refused):
    """The client's Upload-Offset is not the server's."""

    status = 409


class Gone(Refused):
    """Expired, terminated or failed."""

    status = 410


class PreconditionFailed(Refused):
    """No Tus-Resumable, or a version other than 1.0.0."""

    status = 412


class TooLarge(Refused):
    status = 413


class UnsupportedMediaType(Refused):
    status = 415


class UploadFailed(Refused):
    """The whole file does not match the sha256 the client declared."""

    status = 422


class ChecksumMismatch(Refused):
    """Upload-Checksum does not match the PATCH body (tus checksum extension)."""

    status = 460


class Locked(TransientError):
    """Another request holds this upload right now."""

    status = 423


class Unavailable(TransientError):
    """Storage or the database failed; retry."""

    status = 503
