"""ObsStore against a real moto server over HTTP, the pure error classifier, and AsyncStore.

What reached the store is checked with boto3, an independent client.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import ObjectInfo, ObjectStore, StoreConfig
from obsfs.backend.obs import LEAN_PUT_MAX, ObsStore, bare_etag, classify
from obsfs.errors import (
    AccessDenied,
    BadCredentials,
    BucketNotFound,
    Conflict,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreStopped,
    TemporaryFailure,
)
from tests.conftest import boto_client, store_config
from tests.gate import KeepAliveProxy
from tests.s3server import S3Server, refusing_port, start_moto

MiB = 1 << 20
META = {"mode": "33188", "uid": "1000", "gid": "1000", "mtime": "1700000000.5"}
ODD_KEYS = ["with space", "ü/umlaut", "a+b", "percent%41", "sp ace/plus+/ü%2F.txt"]


@pytest.fixture
def store(moto: S3Server, bucket: str) -> Iterator[ObsStore]:
    st = ObsStore(store_config(moto), bucket)
    yield st
    st.close()


def put_many(s3: Any, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))


def boto_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


# -- classify (pure) -------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "code", "kind"), [
    (404, "NoSuchBucket", BucketNotFound),
    (404, "NoSuchKey", NotFound),
    (404, None, NotFound),
    (403, "SignatureDoesNotMatch", BadCredentials),
    (403, "InvalidAccessKeyId", BadCredentials),
    (403, "AccessDenied", AccessDenied),
    (403, None, AccessDenied),
    (401, None, BadCredentials),
    (412, "PreconditionFailed", PreconditionFailed),
    (412, None, PreconditionFailed),
    (409, "BucketNotEmpty", Conflict),
    (409, "BucketAlreadyExists", Conflict),
    (429, None, TemporaryFailure),
    (408, None, TemporaryFailure),
    (500, "InternalError", TemporaryFailure),
    (503, "SlowDown", TemporaryFailure),
    (503, None, TemporaryFailure),
    (400, "RequestTimeout", TemporaryFailure),
    (400, "InvalidRequest", InvalidRequest),
    (400, None, InvalidRequest),
    (416, "InvalidRange", InvalidRequest),
])
def test_classify(status: int, code: str | None, kind: type[StoreError]) -> None:
    exc = classify(status, code, "GET some/key", "some/key")
    assert type(exc) is kind
    assert (exc.status, exc.code, exc.key) == (status, code, "some/key")
    assert str(exc).startswith("GET some/key: ")


def test_classify_authorization_header_malformed() -> None:
    assert isinstance(classify(400, "AuthorizationHeaderMalformed", "LIST", None), BadCredentials)


def test_classify_messages_say_what_is_wrong() -> None:
    assert "secret key does not match" in str(classify(403, "SignatureDoesNotMatch", "LIST", None))
    assert "does not know this access key" in str(classify(403, "InvalidAccessKeyId", "LIST", None))
    assert "bucket does not exist" in str(classify(404, "NoSuchBucket", "LIST", None))
    assert "HTTP 503 SlowDown" in str(classify(503, "SlowDown", "PUT k", "k"))


def test_bare_etag() -> None:
    assert bare_etag('"abc-2"') == "abc-2"
    assert bare_etag(" abc ") == "abc"
    assert bare_etag(None) == ""


def test_config_repr_hides_keys() -> None:
    config = StoreConfig(endpoint="http://x", access_key="AKID-visible?", secret_key="TOPSECRET")
    assert "TOPSECRET" not in repr(config)
    assert "AKID-visible?" not in repr(config)
    with pytest.raises(ValueError):
        StoreConfig(endpoint="http://x", signature="v3")


# -- objects -------------------------------------------------------------------------------------

def test_head(store: ObsStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="f.bin", Body=b"0123456789", ContentType="application/x-test",
                  Metadata={"mode": "33261", "uid": "42"})
    info = store.head("f.bin")
    assert info.key == "f.bin"
    assert info.size == 10
    assert info.content_type == "application/x-test"
    assert info.metadata is not None
    assert info.metadata["mode"] == "33261"
    assert info.metadata["uid"] == "42"
    boto = s3.head_object(Bucket=bucket, Key="f.bin")
    assert info.etag == boto["ETag"].strip('"')
    assert '"' not in info.etag
    assert abs(info.last_modified - boto["LastModified"].timestamp()) < 1


def test_head_missing_and_empty_key(store: ObsStore) -> None:
    with pytest.raises(NotFound) as err:
        store.head("missing")
    assert err.value.status == 404
    assert err.value.key == "missing"
    with pytest.raises(InvalidRequest):
        store.head("")  # the SDK would HEAD the bucket instead


def test_get_range(store: ObsStore, s3: Any, bucket: str) -> None:
    data = bytes(range(256)) * 8
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    assert store.get_range("r", 0, 10) == data[:10]
    assert store.get_range("r", 100, 300) == data[100:400]
    assert store.get_range("r", len(data) - 5, 100) == data[-5:]  # short only at the end
    assert store.get_range("r", len(data), 10) == b""  # starts at EOF
    assert store.get_range("r", len(data) + 1000, 10) == b""  # starts past EOF
    assert store.get_range("r", 0, 0) == b""
    with pytest.raises(NotFound):
        store.get_range("missing", 0, 10)


def test_read_small_reads_what_get_range_reads_without_the_sdk(store: ObsStore, s3: Any, bucket: str) -> None:
    data = bytes(range(256)) * 8
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert store.read_small("r", 10) == data[:10]
    assert store.read_small("r", 1 << 20) == data  # short: the whole object
    assert store.read_small("empty", 10) == b""  # the range starts at its end (416)
    assert store.read_small("r", 0) == b""
    with pytest.raises(NotFound):
        store.read_small("missing", 10)
    assert store._client is None


def test_get_range_with_etag(store: ObsStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="r", Body=b"version one")
    etag = store.head("r").etag
    assert store.get_range("r", 0, 7, etag=etag) == b"version"
    s3.put_object(Bucket=bucket, Key="r", Body=b"version two")
    with pytest.raises(PreconditionFailed):
        store.get_range("r", 0, 7, etag=etag)


def test_get_to_file(store: ObsStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(2 * MiB + 12345)  # more than one read chunk
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    target = tmp_path / "out"
    target.write_bytes(b"z" * (3 * MiB))  # longer than the object: must be truncated
    fd = os.open(target, os.O_RDWR)
    try:
        assert store.get_to_file("big", fd) == len(data)
    finally:
        os.close(fd)
    assert target.read_bytes() == data


def test_get_to_file_missing_and_stale(store: ObsStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc")
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(NotFound):
            store.get_to_file("missing", fd)
        with pytest.raises(PreconditionFailed):
            store.get_to_file("k", fd, etag="0" * 32)
        assert store.get_to_file("k", fd, etag=store.head("k").etag) == 3
    finally:
        os.close(fd)


def test_put_file(store: ObsStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    data = os.urandom(100_000)
    src.write_bytes(data)
    etag = store.put_file("dir/noext", str(src), metadata=META, content_type="application/octet-stream")
    got = s3.get_object(Bucket=bucket, Key="dir/noext")
    assert got["Body"].read() == data
    assert got["Metadata"] == META
    assert got["ContentType"] == "application/octet-stream"  # not guessed from src.txt
    assert etag == got["ETag"].strip('"')


def test_put_file_conditions(store: ObsStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"new")
    s3.put_object(Bucket=bucket, Key="k", Body=b"old")
    current = store.head("k").etag
    with pytest.raises(PreconditionFailed):
        store.put_file("k", str(src), metadata={}, content_type="text/plain", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_file("k", str(src), metadata={}, content_type="text/plain", if_match="0" * 32)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old"
    # A quoted ETag works too: the store strips the quotes the SDK would percent-encode.
    store.put_file("k", str(src), metadata={}, content_type="text/plain", if_match=f'"{current}"')
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"
    store.put_file("fresh", str(src), metadata={}, content_type="text/plain", if_none_match=True)
    assert s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b"new"


def test_put_bytes(store: ObsStore, s3: Any, bucket: str) -> None:
    etag = store.put_bytes("link.jpg", b"target/path", metadata={"mode": "41471"}, content_type="text/plain")
    got = s3.get_object(Bucket=bucket, Key="link.jpg")
    assert got["Body"].read() == b"target/path"
    assert got["Metadata"] == {"mode": "41471"}
    assert got["ContentType"] == "text/plain"  # not image/jpeg from the key
    assert etag == got["ETag"].strip('"')
    store.put_bytes("d/", b"", metadata=META, content_type="application/x-directory")
    marker = s3.head_object(Bucket=bucket, Key="d/")
    assert marker["ContentLength"] == 0
    assert marker["ContentType"] == "application/x-directory"
    assert marker["Metadata"] == META


def test_multipart(store: ObsStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = os.urandom(5 * MiB + 4321)
    src.write_bytes(data)
    upload_id = store.initiate_multipart("mp", metadata=META, content_type="application/x-mp")
    # Parts may finish in any order; complete sorts them.
    second = store.upload_part("mp", upload_id, 2, str(src), 5 * MiB, len(data) - 5 * MiB)
    first = store.upload_part("mp", upload_id, 1, str(src), 0, 5 * MiB)
    assert '"' not in first + second
    store.complete_multipart("mp", upload_id, [(2, second), (1, first)])
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == data
    assert got["Metadata"] == META
    assert got["ContentType"] == "application/x-mp"
    assert store.head("mp").etag.endswith("-2")


def test_abort_multipart(store: ObsStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    upload_id = store.initiate_multipart("mp", metadata={}, content_type="text/plain")
    store.upload_part("mp", upload_id, 1, str(src), 0, 1000)
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [upload_id]
    store.abort_multipart("mp", upload_id)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    store.abort_multipart("mp", "no-such-upload")  # unknown id: not an error
    with pytest.raises(NotFound):
        store.head("mp")


def test_copy_replaces_metadata_and_content_type(store: ObsStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", ContentType="text/plain",
                  Metadata={"mode": "33188", "stale": "yes"})
    store.copy("src", "dst", metadata={"mode": "33216"}, content_type="application/x-new")
    dst = s3.get_object(Bucket=bucket, Key="dst")
    assert dst["Body"].read() == b"payload"
    assert dst["Metadata"] == {"mode": "33216"}  # all of it replaced
    assert dst["ContentType"] == "application/x-new"
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"mode": "33188", "stale": "yes"}


def test_copy_onto_itself_is_chmod(store: ObsStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"data", ContentType="text/plain", Metadata={"mode": "33188"})
    etag = store.head("f").etag
    store.copy("f", "f", metadata={"mode": "33261"}, content_type="text/plain", size=4)
    info = store.head("f")
    assert info.metadata is not None and info.metadata["mode"] == "33261"
    assert info.etag == etag
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"data"


def test_copy_missing_source(store: ObsStore) -> None:
    with pytest.raises(NotFound):
        store.copy("missing", "dst", metadata={}, content_type="text/plain")
    with pytest.raises(NotFound):
        store.copy("missing", "dst", metadata={}, content_type="text/plain", size=10)


def test_delete(store: ObsStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    store.delete("k")
    assert boto_keys(s3, bucket) == []
    store.delete("k")  # missing: fine
    store.delete("never-existed")
    with pytest.raises(InvalidRequest):
        store.delete("")


def test_delete_many_more_than_one_batch(store: ObsStore, s3: Any, bucket: str) -> None:
    keys = [f"del/k{i:05d}" for i in range(1100)]
    put_many(s3, bucket, keys)
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    assert len(boto_keys(s3, bucket, "del/")) == 1100
    store.delete_many(iter(keys + ["del/missing"]))  # any iterable; missing keys are fine
    assert boto_keys(s3, bucket) == ["keep"]
    store.delete_many([])
    assert store._client is None  # sent by keepalive.py, without the SDK


def test_odd_keys(store: ObsStore, s3: Any, bucket: str) -> None:
    for key in ODD_KEYS:
        store.put_bytes(key, key.encode(), metadata={"mode": "33188"}, content_type="text/plain")
    assert boto_keys(s3, bucket) == sorted(ODD_KEYS)
    for key in ODD_KEYS:
        assert store.head(key).size == len(key.encode())
        assert store.get_range(key, 0, 100) == key.encode()
    page = store.list("", delimiter=None)
    assert sorted(o.key for o in page.objects) == sorted(ODD_KEYS)
    store.copy("a+b", "a+b copy", metadata={}, content_type="text/plain")
    assert s3.get_object(Bucket=bucket, Key="a+b copy")["Body"].read() == b"a+b"
    store.delete_many([*ODD_KEYS, "a+b copy"])
    assert boto_keys(s3, bucket) == []


# -- listing ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def many(moto: S3Server) -> tuple[str, list[str]]:
    """A bucket with 1100 files in ``many/`` plus one subdirectory before and one after them."""
    s3 = boto_client(moto)
    name = f"t-many-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    files = [f"many/k{i:05d}" for i in range(1100)]
    put_many(s3, name, [*files, "many/a-dir/x", "many/z-dir/y", "many/z-dir/sub/z", "other"])
    return name, files


def list_all(store: ObsStore, prefix: str, delimiter: str | None, max_keys: int) -> tuple[list[str], list[str],
                                                                                          int]:
    keys: list[str] = []
    prefixes: list[str] = []
    marker: str | None = None
    pages = 0
    while True:
        page = store.list(prefix, delimiter, marker, max_keys)
        pages += 1
        keys += [o.key for o in page.objects]
        # moto repeats every common prefix on every page; real servers do not. Keep the first.
        prefixes += [p for p in page.prefixes if p not in prefixes]
        if page.next_marker is None:
            return keys, prefixes, pages
        assert pages < 100, "listing does not end"
        marker = page.next_marker


def test_list_with_delimiter_across_pages(moto: S3Server, many: tuple[str, list[str]]) -> None:
    name, files = many
    store = ObsStore(store_config(moto), name)
    keys, prefixes, pages = list_all(store, "many/", "/", 1000)
    assert pages >= 2
    assert keys == files
    assert prefixes == ["many/a-dir/", "many/z-dir/"]


def test_list_without_delimiter(moto: S3Server, many: tuple[str, list[str]]) -> None:
    name, files = many
    store = ObsStore(store_config(moto), name)
    keys, prefixes, pages = list_all(store, "many/", None, 1000)
    assert prefixes == []
    assert keys == sorted([*files, "many/a-dir/x", "many/z-dir/y", "many/z-dir/sub/z"])
    assert pages == 2


def test_list_small_pages(moto: S3Server, many: tuple[str, list[str]]) -> None:
    name, files = many
    store = ObsStore(store_config(moto), name)
    keys, prefixes, pages = list_all(store, "many/", "/", 300)
    assert keys == files
    assert prefixes == ["many/a-dir/", "many/z-dir/"]
    assert pages >= 4


def test_list_root_and_entries(moto: S3Server, many: tuple[str, list[str]]) -> None:
    name, _ = many
    store = ObsStore(store_config(moto), name)
    page = store.list("", "/")
    assert page.prefixes == ["many/"]
    assert [o.key for o in page.objects] == ["other"]
    entry = page.objects[0]
    assert entry.size == 1
    assert entry.metadata is None  # listings carry none: "unknown", not "empty"
    assert '"' not in entry.etag and entry.etag
    assert page.next_marker is None
    assert store.list("many/z-dir/", "/").prefixes == ["many/z-dir/sub/"]
    assert store.list("nothing/", "/") == store.list("nothing/", None)
    assert store.list("nothing/", "/").objects == []


def test_list_missing_bucket(moto: S3Server) -> None:
    store = ObsStore(store_config(moto), f"t-missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(BucketNotFound):
        store.list("")


def _zone_with_dst_now() -> str | None:
    for zone in ("Australia/Sydney", "Europe/Berlin", "America/New_York"):
        if not os.path.exists(f"/usr/share/zoneinfo/{zone}"):
            continue
        old = os.environ.get("TZ")
        os.environ["TZ"] = zone
        time.tzset()
        dst = time.localtime().tm_isdst > 0
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
        if dst:
            return zone
    return None


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    def use(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


def test_listing_time_in_a_zone_without_dst(store: ObsStore, local_zone: Callable[[str], None]) -> None:
    """The SDK turns listing times into local time; the store must turn them back."""
    local_zone("Asia/Shanghai")
    store.put_bytes("k", b"x", metadata={}, content_type="text/plain")
    listed = store.list("").objects[0].last_modified
    assert abs(listed - store.head("k").last_modified) < 1.5


def test_listing_time_in_a_zone_with_dst(store: ObsStore, local_zone: Callable[[str], None]) -> None:
    zone = _zone_with_dst_now()
    assert zone is not None, "no zone with DST in effect today"
    local_zone(zone)
    store.put_bytes("k", b"x", metadata={}, content_type="text/plain")
    listed = store.list("").objects[0].last_modified
    assert abs(listed - store.head("k").last_modified) < 1.5


# -- bucket ----------------------------------------------------------------------------------------

def test_bucket_lifecycle_is_idempotent(moto: S3Server, s3: Any) -> None:
    name = f"t-life-{uuid.uuid4().hex[:10]}"
    store = ObsStore(store_config(moto), name)
    assert store.bucket_exists() is False
    store.create_bucket()
    assert store.bucket_exists() is True
    store.create_bucket()  # we own it already: fine
    store.put_bytes("k", b"x", metadata={}, content_type="text/plain")
    with pytest.raises(Conflict):
        store.delete_bucket()
    assert store.bucket_exists() is True
    store.delete("k")
    store.delete_bucket()
    assert store.bucket_exists() is False
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    store.delete_bucket()  # already gone: fine


def test_check_access(store: ObsStore, moto: S3Server) -> None:
    store.check_access()
    store.check_access("some/prefix/")
    name = f"t-missing-{uuid.uuid4().hex[:8]}"
    missing = ObsStore(store_config(moto), name)
    with pytest.raises(BucketNotFound) as err:
        missing.check_access()
    assert name in str(err.value)
    assert moto.endpoint in str(err.value)
    assert moto.secret_key not in str(err.value)


@pytest.mark.parametrize("signature", ["v2", "v4", "obs"])
def test_signatures(moto: S3Server, bucket: str, s3: Any, signature: str) -> None:
    store = ObsStore(store_config(moto, signature=signature), bucket)
    store.put_bytes("sig", b"signed", metadata={"mode": "33188"}, content_type="text/plain")
    assert s3.head_object(Bucket=bucket, Key="sig")["Metadata"] == {"mode": "33188"}
    info = store.head("sig")
    assert info.metadata is not None and info.metadata["mode"] == "33188"
    assert store.get_range("sig", 0, 100) == b"signed"
    assert [o.key for o in store.list("").objects] == ["sig"]
    store.delete("sig")
    assert boto_keys(s3, bucket) == []


# -- HEADs over keep-alive (keepalive.py) ------------------------------------------------------------

@pytest.fixture
def proxy(moto: S3Server) -> Iterator[KeepAliveProxy]:
    """A proxy in front of moto (which closes every connection) that keeps connections open."""
    gate = KeepAliveProxy(moto.port)
    gate.start()
    yield gate
    gate.stop()


def through(proxy: KeepAliveProxy, moto: S3Server, bucket: str, **overrides: object) -> ObsStore:
    return ObsStore(store_config(moto, endpoint=f"http://127.0.0.1:{proxy.port}", **overrides), bucket)


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_heads_share_a_connection(moto: S3Server, proxy: KeepAliveProxy, bucket: str, s3: Any,
                                  signature: str) -> None:
    """One connection for a thread's HEADs, and the same answer as the SDK's own HEAD, user
    metadata percent-decoded alike. (Signatures are checked on RGW: test_rgw.py.)"""
    s3.put_object(Bucket=bucket, Key="a b/ü+%41", Body=b"12345", ContentType="text/x-odd",
                  Metadata={"mode": "33188", "note": "a%41b"})
    store = through(proxy, moto, bucket, signature=signature)
    infos = [store.head("a b/ü+%41") for _ in range(3)]
    assert proxy.connections == 1 and len(proxy.requests) == 3
    sdk = store.client.headObject(bucket, "a b/ü+%41", extensionHeaders=store._ext())

    def undated(headers: Mapping[str, str] | None) -> dict[str, str]:
        """The answer's headers but its Date, which moves on when the HEADs span a second."""
        return {name: value for name, value in (headers or {}).items() if name != "date"}

    assert undated(infos[0].metadata) == undated(dict(sdk.header) | {"connection": "keep-alive"})
    assert infos[0].metadata is not None and infos[0].metadata["note"] == "aAb"
    assert infos[0].size == 5 and infos[0].content_type == "text/x-odd"
    assert [replace(info, metadata=undated(info.metadata)) for info in infos[1:]] == [
        replace(infos[0], metadata=undated(infos[0].metadata))] * 2
    store.close()


