"""Catalog errors, mapped from psycopg at this boundary, and DSN redaction.

A malformed DSN, bad credentials or a missing database are
``CatalogConfigError`` (permanent); an unreachable or restarting server, a
dropped connection or a lock timeout are ``CatalogUnavailable`` (transient,
retried by tasks).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pgerrors

from vidpipe.infra.errors import ConfigError, InternalError, PermanentError, TransientError

_PASSWORD_IN_URI = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class CatalogConfigError(ConfigError):
    """The catalog's DSN, credentials, database or privileges are wrong; fix the config."""


class CatalogUnavailable(TransientError, ConnectionError):
    """The database cannot be reached right now, or a lock or transaction must be retried."""


class IllegalTransition(InternalError, ValueError):
    """A video status change that ``TRANSITIONS`` does not allow."""


class VideoNotFound(PermanentError, LookupError):
    """No video with that id is in the catalog."""


class CatalogDataError(PermanentError, ValueError):
    """The data was refused by a constraint (bad value, wrong vector size...)."""


def redact(text: str) -> str:
    """``text`` with any password in a DSN replaced by ``***``."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URI.sub(r"\1***@", text))


def connect_error(exc: psycopg.Error, where: str) -> Exception:
    msg = redact(str(exc).strip())
    low = msg.lower()
    if any(
        s in low
        for s in (
            "authentication failed",
            "no password supplied",
            "password authentication",
            "no pg_hba.conf entry",
        )
    ):
        return CatalogConfigError(
            f"the catalog database at {where} refused the credentials: {msg}. "
            "Fix the user and password in VIDPIPE_DATABASE_URL."
        )
    if "does not exist" in low:
        return CatalogConfigError(
            f"the catalog database at {where} is missing something: {msg}. "
            "Create the database and role, or fix VIDPIPE_DATABASE_URL."
        )
    if "ssl" in low and ("not support" in low or "required" in low):
        return CatalogConfigError(
            f"the catalog database at {where} and VIDPIPE_DATABASE_URL disagree on SSL: {msg}. "
            "Set sslmode in the DSN to what the server offers."
        )
    if "invalid" in low and "connection option" in low:
        return CatalogConfigError(f"VIDPIPE_DATABASE_URL is malformed: {msg}")
    return CatalogUnavailable(
        f"cannot reach the catalog database at {where}: {msg}. "
        "Check that PostgreSQL is running and reachable; the task will be retried."
    )


def query_error(exc: psycopg.Error) -> Exception:
    msg = redact(str(exc).strip())
    if isinstance(exc, pgerrors.LockNotAvailable):
        return CatalogUnavailable(f"timed out waiting for a catalog lock: {msg}")
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return CatalogConfigError(
            f"the catalog role lacks a privilege: {msg}. Grant it, or connect as the "
            "schema's owner (migrations need CREATE on the database, and pgvector installed)."
        )
    if isinstance(exc, pgerrors.UndefinedFile | pgerrors.FeatureNotSupported) and (
        "extension" in msg
    ):
        return CatalogConfigError(
            f"pgvector is not available on the catalog server: {msg}. Install pgvector "
            "(or use the embedded server, which ships it)."
        )
    if isinstance(exc, psycopg.OperationalError):  # dropped connection, shutdown, deadlock...
        return CatalogUnavailable(f"catalog database error, retry: {msg}")
    if isinstance(exc, psycopg.IntegrityError | psycopg.DataError):
        return CatalogDataError(f"the catalog refused the data: {msg}")
    return InternalError(f"catalog query failed: {msg}")


@contextmanager
def mapped_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise query_error(exc) from exc
