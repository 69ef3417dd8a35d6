"""The one place where handler outcomes become gRPC statuses and log lines.

Every unary call passes through ``CsiInterceptor``: it logs the method, the volume it concerns,
the duration and the resulting code in one line, and aborts the call with the status that
``csi.errors.status_for`` picks. An exception nobody expected becomes INTERNAL, with its
traceback logged exactly once here and a status message that points at the log instead of
echoing text that might contain anything.

Request bodies are logged at DEBUG only, from a copy in which every field the spec marks with
the ``csi_secret`` option has its values replaced; the keys stay, because "which secret keys did
the CO send" is exactly what one needs to debug a StorageClass.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from csi.errors import status_for
from csi.v1 import csi_pb2

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
# protoc's stub types extensions as plain FieldDescriptors, which Extensions[] does not accept.
_CSI_SECRET = cast(Any, csi_pb2.csi_secret)
M = TypeVar("M", bound=Message)
# Identity and capability calls come every few seconds from liveness probes and sidecars, and
# kubelet asks for the stats of every published volume every minute; they are logged at DEBUG
# when they succeed so that the INFO log shows volume operations. (An abnormal volume is still
# a successful stats call; the node service logs it as a warning.)
_ROUTINE = frozenset({"Probe", "GetPluginInfo", "GetPluginCapabilities", "ControllerGetCapabilities",
                      "NodeGetCapabilities", "NodeGetInfo", "NodeGetVolumeStats"})


@functools.cache
def _secret_fields(descriptor: Descriptor) -> tuple[str, ...]:
    """Names of the fields marked ``(csi_secret) = true``, and in CSI v0.3, which has no such
    option, the fields named ``*_secrets``.

    The spec only marks top-level request fields (tests/csi/test_proto.py checks that), so there
    is no need to walk nested messages.
    """
    v0 = descriptor.file.package == "csi.v0"
    return tuple(field.name for field in descriptor.fields
                 if field.GetOptions().Extensions[_CSI_SECRET] or (v0 and field.name.endswith("_secrets")))


def redacted(request: M) -> M:
    """A copy of ``request`` whose secret maps keep their keys but not their values."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in _secret_fields(request.DESCRIPTOR):
        secrets = getattr(copy, name)
        for key in list(secrets):  # a protobuf map skips entries when changed while iterated
            secrets[key] = REDACTED
    return copy


def volume_of(request: Message) -> str:
    """The volume a request is about: its ``volume_id``, else its ``name`` (CreateVolume), else "-"."""
    fields = request.DESCRIPTOR.fields_by_name
    for name in ("volume_id", "name"):
        if name in fields and getattr(request, name):
            return str(getattr(request, name))
    return "-"


class CsiInterceptor(grpc.ServerInterceptor):
    """Translate errors and log every unary-unary call (all CSI RPCs we serve are unary)."""

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rpartition("/")[2]
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(self._call, method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _call(self, method: str, behavior: Callable[[Message, Any], Message], request: Message,
              context: Any) -> Message:
        start = time.monotonic()
        volume = volume_of(request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s request: %s", method, text_format.MessageToString(redacted(request), as_one_line=True))
        try:
            response = behavior(request, context)
        except Exception as exc:
            known = status_for(exc)
            if known is None:
                code, message = grpc.StatusCode.INTERNAL, (
                    f"internal error in {method} ({type(exc).__name__}); the obsfs-csi log has the traceback")
                log.exception("%s volume=%s code=%s %.0f ms: unexpected error", method, volume, code.name,
                              _ms(start))
            else:
                code, message = known
                log.warning("%s volume=%s code=%s %.0f ms: %s", method, volume, code.name, _ms(start), message)
            context.abort(code, message)  # raises; grpc has no type hints to say so
            raise AssertionError("context.abort returned") from None
        level = logging.DEBUG if method in _ROUTINE else logging.INFO
        log.log(level, "%s volume=%s code=OK %.0f ms", method, volume, _ms(start))
        return response


def _ms(start: float) -> float:
    return (time.monotonic() - start) * 1000