def test_connections_the_server_closed(moto: S3Server, proxy: KeepAliveProxy, bucket: str, s3: Any) -> None:
    """A HEAD that met a connection the server had closed is sent again, once, on a new one:
    no error, no retry delay, no outage recorded. A HEAD that fails on a fresh connection, and
    anything that is not a HEAD, is never sent again behind the caller's back."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    store = through(proxy, moto, bucket)
    seen: list[str] = []
    store.observer = lambda op, outcome, seconds: seen.append(outcome)

    proxy.drop = {1}  # the first request, on a fresh connection: a real failure
    with pytest.raises(TemporaryFailure):
        store.head("k")
    assert len(proxy.requests) == 1
    assert store.head("k").size == 1  # request 2, on a new connection that then stays open
    proxy.drop = {3}  # closed just as the next request came in
    assert store.head("k").size == 1
    assert [line.split()[0] for line in proxy.requests] == [b"HEAD"] * 4
    assert proxy.connections == 3
    assert seen == ["unanswered", "ok", "ok"]

    proxy.close_after_answer = True  # closed while idle: the next HEAD goes on a new connection
    for _ in range(2):
        assert store.head("k").size == 1
    assert len(proxy.requests) == 6 and proxy.connections == 4

    proxy.close_after_answer = False
    assert store.head("k").size == 1  # request 7, on a connection that then stays open
    proxy.drop = {8}  # a PUT (keepalive.py) on that connection, closed before the answer
    with pytest.raises(TemporaryFailure):
        store.put_bytes("k", b"y", metadata={}, content_type="text/plain")
    assert proxy.requests[7].startswith(b"PUT ") and len(proxy.requests) == 8
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    store.close()


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_small_puts_share_a_connection(moto: S3Server, proxy: KeepAliveProxy, bucket: str, s3: Any,
                                       tmp_path: Path, signature: str) -> None:
    """A small file goes out on the thread's keep-alive connection (keepalive.py), with its
    conditions, and lands as the SDK would store it; a large one still streams through the SDK."""
    src = tmp_path / "small"
    src.write_bytes(b"small file")
    store = through(proxy, moto, bucket, signature=signature)
    etags = [store.put_file(f"a b/ü+%41-{n}", str(src), metadata=META, content_type="text/x-odd; a=b",
                            if_none_match=True) for n in range(3)]
    assert proxy.connections == 1 and [line.split()[0] for line in proxy.requests] == [b"PUT"] * 3
    got = s3.get_object(Bucket=bucket, Key="a b/ü+%41-0")
    assert got["Body"].read() == b"small file" and got["Metadata"] == META
    assert got["ContentType"] == "text/x-odd; a=b" and got["ETag"].strip('"') == etags[0]
    with pytest.raises(PreconditionFailed):
        store.put_file("a b/ü+%41-0", str(src), metadata=META, content_type="text/plain", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_file("a b/ü+%41-0", str(src), metadata=META, content_type="text/plain", if_match="0" * 32)
    assert store.put_file("a b/ü+%41-0", str(src), metadata={}, content_type="text/plain",
                          if_match=etags[0]) == etags[0]
    assert s3.head_object(Bucket=bucket, Key="a b/ü+%41-0")["Metadata"] == {}
    big = tmp_path / "big"
    big.write_bytes(os.urandom(LEAN_PUT_MAX + 1))
    store.put_file("big", str(big), metadata=META, content_type="text/plain")
    assert proxy.connections == 2  # the SDK's own connection, closed after its request
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big.read_bytes()
    store.close()


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_markers_share_a_connection(moto: S3Server, proxy: KeepAliveProxy, bucket: str, s3: Any,
                                    signature: str) -> None:
    """A directory's marker (mkdir, then its times) goes out on the thread's keep-alive
    connection as a small file does, and lands as the SDK would store it."""
    store = through(proxy, moto, bucket, signature=signature)
    etags = [store.put_bytes(f"d ü+%41/{n}/", b"", metadata=META, content_type="application/x-directory")
             for n in range(3)]
    assert proxy.connections == 1 and [line.split()[0] for line in proxy.requests] == [b"PUT"] * 3
    got = s3.get_object(Bucket=bucket, Key="d ü+%41/0/")
    assert got["Body"].read() == b"" and got["Metadata"] == META and got["ETag"].strip('"') == etags[0]
    assert got["ContentType"] == "application/x-directory"
    store.close()


def test_a_small_put_is_never_sent_again(moto: S3Server, proxy: KeepAliveProxy, bucket: str, s3: Any,
                                         tmp_path: Path) -> None:
    """A PUT that met a connection the server had closed fails as a transport error, sent once:
    the server may have acted on it, so the caller's retry (and its conflict checks) decide."""
    src = tmp_path / "src"
    src.write_bytes(b"new")
    s3.put_object(Bucket=bucket, Key="k", Body=b"old")
    store = through(proxy, moto, bucket)
    assert store.head("k").size == 3  # opens the thread's connection
    proxy.drop = {2}
    with pytest.raises(TemporaryFailure):
        store.put_file("k", str(src), metadata={}, content_type="text/plain")
    assert [line.split()[0] for line in proxy.requests] == [b"HEAD", b"PUT"]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old"
    store.put_file("k", str(src), metadata={}, content_type="text/plain")  # a new connection
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"
    store.close()


