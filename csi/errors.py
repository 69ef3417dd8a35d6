"""The errors CSI handlers raise, and the one table that turns any error into a gRPC status.

Handlers never call ``context.abort`` or ``set_code`` themselves: they raise one of the types
below, or let an ``obsfs.errors`` type from the backend pass through, and the interceptor asks
``status_for`` once. Messages must tell the user what to fix and never contain a secret value;
naming a secret *key* is fine and encouraged.
"""

from __future__ import annotations

import grpc

from obsfs import errors as obsfs_errors


class CsiError(Exception):
    """Base of the errors a handler raises on purpose; ``code`` is the status it becomes."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(CsiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CsiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CsiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(CsiError):
    """Another call on the same volume is still running."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(CsiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(CsiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(CsiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(CsiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CsiError):
    """Something outside the plugin (the store, a flush still running) is not ready; the CO retries."""

    code = grpc.StatusCode.UNAVAILABLE


class Internal(CsiError):
    """A step on the node failed for a reason the message explains (a mount command, a lost flush).

    Unlike an unexpected exception, it is logged as one line with its message and no traceback.
    """

    code = grpc.StatusCode.INTERNAL


_HINT_KEYS = "check the secret keys accessKeyID and secretAccessKey"

# Errors from the obsfs backend, with a hint for the operator where the backend's own message
# cannot know the CSI context. Looked up along the exception's MRO, so BucketNotFound finds the
# NotFound row unless it has its own.
_OBSFS: dict[type[BaseException], tuple[grpc.StatusCode, str]] = {
    obsfs_errors.BadCredentials: (grpc.StatusCode.UNAUTHENTICATED, _HINT_KEYS),
    obsfs_errors.AccessDenied: (grpc.StatusCode.PERMISSION_DENIED,
                                "the keys in accessKeyID/secretAccessKey lack a permission this call needs"),
    obsfs_errors.NotFound: (grpc.StatusCode.NOT_FOUND, ""),
    obsfs_errors.TemporaryFailure: (grpc.StatusCode.UNAVAILABLE,
                                    "the store could not be reached or kept failing; check the secret "
                                    "key endpoint and the network; the CO will retry"),
    obsfs_errors.Conflict: (grpc.StatusCode.FAILED_PRECONDITION, ""),
    obsfs_errors.PreconditionFailed: (grpc.StatusCode.FAILED_PRECONDITION, ""),
    obsfs_errors.InvalidRequest: (grpc.StatusCode.INVALID_ARGUMENT, ""),
    obsfs_errors.ConfigError: (grpc.StatusCode.INVALID_ARGUMENT, ""),
    # The generated servicer base class raises this for every RPC we do not implement.
    NotImplementedError: (grpc.StatusCode.UNIMPLEMENTED,
                          "obsfs-csi does not offer this call; GetPluginCapabilities and the "
                          "services' GetCapabilities calls list what it does"),
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message for a known error type, or None for a bug (INTERNAL)."""
    if isinstance(exc, CsiError):
        return exc.code, str(exc)
    for kind in type(exc).__mro__:
        if kind in _OBSFS:
            code, hint = _OBSFS[kind]
            message = str(exc) or kind.__name__
            return code, f"{message} ({hint})" if hint else message
    return None
