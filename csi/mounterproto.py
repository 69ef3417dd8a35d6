"""The wire protocol between the node plugin and ``obsfs-mounter``: one JSON line each way.

A client connects, writes one request line and reads one answer line; the connection then ends.
One call per connection keeps both sides free of framing state and lets a call that outlives
its client (a slow ``obsfs mount``) finish without anyone having to notice the client left.

Requests carry the protocol version ``v`` and an ``op``; answers carry ``v`` and either
``result`` or ``error``::

    {"v": 1, "op": "hello"}
        -> {"v": 1, "result": {"versions": [1], "obsfs": "0.1.0", "pid": 7}}
    {"v": 1, "op": "mount", "source": "bucket:/prefix", "mountpoint": "/abs", "options": ["url=...", ...]}
        -> {"v": 1, "result": {"exit": 0, "message": "(no message)"}}
    {"v": 1, "op": "umount", "mountpoint": "/abs"}  -> {"v": 1, "result": {"exit": 0, "message": "..."}}
    {"v": 1, "op": "alive", "mountpoint": "/abs"}   -> {"v": 1, "result": {"alive": true}}  (or false, null)
    anything refused -> {"v": 1, "error": {"code": "INVALID_ARGUMENT", "message": "..."}}

``exit`` and ``message`` are ``obsfs``'s own exit status and the last line of its stderr, so the
plugin maps them exactly as it maps a command it ran itself. An error ``code`` is the gRPC status
name of the ``csi.errors`` type the mounter raised, so a refusal reaches the CO unchanged
(ABORTED while another call on the mount point runs, UNAVAILABLE when obsfs did not finish in
time). The store keys never travel here: options name the 0600 ``passwd_file`` that the plugin
wrote in the state directory, which both containers mount at the same path.

Compatibility: a later version may add ops and fields; a server answers a request of a version
it does not speak with FAILED_PRECONDITION and lists its ``versions`` in ``hello``, so a newer
plugin can fall back. Fields a server does not know are refused, never ignored: a silently
dropped mount option would mount something else than was asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from csi.errors import (
    Aborted,
    CsiError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

VERSION = 1
MAX_LINE = 64 * 1024  # a mount request with every option is about 1 KiB
_ERRORS: dict[str, type[CsiError]] = {cls.code.name: cls for cls in (
    InvalidArgument, NotFound, Aborted, FailedPrecondition, PermissionDenied, Unavailable, Internal)}
# op -> its fields besides v and op, each with its type
_FIELDS: dict[str, dict[str, type]] = {
    "hello": {},
    "mount": {"source": str, "mountpoint": str, "options": list},
    "umount": {"mountpoint": str},
    "alive": {"mountpoint": str},
}


@dataclass(frozen=True)
class Request:
    op: str
    source: str = ""
    mountpoint: str = ""
    options: tuple[str, ...] = ()


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def request(op: str, **fields: Any) -> dict[str, Any]:
    return {"v": VERSION, "op": op, **fields}


def answer(result: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "result": result}


def refusal(exc: CsiError) -> dict[str, Any]:
    return {"v": VERSION, "error": {"code": exc.code.name, "message": str(exc)}}


def _document(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise InvalidArgument(f"expected one JSON line of at most {MAX_LINE} bytes")
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise InvalidArgument(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("expected a JSON object")
    return doc


def _text(value: str, name: str) -> str:
    if not value or "\0" in value:
        raise InvalidArgument(f"{name} must be a non-empty string without NUL")
    return value


def parse_request(line: bytes) -> Request:
    """The request in ``line``, checked field by field; InvalidArgument or FailedPrecondition if not."""
    doc = _document(line)
    if doc.get("v") != VERSION:
        raise FailedPrecondition(f"protocol version {doc.get('v')!r} is not spoken here; this mounter speaks "
                                 f"version {VERSION}")
    op = doc.get("op")
    if op not in _FIELDS:
        raise InvalidArgument(f"unknown op {op!r}; expected one of {', '.join(_FIELDS)}")
    fields = _FIELDS[op]
    extra = set(doc) - set(fields) - {"v", "op"}
    if extra:
        raise InvalidArgument(f"op {op} takes no field {sorted(extra)[0]!r}")
    for name, kind in fields.items():
        if not isinstance(doc.get(name), kind):
            raise InvalidArgument(f"op {op} needs the field {name!r} as a JSON {kind.__name__}")
    mountpoint = doc.get("mountpoint", "")
    if mountpoint and not _text(mountpoint, "mountpoint").startswith("/"):
        raise InvalidArgument(f"mountpoint {mountpoint!r} must be an absolute path")
    source = doc.get("source", "")
    if source and _text(source, "source").startswith("-"):
        raise InvalidArgument(f"source {source!r} must not start with '-'")
    options = doc.get("options", [])
    if not all(isinstance(option, str) and option and "\0" not in option for option in options):
        raise InvalidArgument("options must be non-empty strings without NUL")
    return Request(op=op, source=source, mountpoint=mountpoint, options=tuple(options))


def parse_answer(line: bytes) -> dict[str, Any]:
    """The ``result`` of an answer; the mounter's refusal as the CsiError it named."""
    try:
        doc = _document(line)
    except InvalidArgument as exc:
        raise Internal(f"the obsfs mounter gave a malformed answer ({exc})") from None
    error, result = doc.get("error"), doc.get("result")
    if isinstance(error, dict):
        kind = _ERRORS.get(str(error.get("code")), Internal)
        raise kind(f"obsfs mounter: {error.get('message')}")
    if doc.get("v") != VERSION or not isinstance(result, dict):
        raise Internal(f"the obsfs mounter gave an answer of another version or shape: {line[:200]!r}")
    return result