# -- transport failures ----------------------------------------------------------------------------

def test_connection_refused_is_temporary() -> None:
    with refusing_port() as port:
        config = StoreConfig(endpoint=f"http://127.0.0.1:{port}", access_key="ak", secret_key="SECRET-XYZ",
                             path_style=True, socket_timeout=2)
        store = ObsStore(config, "b")
        start = time.monotonic()
        with pytest.raises(TemporaryFailure, match="connection refused") as err:
            store.head("k")
        assert time.monotonic() - start < 1.0  # the SDK's own retries (0.2 + 0.4 + 0.8 s) are off
        assert err.value.key == "k"
        assert "SECRET-XYZ" not in str(err.value)
        with pytest.raises(TemporaryFailure):
            store.list("")
        with pytest.raises(TemporaryFailure):
            store.bucket_exists()


def test_server_going_away() -> None:
    """A store that worked, then a crash: the sync call fails at once, the async one at its deadline."""
    server = start_moto()
    try:
        s3 = boto_client(server)
        s3.create_bucket(Bucket="t-going-away")
        store = ObsStore(store_config(server), "t-going-away")
        store.put_bytes("k", b"x", metadata={}, content_type="text/plain")
        assert store.head("k").size == 1
        server.kill()
        with pytest.raises(TemporaryFailure):
            store.head("k")
        astore = AsyncStore(store, read_deadline=1.5, write_deadline=1.5)

        async def head() -> None:
            await astore.head("k")

        start = time.monotonic()
        with pytest.raises(TemporaryFailure) as err:
            trio.run(head)
        elapsed = time.monotonic() - start
        assert elapsed < 10  # gave up at its deadline: no hang
        assert "gave up after" in str(err.value)
        attempts = int(str(err.value).split("gave up after ")[1].split()[0])
        assert attempts >= 3
    finally:
        server.kill()


