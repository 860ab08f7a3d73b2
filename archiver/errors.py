"""The archiver's exceptions: one root, a small tree, structured fields.

    ArchiverError
    ├── ConfigError (also ValueError)       bad configuration: file, key, problem -> exit 2
    ├── ArchiveLockedError                  another daemon holds ROOT/LOCK
    ├── StorageError (also OSError)         fsync/ENOSPC/EIO: stop, never retry lost writes
    ├── ManifestCorruptError                the chain or a segment is not what was written
    └── ZoomError                           talking to Zoom failed (status, code, endpoint, session)
        ├── ZoomAuthError                   token endpoint refused the credentials: fatal
        ├── ZoomRateLimited                 429 after the budget's own handling
        │   └── BudgetExhausted             a label paused for long (daily cap): park the work
        ├── ZoomTransientError              5xx, reset, timeout, truncated body (retryable)
        ├── ZoomResponseError (also ValueError)  a response that does not fit
        ├── ZoomSessionError                one session's request refused (403, 404 without
        │                                   12004, a gateway's HTML): retried with backoff
        ├── SessionGoneError                404 code 12004
        └── SyncTokenInvalid                400/404 code 300, or 7035: resync with FSync

Messages never contain secrets: callers pass endpoints (paths), never full URLs with tokens.
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Root of every error the archiver raises on purpose."""


class ConfigError(ArchiverError, ValueError):
    """The configuration cannot be used. `str()` names the file, the key and the problem."""

    def __init__(self, problem: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {problem}" if where else problem)


class ArchiveLockedError(ArchiverError):
    """Another archiver process holds the archive root's LOCK."""


class StorageError(ArchiverError, OSError):
    """A write to the archive failed in a way that must stop the daemon (EIO, ENOSPC)."""


class ManifestCorruptError(ArchiverError):
    """The manifest on disk is damaged beyond the torn-tail repair."""


class ZoomError(ArchiverError):
    """A failed exchange with Zoom, with the fields an operator needs to act on it."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        endpoint: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.endpoint = endpoint
        self.session_id = session_id
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", status),
                ("code", code),
                ("endpoint", endpoint),
                ("session_id", session_id),
            )
            if value is not None
        ]
        super().__init__(f"{message} ({', '.join(details)})" if details else message)


class ZoomAuthError(ZoomError):
    """The OAuth token endpoint refused the account's credentials: nothing can work until an
    operator fixes them. Never raised for a 401/403 on an API call (see `zoom/policy.py`)."""


class ZoomRateLimited(ZoomError):
    """Zoom answered 429 and the retry budget is spent."""


class ZoomTransientError(ZoomError):
    """A failure worth retrying: 5xx, connection reset, timeout, truncated body."""


class ZoomResponseError(ZoomError, ValueError):
    """Zoom answered, but not with what its schema promises."""


class ZoomSessionError(ZoomError):
    """A request about one session was refused in a way that says nothing about the account
    (a 403, a 404 without Zoom's code 12004, a gateway's HTML page): that session's failure,
    counted and retried with backoff, never the end of the run and never "session gone"."""


class SessionGoneError(ZoomError):
    """The session no longer exists upstream (404, code 12004)."""


class SyncTokenInvalid(ZoomError):
    """The sync token is invalid/expired (300) or too many new records (7035): FSync again."""
