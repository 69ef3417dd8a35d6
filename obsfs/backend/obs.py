"""``ObjectStore`` over esdk-obs-python.

The SDK reports HTTP errors as result values and transport errors as plain exceptions; this
module is the one place that turns both into ``obsfs.errors`` types. The SDK's own retries are
off (``max_retry_count=0``): ``retry.py`` owns the policy so that every call has one deadline.
HEADs, small PUTs, listings, small GETs and multi-object deletes go through ``keepalive.py``
instead, and the SDK is imported only when a call first needs it (``ObsStore.client``): a mount
answers without it.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from obsfs.backend.addressing import addressing
from obsfs.backend.base import ListPage, ObjectInfo, ObjectStore, StoreConfig, bare_etag
from obsfs.backend.deletexml import DeleteAnswerUnreadable, delete_failures
from obsfs.backend.keepalive import LeanClient, Signer
from obsfs.backend.listxml import ListingUnreadable, parse_listing
from obsfs.errors import (
    AccessDenied,
    BadCredentials,
    BucketNotFound,
    Conflict,
    InvalidRequest,
    NotFound,
    NotSupported,
    PreconditionFailed,
    StoreError,
    TemporaryFailure,
)

log = logging.getLogger(__name__)

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_TEMP_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "RequestTimeTooSkewed"}
_CREDENTIAL_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthorizationHeaderMalformed"}
_STREAM_CHUNK = 1 << 20
# Conservative limit for a single copyObject; larger objects are copied part by part.
_MAX_SINGLE_COPY = 5 * (1 << 30)
_COPY_PART = 512 * (1 << 20)


# Files up to this size are PUT by keepalive.py, read whole into memory; larger ones stream
# through the SDK, whose CPU per request matters little next to their transfer.
LEAN_PUT_MAX = 1 << 20


def _conditions(if_match: str | None, if_none_match: bool) -> dict[str, str]:
    """The headers of a conditional write: replace exactly this version, or create only."""
    headers = {"If-Match": bare_etag(if_match)} if if_match else {}
    if if_none_match:
        headers["If-None-Match"] = "*"
    return headers


def classify(status: int, code: str | None, what: str, key: str | None) -> StoreError:
    """Map an HTTP status and S3 error code to our exception type, with a message a user can act on."""
    detail = f"{what}: HTTP {status}" + (f" {code}" if code else "")
    if status == 501 or code == "NotImplemented":
        return NotSupported(detail, status=status, code=code, key=key)
    if status in (408, 429) or status >= 500 or code in _TEMP_CODES:
        return TemporaryFailure(detail, status=status, code=code, key=key)
    if status == 404:
        if code == "NoSuchBucket":
            return BucketNotFound(f"{what}: the bucket does not exist", status=status, code=code, key=key)
        return NotFound(detail, status=status, code=code, key=key)
    if status == 403:
        if code == "InvalidAccessKeyId":
            return BadCredentials(f"{what}: the server does not know this access key", status=status,
                                  code=code, key=key)
        if code in _CREDENTIAL_CODES:
            return BadCredentials(f"{what}: the secret key does not match the access key", status=status,
                                  code=code, key=key)
        return AccessDenied(f"{what}: access denied", status=status, code=code, key=key)
    if status == 401 or code in _CREDENTIAL_CODES:
        return BadCredentials(f"{what}: not authenticated", status=status, code=code, key=key)
    if status == 412:
        return PreconditionFailed(detail, status=status, code=code, key=key)
    if status == 409:
        return Conflict(detail, status=status, code=code, key=key)
    return InvalidRequest(detail, status=status, code=code, key=key)


def operation_of(what: str) -> str:
    """The operation a request describes (``"HEAD key"``, ``"upload part 3 of key"``) as a metric
    label: its words up to the key, lower case, joined by ``_``. A fixed set, never a key."""
    words = what.split(" ")
    if words[0].isupper():  # HEAD, GET, PUT, COPY, DELETE, LIST (and "HEAD bucket", "LIST bucket")
        return "_".join(w.lower() for w in words[:2] if w in (words[0], "bucket"))
    return "_".join(words[:2])


def outcome_of(exc: StoreError) -> str:
    """A failed request as a metric label: what kind of answer the store gave, if any."""
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, PreconditionFailed):
        return "precondition_failed"
    if isinstance(exc, AccessDenied | BadCredentials):
        return "denied"
    if isinstance(exc, TemporaryFailure):
        return "unanswered" if exc.status is None else "server_error"
    return "error"


def _transport_error(exc: BaseException, what: str, key: str | None) -> StoreError:
    if isinstance(exc, ssl.SSLError):
        return InvalidRequest(f"{what}: TLS failed: {exc}", key=key)
    if isinstance(exc, socket.gaierror):
        return TemporaryFailure(f"{what}: cannot resolve the endpoint's host name", key=key)
    if isinstance(exc, ConnectionRefusedError):
        return TemporaryFailure(f"{what}: connection refused by the endpoint", key=key)
    if isinstance(exc, TimeoutError | socket.timeout):
        return TemporaryFailure(f"{what}: the endpoint did not answer in time", key=key)
    return TemporaryFailure(f"{what}: {type(exc).__name__}: {exc}", key=key)


@functools.lru_cache(maxsize=4096)
def _parse_http_date(value: str | None) -> float:
    """Cached: objects written in the same second share the string, and parsing it took 11 us,
    a tenth of the CPU a HEAD costs us (a cold ``ls -l`` of 10,000 parses 10,000)."""
    if not value:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0


@functools.cache
def sdk() -> Any:
    """The SDK's module, imported when first needed (``ObsStore.client``; see addressing.py)."""
    import obs  # type: ignore[import-untyped]

    return obs