# -- AsyncStore --------------------------------------------------------------------------------------

def test_async_store_round_trip(moto: S3Server, bucket: str, s3: Any, tmp_path: Path) -> None:
    store = AsyncStore(ObsStore(store_config(moto), bucket), read_deadline=10, write_deadline=10)
    src = tmp_path / "src"
    src.write_bytes(b"0123456789")

    async def main() -> None:
        await store.check_access()
        etag = await store.put_file("f", str(src), metadata=META, content_type="text/plain")
        await store.put_bytes("d/", b"", metadata={}, content_type="application/x-directory")
        info = await store.head("f")
        assert info.etag == etag
        assert info.metadata is not None and info.metadata["mode"] == META["mode"]
        assert await store.get_range("f", 2, 3) == b"234"
        (tmp_path / "out").write_bytes(b"longer than the object")
        assert await store.get_to_file("f", str(tmp_path / "out"), etag=etag) == 10
        await store.copy("f", "g", metadata={"mode": "1"}, content_type="text/x-g")
        page = await store.list("", "/")
        assert sorted(o.key for o in page.objects) == ["f", "g"]
        assert page.prefixes == ["d/"]
        await store.delete("f")
        with pytest.raises(NotFound):
            await store.head("f")  # not retried: returns at once
        await store.delete_many(["g", "d/"])

    trio.run(main)
    assert (tmp_path / "out").read_bytes() == b"0123456789"
    assert boto_keys(s3, bucket) == []


