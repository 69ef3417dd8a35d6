"""HEADs and small PUTs of our own, signed here and sent on one keep-alive connection per thread;
and listings, small GETs and multi-object deletes, on a connection of their own each.

Why not the SDK: a cold ``ls -l`` HEADs every entry, and ``cp -r`` of small files PUTs every
one, and the SDK spends most of its CPU per request on things these do not need (a new TCP
connection, since it sends ``Connection: close``; header renaming and percent-coding in several
passes; result objects; debug strings built with logging off): 0.61 ms per PUT of 30 KiB
against 0.21 ms here (docs/write-back.md, small files). Its keep-alive mode is no way out:
idle connections wait in an unbounded queue and one the server closed fails the next call on
it, which we could not tell from an outage.

Here each thread keeps one connection and knows whether a request went out on a fresh one or a
reused one. A HEAD is idempotent, so when a reused connection turns out to be closed by the
server (reset, broken pipe, or closed before the status line), the request is sent again at
once on a new connection: one extra round trip, not a retry with backoff, and the store is not
marked unreachable. A failure on a fresh connection, or a timeout on any, is a real transport
error as before. A PUT is never sent again here, whatever the failure: the server may have
acted on it, so the caller's retry decides, and a conditional PUT repeated that way meets the
conflict checks of obsfs/fs/uploads.py (an ETag that is already ours is no conflict). GETs do
not reuse connections: keep-alive slows small GETs on Ceph RGW 16 by about 40 ms each (see
docs/write-back.md and the SDK facts). A listing is a GET, and so is the read of a directory's
attribute index, so each gets a new connection that closes after the answer, as the SDK's
would; they come here so that a mount can answer its first calls (the bucket check, the root's
listing, HEADs) and list a directory before the SDK is imported (addressing.py). Multi-object
deletes come here for the same reason (deletexml.py). File data still comes through the SDK.

Signatures are the SDK's three (v2, v4, and OBS's own, which is v2 with ``x-obs-`` names),
computed the same way over the same addressing (path or virtual-host style) the SDK chose, and
header values are percent-coded as the SDK codes them, so a PUT from here stores what one from
the SDK would.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import hashlib
import hmac
import http.client
import re
import select
import socket
import ssl
import threading
import time
import weakref
from base64 import b64encode
from collections.abc import Mapping, Sequence
from urllib.parse import quote, unquote

from obsfs.backend.deletexml import delete_body

# Headers the SDK hands back as they are; every other header is dropped unless it carries the
# x-amz-/x-obs- prefix (stripped, value percent-decoded). ObjectInfo.metadata keeps that shape.
_KEPT_HEADERS = frozenset((
    "content-type", "content-md5", "checksum-crc64ecma", "content-length", "content-language", "expires",
    "origin", "cache-control", "content-disposition", "content-encoding", "x-default-storage-class",
    "location", "date", "etag", "host", "last-modified", "content-range", "x-reserved",
    "access-control-allow-origin", "access-control-allow-headers", "access-control-max-age",
    "access-control-allow-methods", "access-control-expose-headers", "connection", "x-reserved-indicator",
    "x-oef-request-id"))
_PREFIXES = (("x-amz-meta-", True), ("x-amz-", False), ("x-obs-meta-", True), ("x-obs-", False))
_UNSIGNED = "UNSIGNED-PAYLOAD"
# Characters the SDK leaves as they are in header values, and in the names of metadata headers.
_VALUE_SAFE = " ;/?:@&=+$,'*"
_META_NAME_SAFE = " ;/?:@&=+$,"
_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
# A connection idle longer than this is replaced before use rather than risked: servers close
# idle keep-alive connections after a few seconds (RGW's beast frontend, nginx, OBS's front ends).
IDLE_REUSE = 4.0


def object_path(key: str) -> str:
    """A key as the SDK puts it in a URL (and in the string it signs): UTF-8, percent-encoded,
    ``/`` and ``~`` left as they are."""
    return quote(key, safe="/~")


def header_map(headers: Mapping[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    """Response headers the way the SDK reports them: lower-case names, prefixes stripped,
    user metadata percent-decoded, anything else dropped."""
    out: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    for raw, value in items:
        name = raw.lower()
        if name in _KEPT_HEADERS:
            out[name] = value
            continue
        for prefix, is_meta in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                out[unquote(name) if is_meta else name] = unquote(value)
                break
    return out


def put_headers(prefix: str, content_type: str, length: int, metadata: Mapping[str, str],
                conditions: Mapping[str, str]) -> dict[str, str]:
    """The headers of a PUT as the SDK's putFile sends them (before signing): user metadata under
    the dialect's ``prefix``, every value percent-coded by the SDK's rule."""
    meta = prefix + "meta-"
    headers = {"Content-Type": quote(content_type, safe=_VALUE_SAFE), "Content-Length": str(length)}
    headers.update((quote(meta + name, safe=_META_NAME_SAFE), quote(value, safe=_VALUE_SAFE))
                   for name, value in metadata.items())
    headers.update((name, quote(value, safe=_VALUE_SAFE)) for name, value in conditions.items())
    return headers


@dataclasses.dataclass(frozen=True)
class Signer:
    """Signs a request on one key in one of the SDK's dialects: ``v2``, ``obs`` or ``v4``."""

    dialect: str
    access_key: str
    secret_key: str
    region: str
    host: str  # the Host header: the SDK's, with the port unless it is 80 or 443
    bucket_in_path: bool  # path style: /bucket/key; virtual-host style: /key on bucket.host

    @property
    def prefix(self) -> str:
        """The dialect's prefix of its own headers (and, with ``meta-``, of user metadata)."""
        return "x-obs-" if self.dialect == "obs" else "x-amz-"

    def headers(self, method: str, bucket: str, key: str, now: float,
                extra: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """The request path and the headers that authenticate it at time ``now`` (epoch seconds),
        ``extra`` (already coded as sent) among them. Without keys, the request is anonymous, as
        with the SDK."""
        path = f"/{bucket}/{object_path(key)}" if self.bucket_in_path else f"/{object_path(key)}"
        # v2's resource is /bucket/key in either addressing style.
        return path, self._sign(method, path, "", f"/{bucket}/{object_path(key)}", now, extra or {})

    def listing(self, bucket: str, query: Mapping[str, str], now: float) -> tuple[str, dict[str, str]]:
        """The path (with ``query``) and headers of a GET on the bucket itself: a listing. None of
        a listing's parameters is a sub-resource that v2 signs; v4 signs them all."""
        base, resource = self._bucket_paths(bucket)
        canonical = "&".join(f"{quote(name, safe='/')}={quote(value, safe='')}"
                             for name, value in sorted(query.items()))
        headers = self._sign("GET", base, canonical, resource, now, {})
        return (f"{base}?{canonical}" if canonical else base), headers

    def multi_delete(self, bucket: str, now: float, extra: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The path and headers of a multi-object delete: a POST on the bucket's ``delete``
        sub-resource, which v2 signs in the resource (``/bucket?delete``), as the SDK does."""
        base, resource = self._bucket_paths(bucket)
        return f"{base}?delete", self._sign("POST", base, "delete=", f"{resource}?delete", now, extra)

    def _bucket_paths(self, bucket: str) -> tuple[str, str]:
        """A request on the bucket itself: its path, and v2's resource for it as the SDK makes
        it (/bucket in path style, /bucket/ in virtual-host style)."""
        if self.bucket_in_path:
            return f"/{bucket}", f"/{bucket}"
        return "/", f"/{bucket}/"

    def _sign(self, method: str, path: str, query: str, resource: str, now: float,
              extra: Mapping[str, str]) -> dict[str, str]:
        if self.dialect == "v4":
            return self._v4(method, path, query, now, extra)
        date = _http_date(int(now))
        headers = {"Host": self.host, "Date": date, **extra}
        if self.access_key and self.secret_key:
            # The dialect's own headers are signed by name (user metadata with its value
            # trimmed), as the SDK signs them.
            lower = {name.lower(): value for name, value in extra.items()}
            meta = self.prefix + "meta-"
            own = "".join(f"{name}:{value.strip() if name.startswith(meta) else value}\n"
                          for name, value in sorted(lower.items()) if name.startswith(self.prefix))
            to_sign = (f"{method}\n{lower.get('content-md5', '')}\n{lower.get('content-type', '')}\n{date}\n"
                       f"{own}{resource}")
            mac = hmac.new(self.secret_key.encode(), to_sign.encode(), hashlib.sha1).digest()
            scheme = "OBS" if self.dialect == "obs" else "AWS"
            headers["Authorization"] = f"{scheme} {self.access_key}:{b64encode(mac).decode()}"
        return headers

    def _v4(self, method: str, path: str, query: str, now: float, extra: Mapping[str, str]) -> dict[str, str]:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        headers = {"Host": self.host, "x-amz-content-sha256": _UNSIGNED, "x-amz-date": stamp, **extra}
        if not (self.access_key and self.secret_key):
            return headers
        day = stamp[:8]
        scope = f"{day}/{self.region}/s3/aws4_request"
        # Every header sent is signed, as the SDK signs them.
        signed = sorted((name.lower(), value) for name, value in headers.items())
        names = ";".join(name for name, _ in signed)
        lines = "".join(f"{name}:{value}\n" for name, value in signed)
        canonical = f"{method}\n{path}\n{query}\n{lines}\n{names}\n{_UNSIGNED}"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(_signing_key(self.secret_key, day, self.region), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope},"
                                    f"SignedHeaders={names},Signature={signature}")
        return headers


@functools.lru_cache(maxsize=2)
def _http_date(second: int) -> str:
    """The Date header of a whole second: formatted once, not once per HEAD."""
    return email.utils.formatdate(second, usegmt=True)


_keys: dict[tuple[str, str, str], bytes] = {}


def _signing_key(secret: str, day: str, region: str) -> bytes:
    """v4's derived key changes once a day: derive it once, not per request (four HMACs)."""
    found = _keys.get((secret, day, region))
    if found is None:
        key = ("AWS4" + secret).encode()
        for part in (day, region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        _keys.clear()  # one day (and one mount's keys) at a time
        _keys[(secret, day, region)] = found = key
    return found


@dataclasses.dataclass(frozen=True)
class Reply:
    """An answer: status, the headers as ``header_map`` gives them, and the error code of a
    failed PUT (a HEAD has no body)."""

    status: int
    header: dict[str, str]
    errorCode: str | None = None  # noqa: N815 -- read where SDK results are read
    body: bytes = b""  # a listing's, a GET's or a delete's; a HEAD's or PUT's is not kept


# How a reused connection fails when the server had closed it before our request reached it:
# a reset, a broken pipe, or the end of the stream before the first byte of an answer.
_STALE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_MAX_HEAD = 64 << 10  # a status line and headers; more than this is not an answer
_MAX_BODY = 1 << 20  # a PUT's answer is empty or an error document


class _Conn:
    """One keep-alive connection and when it last finished an answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        """Worth a request: not idle for long (a server or a middlebox may have dropped it
        without a word), and nothing to read (an idle connection that is readable has been
        closed by the server, or holds bytes no request asked for)."""
        if time.monotonic() - self.idle_since > IDLE_REUSE:
            return False
        return not select.select([self.sock], [], [], 0)[0]


class _Slot:
    """One thread's connection. Dropped with its thread (thread-local storage), which closes it:
    idle connections never outnumber the threads that made them."""

    def __init__(self) -> None:
        self.conn: _Conn | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.sock.close()
            self.conn = None

    def __del__(self) -> None:
        self.close()


class LeanClient:
    """Sends HEADs, small PUTs and listings for one bucket; shared by all threads, each on its own
    connection (a listing on one of its own)."""

    def __init__(self, signer: Signer, bucket: str, *, negotiate: bool, address: tuple[str, int],
                 tls: ssl.SSLContext | None, timeout: float) -> None:
        self.signer = signer
        self.bucket = bucket
        # signature "obs" on a host name: as the SDK does, ask the bucket's host once whether it
        # is OBS (and speak OBS) or another S3 server (and speak v2).
        self._negotiated = not negotiate
        self.address = address
        self.tls = tls
        self.timeout = timeout
        self._local = threading.local()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()

    def head(self, key: str) -> Reply:
        """HEAD ``key``; what the server answered when it cannot tell which signature it takes.
        Transport errors propagate as the SDK's do (OSError, HTTPException)."""
        probe = self._negotiate()
        return probe if probe is not None else self._request("HEAD", key)

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str],
            conditions: Mapping[str, str]) -> Reply:
        """PUT ``body`` at ``key`` with the headers the SDK's putFile would send. Sent once: a
        failure propagates as a transport error (module docstring)."""
        probe = self._negotiate()
        if probe is not None:
            return probe
        headers = put_headers(self.signer.prefix, content_type, len(body), metadata, conditions)
        return self._request("PUT", key, headers, body)

    def list(self, query: Mapping[str, str]) -> Reply:
        """A listing (GET on the bucket with ``query``), with its body."""
        probe = self._negotiate()
        if probe is not None:
            return probe
        return self._one_shot(*self.signer.listing(self.bucket, query, time.time()))

    def get(self, key: str, extra: Mapping[str, str]) -> Reply:
        """GET ``key`` with ``extra`` headers (a Range), the body read whole: for small objects
        that a listing needs (an attribute index), which should not wait for the SDK's import."""
        probe = self._negotiate()
        if probe is not None:
            return probe
        return self._one_shot(*self.signer.headers("GET", self.bucket, key, time.time(), extra))

    def delete_batch(self, keys: Sequence[str]) -> Reply:
        """One multi-object delete of ``keys`` (at most 1,000), with its answer's body."""
        probe = self._negotiate()
        if probe is not None:
            return probe
        body = delete_body(keys)
        extra = {"Content-MD5": b64encode(hashlib.md5(body).digest()).decode(), "Content-Length": str(len(body))}
        return self._one_shot(*self.signer.multi_delete(self.bucket, time.time(), extra), method="POST", body=body)

    def _one_shot(self, path: str, headers: Mapping[str, str], *, method: str = "GET", body: bytes = b"") -> Reply:
        """A request on a connection of its own, closed after the answer, as the SDK sends it: a
        GET on a reused connection answered about 40 ms late on RGW (module docstring), and
        only a HEAD is ever sent again here."""
        host, port = self.address
        conn = (http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.tls)
                if self.tls is not None else http.client.HTTPConnection(host, port, timeout=self.timeout))
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in [*headers.items(), ("Connection", "close")]:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            answer = conn.getresponse()
            content = answer.read()
        finally:
            conn.close()
        code = _ERROR_CODE.search(content) if answer.status >= 300 else None
        return Reply(status=answer.status, header=header_map(answer.getheaders()),
                     errorCode=code.group(1).decode("utf-8", "replace") if code else None, body=content)

    def _negotiate(self) -> Reply | None:
        """Settle the dialect first if asked to; the probe's answer when it stands for the call."""
        if not self._negotiated:
            probe = self._request("HEAD", None)
            if probe.status >= 500 or probe.status == 404:
                return probe  # as the SDK: that answer stands for the call, the next one asks again
            # The same test as the SDK's: x-obs-api (or api), stripped to "api", of 3.0 or later.
            dialect = "obs" if probe.header.get("api", "0.0") >= "3.0" else "v2"
            self.signer = dataclasses.replace(self.signer, dialect=dialect)
            self._negotiated = True
        return None

    def _slot(self) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = _Slot()
            self._slots.add(slot)
        return slot

    def _connect(self) -> _Conn:
        host, port = self.address
        sock = socket.create_connection((host, port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return _Conn(sock)

    def _request(self, method: str, key: str | None, extra: Mapping[str, str] | None = None,
                 body: bytes = b"") -> Reply:
        """``method`` on ``key`` (None: the unsigned API version probe, a HEAD): sent once, or a
        HEAD twice when the first went out on a connection the server had already closed."""
        slot = self._slot()
        if slot.conn is not None and not slot.conn.usable():
            slot.close()
        reused = slot.conn is not None
        try:
            try:
                return self._exchange(slot, method, key, extra, body)
            except _STALE:
                if not reused or method != "HEAD":
                    raise
                slot.close()
                return self._exchange(slot, method, key, extra, body)
        except BaseException:
            slot.close()  # a timeout or a half-read answer leaves the connection in an unknown state
            raise

    def _exchange(self, slot: _Slot, method: str, key: str | None, extra: Mapping[str, str] | None,
                  body: bytes) -> Reply:
        if slot.conn is None:
            slot.conn = self._connect()
        conn = slot.conn
        if key is None:
            path, headers = "/?apiversion", {"Host": self.signer.host}
        else:
            path, headers = self.signer.headers(method, self.bucket, key, time.time(), extra)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        # One send: headers and a small body in separate segments would wait on delayed ACKs.
        conn.sock.sendall(f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body)
        status, fields, keep, content = _read_answer(conn.sock, has_body=method != "HEAD")
        if keep:
            conn.idle_since = time.monotonic()
        else:
            slot.close()
        code = _ERROR_CODE.search(content) if status >= 300 else None
        return Reply(status=status, header=header_map(fields),
                     errorCode=code.group(1).decode("utf-8", "replace") if code else None)

    def close(self) -> None:
        for slot in list(self._slots):
            slot.close()


def _read_answer(sock: socket.socket, *, has_body: bool) -> tuple[int, list[tuple[str, str]], bool, bytes]:
    """Status, headers, whether the connection may carry another request, and the body, of one
    answer (to a HEAD: never a body, whatever its headers say)."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > _MAX_HEAD:
            raise http.client.LineTooLong("answer headers")
        chunk = sock.recv(16384)
        if not chunk:
            if data:
                raise http.client.IncompleteRead(data)
            raise http.client.RemoteDisconnected("the server closed the connection without an answer")
        data += chunk
    status_line, *lines = data[:end].decode("iso-8859-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    # No interim (1xx) answers either: we send no Expect, and nothing else asks for one.
    if not version.startswith("HTTP/") or not rest[:3].isdigit() or rest[0] == "1":
        raise http.client.BadStatusLine(status_line)
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and fields:  # an obsolete folded continuation
            fields[-1] = (fields[-1][0], f"{fields[-1][1]} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise http.client.HTTPException(f"malformed header line in an answer: {line!r}")
        fields.append((name.strip(), value.strip()))
    tokens = ",".join(v for n, v in fields if n.lower() == "connection").lower()
    keep = version == "HTTP/1.1" and "close" not in tokens
    data = data[end + 4:]
    status = int(rest[:3])
    # 204 and 304 answers end at their headers whatever they say (RFC 9112, 6.3): reading on for
    # a body would wait until the server closed or the socket timed out.
    has_body = has_body and status not in (204, 304)
    if has_body:
        data, keep = _read_body(sock, fields, data, keep)
    # Bytes past the answer were never asked for: the stream cannot be trusted for another.
    return status, fields, keep and not (data and not has_body), data if has_body else b""


def _read_body(sock: socket.socket, fields: list[tuple[str, str]], data: bytes, keep: bool) -> tuple[bytes, bool]:
    """The body after the headers (``data``: what came with them) and whether the connection may
    go on. With a length: exactly that much. Otherwise (chunked, or up to the end of the stream)
    everything until the server closes or sends the last chunk, and the connection is not
    reused: a PUT's answer is small, and framing errors must never leak into the next answer."""
    length = next((v for n, v in fields if n.lower() == "content-length"), None)
    if length is not None and length.isdigit() and int(length) <= _MAX_BODY:
        want = int(length)
        while len(data) < want:
            chunk = sock.recv(min(65536, want - len(data)))
            if not chunk:
                raise http.client.IncompleteRead(data)
            data += chunk
        return data, keep and len(data) == want
    while len(data) <= _MAX_BODY and not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data, False