def _check_key(key: str) -> None:
    # The SDK turns an empty key into a request on the bucket itself.
    if not key:
        raise InvalidRequest("empty object key")


class ObsStore(ObjectStore):
    """One bucket through one shared, thread-safe ObsClient."""

    def __init__(self, config: StoreConfig, bucket: str) -> None:
        self.config = config
        self.bucket = bucket
        # The SDK's True loads no CA at all.
        self._ssl_verify: bool | str = SYSTEM_CA_BUNDLE if config.ssl_verify is True else config.ssl_verify
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.lean = self._lean_client()

    @property
    def client(self) -> Any:
        """The SDK's client, made (and the SDK imported) when a call first needs it: listings,
        HEADs and small PUTs go without it (``addressing.py``), so a mount answers first."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = sdk().ObsClient(
                        access_key_id=self.config.access_key,
                        secret_access_key=self.config.secret_key,
                        server=self.config.endpoint,
                        signature=self.config.signature,
                        region=self.config.region,
                        path_style=self.config.path_style,
                        ssl_verify=self._ssl_verify,
                        max_retry_count=0,
                        timeout=self.config.socket_timeout,
                        is_signature_negotiation=self.config.signature == "obs",
                    )
        return self._client

    def _lean_client(self) -> LeanClient:
        """HEADs, small PUTs and listings go their own way (keepalive.py), addressed and signed as
        the SDK would address and sign them for our config."""
        where = addressing(self.config, self.bucket, self._ssl_verify)
        signer = Signer(dialect=where.dialect, access_key=self.config.access_key, secret_key=self.config.secret_key,
                        region=where.region, host=where.host_header, bucket_in_path=where.path_style)
        return LeanClient(signer, self.bucket, negotiate=where.negotiate, address=(where.host, where.port),
                          tls=where.tls, timeout=self.config.socket_timeout)

    def close(self) -> None:
        self.lean.close()
        if self._client is not None:
            self._client.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _ext(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.config.signature == "v4":
            # The SDK signs v4 with an RFC 1123 Date only; RGW and others want x-amz-date.
            headers["x-amz-date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if extra:
            headers.update(extra)
        return headers

    def _call(self, what: str, key: str | None, fn: Callable[[], Any], *, ok404: bool = False) -> Any:
        """One attempt: run the SDK call and raise our error type for anything but success; tell
        the observer (metrics) how it went and how long the store took to answer."""
        start = time.monotonic()
        outcome = "ok"
        try:
            resp = self._attempt(what, key, fn)
            if resp.status >= 300 and not (ok404 and resp.status == 404):
                raise classify(resp.status, resp.errorCode, what, key)
            if resp.status == 404:
                outcome = "not_found"
            return resp
        except StoreError as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            if self.observer is not None:
                self.observer(operation_of(what), outcome, time.monotonic() - start)

    @staticmethod
    def _attempt(what: str, key: str | None, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StoreError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc, what, key) from None
        except Exception as exc:  # the SDK raises bare Exception for bad arguments
            raise InvalidRequest(f"{what}: {exc}", key=key) from None

    # -- objects ---------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo:
        _check_key(key)
        # Not through the SDK: a cold ls -l is 10,000 HEADs, and keepalive.py makes each one
        # cost a fraction of the SDK's CPU and no new connection.
        headers = self._call(f"HEAD {key}", key, functools.partial(self.lean.head, key)).header
        return ObjectInfo(
            key=key,
            size=int(headers.get("content-length") or 0),
            etag=bare_etag(headers.get("etag")),
            last_modified=_parse_http_date(headers.get("last-modified")),
            content_type=headers.get("content-type"),
            metadata=headers,
        )

    def _open_stream(self, key: str, byte_range: str | None, etag: str | None) -> Any:
        hdr = sdk().GetObjectHeader(range=byte_range, if_match=etag or None)
        return self._call(f"GET {key}", key, lambda: self.client.getObject(
            self.bucket, key, loadStreamInMemory=False, headers=hdr, extensionHeaders=self._ext()))

    def _drain(self, resp: Any, key: str, sink: Callable[[memoryview], None]) -> int:
        stream = resp.body.response
        buf = bytearray(_STREAM_CHUNK)
        view = memoryview(buf)
        total = 0
        try:
            while True:
                n = stream.readinto(view)
                if not n:
                    break
                sink(view[:n])
                total += n
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc, f"GET {key}", key) from None
        finally:
            stream.close()
        return total

    def get_range(self, key: str, start: int, length: int, *, etag: str | None = None) -> bytearray:
        _check_key(key)
        if length <= 0:
            return bytearray()
        try:
            resp = self._open_stream(key, f"{start}-{start + length - 1}", etag)
        except InvalidRequest as exc:
            if exc.status == 416:  # range starts past the end
                return bytearray()
            raise
        expected = int(dict((k.lower(), v) for k, v in resp.header or []).get("content-length", length))
        # The socket reads straight into the result: one copy in user space, none after (with the
        # READ replies as views, a cold 1 GiB read went from 184-233 to 208-324 MB/s here).
        out = bytearray(expected)
        view = memoryview(out)
        stream = resp.body.response
        got = 0
        try:
            while got < expected and (n := stream.readinto(view[got:])):
                got += n
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc, f"GET {key}", key) from None
        finally:
            stream.close()
        if got < expected:
            raise TemporaryFailure(f"GET {key}: connection closed after {got} of {expected} bytes", key=key)
        return out

    def read_small(self, key: str, limit: int) -> bytes:
        _check_key(key)
        if limit <= 0:
            return b""
        # Not through the SDK: a listing waits for its directory's attribute index, and the SDK's
        # import and client cost a cold listing 0.2-0.3 s (keepalive.py).
        try:
            reply = self._call(f"GET {key}", key, functools.partial(
                self.lean.get, key, {"Range": f"bytes=0-{limit - 1}"}))
        except InvalidRequest as exc:
            if exc.status == 416:  # an empty object: the range starts past its end
                return b""
            raise
        return reply.body  # whole: http.client raises IncompleteRead on a short body

    def get_to_file(self, key: str, fd: int, *, etag: str | None = None) -> int:
        _check_key(key)
        resp = self._open_stream(key, None, etag)
        os.ftruncate(fd, 0)
        offset = 0

        def sink(chunk: memoryview) -> None:
            nonlocal offset
            offset += os.pwrite(fd, chunk, offset)

        got = self._drain(resp, key, sink)
        expected = int(resp.body.contentLength or got) if hasattr(resp.body, "contentLength") else got
        if got < expected:
            raise TemporaryFailure(f"GET {key}: connection closed after {got} of {expected} bytes", key=key)
        return got

    def put_file(self, key: str, path: str, *, metadata: Mapping[str, str], content_type: str,
                 if_match: str | None = None, if_none_match: bool = False) -> str:
        _check_key(key)
        with open(path, "rb") as stream:
            body = stream.read() if os.fstat(stream.fileno()).st_size <= LEAN_PUT_MAX else None
        if body is not None:
            # Not through the SDK: cp -r of small files is one PUT each, and keepalive.py makes
            # each cost a third of the SDK's CPU and no new connection.
            reply = self._call(f"PUT {key}", key, functools.partial(
                self.lean.put, key, body, content_type=content_type, metadata=metadata,
                conditions=_conditions(if_match, if_none_match)))
            return bare_etag(reply.header.get("etag"))
        resp = self._call(f"PUT {key}", key, lambda: self.client.putFile(
            self.bucket, key, path, metadata=dict(metadata), headers=sdk().PutObjectHeader(contentType=content_type),
            extensionHeaders=self._ext(_conditions(if_match, if_none_match))))
        return bare_etag(getattr(resp.body, "etag", None))

    def put_bytes(self, key: str, data: bytes, *, metadata: Mapping[str, str], content_type: str) -> str:
        _check_key(key)
        # As put_file's small files, and for the same reason: a new directory's marker, written
        # once with its first times (dirtimes.py), is 0.16 PUTs per file of a cp -r of a tree.
        reply = self._call(f"PUT {key}", key, functools.partial(
            self.lean.put, key, data, content_type=content_type, metadata=metadata, conditions={}))
        return bare_etag(reply.header.get("etag"))

    def initiate_multipart(self, key: str, *, metadata: Mapping[str, str], content_type: str) -> str:
        _check_key(key)
        resp = self._call(f"initiate multipart {key}", key, lambda: self.client.initiateMultipartUpload(
            self.bucket, key, metadata=dict(metadata), contentType=content_type, extensionHeaders=self._ext()))
        return str(resp.body.uploadId)

    def upload_part(self, key: str, upload_id: str, part_no: int, path: str, offset: int, size: int) -> str:
        resp = self._call(f"upload part {part_no} of {key}", key, lambda: self.client.uploadPart(
            self.bucket, key, part_no, upload_id, path, isFile=True, offset=offset, partSize=size,
            extensionHeaders=self._ext()))
        return bare_etag(resp.body.etag)

    def complete_multipart(self, key: str, upload_id: str, parts: Iterable[tuple[int, str]], *,
                           if_match: str | None = None, if_none_match: bool = False) -> None:
        request = sdk().CompleteMultipartUploadRequest(
            parts=[sdk().CompletePart(partNum=n, etag=etag) for n, etag in sorted(parts)])
        self._call(f"complete multipart {key}", key, lambda: self.client.completeMultipartUpload(
            self.bucket, key, upload_id, request, extensionHeaders=self._ext(_conditions(if_match, if_none_match))))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._call(f"abort multipart {key}", key, lambda: self.client.abortMultipartUpload(
            self.bucket, key, upload_id, extensionHeaders=self._ext()), ok404=True)

    def copy(self, src_key: str, dst_key: str, *, metadata: Mapping[str, str], content_type: str,
             size: int | None = None) -> None:
        _check_key(src_key)
        _check_key(dst_key)
        if size is None:
            size = self.head(src_key).size
        if size > _MAX_SINGLE_COPY:
            self._copy_in_parts(src_key, dst_key, size, metadata, content_type)
            return
        header = sdk().CopyObjectHeader(directive="REPLACE", contentType=content_type)
        self._call(f"COPY {src_key} -> {dst_key}", dst_key, lambda: self.client.copyObject(
            self.bucket, src_key, self.bucket, dst_key, metadata=dict(metadata), headers=header,
            extensionHeaders=self._ext()))

    def _copy_in_parts(self, src_key: str, dst_key: str, size: int, metadata: Mapping[str, str],
                       content_type: str) -> None:
        upload_id = self.initiate_multipart(dst_key, metadata=metadata, content_type=content_type)
        try:
            parts = []
            for n, start in enumerate(range(0, size, _COPY_PART), start=1):
                end = min(size, start + _COPY_PART) - 1
                request = functools.partial(self.client.copyPart, self.bucket, dst_key, n, upload_id,
                                            f"{self.bucket}/{src_key}", f"{start}-{end}",
                                            extensionHeaders=self._ext())
                resp = self._call(f"copy part {n} of {src_key}", dst_key, request)
                parts.append((n, bare_etag(resp.body.etag)))
            self.complete_multipart(dst_key, upload_id, parts)
        except BaseException:
            self.abort_multipart(dst_key, upload_id)
            raise

    def delete(self, key: str) -> None:
        _check_key(key)
        self._call(f"DELETE {key}", key, lambda: self.client.deleteObject(
            self.bucket, key, extensionHeaders=self._ext()), ok404=True)

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            _check_key(key)
            batch.append(key)
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: list[str]) -> None:
        what = f"delete batch of {len(keys)} keys"
        reply = self._call(what, None, functools.partial(self.lean.delete_batch, keys))
        try:
            failed = delete_failures(reply.body)
        except DeleteAnswerUnreadable as exc:
            raise StoreError(f"{what}: {exc}") from None
        for key, code in failed:
            if code != "NoSuchKey":
                raise classify(403 if code == "AccessDenied" else 500, code, f"DELETE {key}", key)

    def list(self, prefix: str = "", delimiter: str | None = "/", marker: str | None = None,
             max_keys: int = 1000) -> ListPage:
        query = {"prefix": prefix, "marker": marker, "max-keys": str(max_keys), "delimiter": delimiter}
        what = f"LIST {prefix or '/'}"
        answer = self._call(what, prefix, functools.partial(
            self.lean.list, {name: value for name, value in query.items() if value}))
        try:
            return parse_listing(answer.body)
        except ListingUnreadable as exc:
            raise StoreError(f"{what}: {exc}", key=prefix) from None

    # -- bucket ----------------------------------------------------------------------------
    def bucket_exists(self) -> bool:
        resp = self._call(f"HEAD bucket {self.bucket}", None, lambda: self.client.headBucket(
            self.bucket, extensionHeaders=self._ext()), ok404=True)
        return bool(resp.status < 300)

    def create_bucket(self) -> None:
        try:
            self._call(f"create bucket {self.bucket}", None, lambda: self.client.createBucket(
                self.bucket, extensionHeaders=self._ext()))
        except Conflict as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise Conflict(f"bucket {self.bucket} already exists and belongs to someone else",
                               status=exc.status, code=exc.code) from None

    def delete_bucket(self) -> None:
        try:
            self._call(f"delete bucket {self.bucket}", None, lambda: self.client.deleteBucket(
                self.bucket, extensionHeaders=self._ext()))
        except BucketNotFound:
            return
        except NotFound:
            return

    def set_quota(self, quota_bytes: int) -> bool:
        """OBS's bucket quota (``PUT ?quota``). Only real OBS, addressed with the ``obs`` signature,
        has it: RGW refuses the request (403) and moto answers 200 without doing anything."""
        if self.config.signature != "obs":
            return False
        self._call(f"set quota of bucket {self.bucket}", None, lambda: self.client.setBucketQuota(
            self.bucket, quota_bytes, extensionHeaders=self._ext()))
        return True

    def check_access(self, prefix: str = "") -> None:
        try:
            query = {"prefix": prefix, "max-keys": "1"} if prefix else {"max-keys": "1"}
            self._call(f"LIST bucket {self.bucket}", None, functools.partial(self.lean.list, query))
        except NotFound as exc:
            raise BucketNotFound(f"bucket {self.bucket!r} does not exist at {self.config.endpoint}",
                                 status=exc.status, code=exc.code) from None