class FakeStore:
    """Only what the AsyncStore tests call; behaviour set per test."""

    bucket = "fake"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.finished = 0
        self.calls = 0
        self.block_head = False

    def _blocking(self) -> None:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            assert self.release.wait(10)
        finally:
            with self.lock:
                self.active -= 1
                self.finished += 1

    def get_range(self, key: str, start: int, length: int, *, etag: str | None = None) -> bytearray:
        self._blocking()
        return bytearray(b"data")

    def head(self, key: str) -> str:
        if self.block_head:
            self._blocking()
        return "head-result"

    def put_file(self, key: str, path: str, *, metadata: object, content_type: str, if_match: str | None = None,
                 if_none_match: bool = False) -> str:
        self._blocking()
        return "etag"


def async_store(fake: object, **kwargs: Any) -> AsyncStore:
    return AsyncStore(cast(ObjectStore, fake), **kwargs)


def test_bulk_reads_do_not_starve_metadata_calls() -> None:
    fake = FakeStore()
    store = async_store(fake, read_deadline=10, write_deadline=10, data_threads=2)

    async def main() -> None:
        results: list[bytes | bytearray] = []

        async def read() -> None:
            results.append(await store.get_range("k", 0, 4))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(read)
            with trio.fail_after(5):
                while fake.active < 2:
                    await trio.sleep(0.01)
                await trio.sleep(0.1)
                assert fake.active == 2  # the data limiter holds the other three back
                assert await store.head("k") == "head-result"  # while every data thread is busy
            fake.release.set()
        assert results == [b"data"] * 5

    trio.run(main)
    assert fake.max_active == 2
    assert fake.finished == 5


