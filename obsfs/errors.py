"""The few exception types obsfs raises.

Each layer raises these as values; exactly one boundary translates them: ``obsfs/fs/boundary.py`` into errno,
the CLI into an exit code plus one line, the CSI interceptor into a gRPC status. Messages never
contain credentials.
"""

from __future__ import annotations


class ObsfsError(Exception):
    """Base of every error obsfs raises on purpose."""


class StoreError(ObsfsError):
    """A request to the object store failed.

    ``status`` and ``code`` are what the server said (HTTP status, S3 error code), kept so that
    logs can name them; ``key`` is the object or bucket the call was about.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.key = key


class NotFound(StoreError):
    """The key (or bucket) does not exist."""


class BucketNotFound(NotFound):
    """The bucket itself does not exist, as opposed to one key in it."""


class AccessDenied(StoreError):
    """The credentials are valid but not allowed to do this."""


class BadCredentials(StoreError):
    """The server does not accept the access key or the signature."""


class PreconditionFailed(StoreError):
    """A conditional request (If-Match / If-None-Match) did not hold."""


class Conflict(StoreError):
    """The request conflicts with the bucket's state, e.g. deleting a bucket that is not empty."""


class TemporaryFailure(StoreError):
    """A failure worth retrying: network error, timeout, 5xx, 408, 429, SlowDown.

    Raised to callers only once the retry deadline has passed.
    """


class StoreStopped(StoreError):
    """An upload not sent, or let go of, because the mount is shutting down past its drain
    deadline. Not retried: the data stays in the journal for the next mount."""


class NotSupported(StoreError):
    """The server does not implement this request (HTTP 501, NotImplemented): e.g. a store without
    multi-object delete. Not retried; the caller uses another way."""


class InvalidRequest(StoreError):
    """The server rejected the request as malformed (4xx that is none of the above)."""


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a nursery's group: trio wraps even a single failure in a group,
    and the boundaries (errno, exit code, gRPC status) map single errors of our types."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if isinstance(e, ObsfsError)), leaves[0])


class ConfigError(ObsfsError):
    """The user's options, credentials file or mount point are not usable."""