def test_async_deadlines_differ_for_reads_and_writes() -> None:
    class Failing:
        bucket = "fake"
        heads = 0
        puts = 0

        def head(self, key: str) -> None:
            self.heads += 1
            raise TemporaryFailure("HEAD k: HTTP 503")

        def put_bytes(self, key: str, data: bytes, *, metadata: object, content_type: str) -> str:
            self.puts += 1
            raise TemporaryFailure("PUT k: HTTP 503")

    fake = Failing()
    # With base 0.1 s and jitter 0.5-1.0, a 0.3 s deadline allows at most 3 attempts and a 2 s
    # deadline at least 5, whatever the random draws: the counts, not the clock, are asserted.
    store = async_store(fake, read_deadline=0.3, write_deadline=2.0)

    async def main() -> None:
        with pytest.raises(TemporaryFailure) as read_err:
            await store.head("k")
        # (The count may be one more than the fake saw: the deadline can cut an attempt whose
        # thread has not called it yet; then the error before it is told.)
        assert str(read_err.value).startswith("HEAD k: HTTP 503 (gave up after ")
        with pytest.raises(TemporaryFailure) as write_err:
            await store.put_bytes("k", b"", metadata={}, content_type="x/y")
        assert str(write_err.value).startswith("PUT k: HTTP 503 (gave up after ")

    trio.run(main)
    assert 2 <= fake.heads <= 3 < 5 <= fake.puts


def test_hanging_metadata_call_is_abandoned_at_the_deadline() -> None:
    fake = FakeStore()
    fake.block_head = True
    store = async_store(fake, read_deadline=0.3, write_deadline=10)

    async def main() -> None:
        start = trio.current_time()
        with pytest.raises(TemporaryFailure, match="HEAD k: no answer"):
            await store.head("k")
        assert trio.current_time() - start < 5  # abandoned, not waited for
        assert fake.finished == 0  # the worker thread is still stuck; we did not wait for it

    try:
        trio.run(main)
    finally:
        fake.release.set()


def test_upload_finishes_before_returning() -> None:
    """An upload must not go on behind our back after we gave up on it: a late PUT would land
    after the retry that replaced it."""
    fake = FakeStore()
    store = async_store(fake, read_deadline=10, write_deadline=0.3)
    timer = threading.Timer(0.8, fake.release.set)

    async def main() -> None:
        timer.start()
        # Late but complete: the result, or the deadline's error; either way only after the worker ended.
        with contextlib.suppress(TemporaryFailure):
            assert await store.put_file("k", "/nonexistent", metadata={}, content_type="x/y") == "etag"
        assert fake.finished == 1

    try:
        trio.run(main)
    finally:
        timer.cancel()
        fake.release.set()


def test_hanging_data_read_is_abandoned_at_the_deadline_and_keeps_its_token() -> None:
    """A GET of a store that never answers returns at the deadline, not at the socket timeout.
    Its thread keeps its limiter token until it ends, so abandoned threads stay bounded."""
    fake = FakeStore()
    store = async_store(fake, read_deadline=0.3, write_deadline=10, data_threads=1)

    async def main() -> None:
        start = trio.current_time()
        with pytest.raises(TemporaryFailure, match="GET k: no answer"):
            await store.get_range("k", 0, 4)
        assert trio.current_time() - start < 5
        assert fake.finished == 0 and store.data_limiter.borrowed_tokens == 1
        assert store.reachability.down
        with pytest.raises(TemporaryFailure):  # waits for the token, not for a second thread
            await store.get_range("k", 0, 4)
        assert fake.calls == 1
        fake.release.set()
        while store.data_limiter.borrowed_tokens:  # the abandoned thread ends and hands it back
            await trio.sleep(0.01)
        assert await store.get_range("k", 0, 4) == b"data"
        assert not store.reachability.down

    try:
        trio.run(main)
    finally:
        fake.release.set()


def test_an_abandoned_download_writes_only_to_its_own_file(tmp_path: Path) -> None:
    """The late writes of a download given up at its deadline must not reach a file that took
    over the number of a descriptor closed meanwhile."""
    started = threading.Event()
    release = threading.Event()

    class SlowDownload:
        bucket = "fake"

        def get_to_file(self, key: str, fd: int, *, etag: str | None = None) -> int:
            started.set()
            assert release.wait(10)
            return os.pwrite(fd, b"late bytes", 0)

    store = async_store(SlowDownload(), read_deadline=0.3, write_deadline=10)
    target = tmp_path / "staged"
    target.write_bytes(b"")
    other = tmp_path / "other"

    async def main() -> None:
        with pytest.raises(TemporaryFailure):
            await store.get_to_file("k", str(target))
        target.unlink()  # what the caller does with a failed download
        fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o600)  # likely the number just freed
        try:
            release.set()
            await trio.to_thread.run_sync(started.wait)
            while store.data_limiter.borrowed_tokens:
                await trio.sleep(0.01)
        finally:
            os.close(fd)

    try:
        trio.run(main)
    finally:
        release.set()
    assert other.read_bytes() == b""


def test_stop_writing_lets_go_of_uploads_in_flight() -> None:
    """Shutdown past the drain deadline: an upload blocked in its thread is let go of at once,
    and no new one starts; neither is retried (the journal keeps the data)."""
    fake = FakeStore()
    store = async_store(fake, read_deadline=10, write_deadline=60)

    async def main() -> None:
        async def upload() -> None:
            with pytest.raises(StoreStopped, match="given up"):
                await store.put_file("k", "/nonexistent", metadata={}, content_type="x/y")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            while fake.active < 1:
                await trio.sleep(0.01)
            start = trio.current_time()
            store.stop_writing()
        assert trio.current_time() - start < 1
        with pytest.raises(StoreStopped, match="not sent"):
            await store.put_file("k", "/nonexistent", metadata={}, content_type="x/y")
        assert fake.calls == 1

    try:
        trio.run(main)
    finally:
        fake.release.set()


def test_quota_only_where_the_store_has_one(moto: S3Server, bucket: str) -> None:
    """S3 has no bucket quota: no request is made. With the OBS signature the OBS call is sent."""
    assert ObsStore(store_config(moto, signature="v4"), bucket).set_quota(10 << 30) is False
    assert ObsStore(store_config(moto, signature="obs"), bucket).set_quota(10 << 30) is True


def test_head_many_delivers_every_answer_in_the_trio_thread(moto: S3Server, bucket: str, s3: Any) -> None:
    keys = [f"h/{i:03d}" for i in range(40)]
    put_many(s3, bucket, keys)
    store = AsyncStore(ObsStore(store_config(moto), bucket), read_deadline=10, write_deadline=10)
    got: dict[str, object] = {}

    def deliver(key: str, result: object) -> None:
        trio.lowlevel.current_task()  # raises outside the trio thread
        got[key] = result

    async def main() -> None:
        await store.head_many([*keys, "h/missing"], deliver, workers=4)

    trio.run(main)
    assert set(got) == {*keys, "h/missing"}
    assert all(isinstance(got[k], ObjectInfo) and got[k].key == k for k in keys)  # type: ignore[attr-defined]
    assert isinstance(got["h/missing"], NotFound)  # an error is an answer, not an exception


def test_head_many_stops_its_threads_when_cancelled() -> None:
    fake = FakeStore()
    fake.block_head = True
    store = async_store(fake, read_deadline=10, write_deadline=10)
    delivered: list[str] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(store.head_many, [f"k{i}" for i in range(1000)],
                                                     lambda key, _: delivered.append(key), workers=3))
                with trio.fail_after(5):
                    while fake.active < 3:
                        await trio.sleep(0.01)
                scope.cancel()
                fake.release.set()  # the calls in flight end; each thread then sees the cancel
        assert scope.cancelled_caught

    trio.run(main)
    # The three calls in flight when the cancel came finish; no thread takes a new key after it.
    assert fake.calls == 3 and fake.active == 0
    assert len(delivered) <= 3


def test_a_listing_leaves_the_metadata_threads_free() -> None:
    """head_many holds its threads for a whole listing: a stat elsewhere must not wait for it."""
    release = threading.Event()
    busy = threading.Semaphore(0)

    class SlowBulk:
        bucket = "fake"

        def head(self, key: str) -> str:
            if key.startswith("bulk/"):
                busy.release()
                assert release.wait(10)
            return key

    store = async_store(SlowBulk(), read_deadline=10, write_deadline=10, meta_threads=2, bulk_threads=2)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(store.head_many, [f"bulk/{i}" for i in range(10)],
                                                 lambda key, result: None, workers=2))
            for _ in range(2):  # both listing threads are inside a HEAD now
                await trio.to_thread.run_sync(busy.acquire)
            with trio.fail_after(5):
                assert await store.head("other") == "other"
            release.set()

    trio.run(main)
