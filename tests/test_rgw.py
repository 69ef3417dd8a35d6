"""Against Ceph RGW, the one server here that checks signatures: credentials and signature versions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from obsfs.backend.base import ListPage
from obsfs.backend.obs import ObsStore
from obsfs.errors import AccessDenied, BadCredentials, BucketNotFound
from obsfs.listranges import list_ranges, split
from tests.conftest import boto_client, store_config
from tests.gate import KeepAliveProxy
from tests.mounting import Mounter, fsync_tree
from tests.s3server import S3Server, start_rgw, stop_rgw


@pytest.fixture(scope="module")
def rgw_bucket(rgw: S3Server) -> str:
    boto_client(rgw).create_bucket(Bucket="rgw-test")
    return "rgw-test"


def wrong(server: S3Server, *, access_key: str | None = None, secret_key: str | None = None) -> S3Server:
    return S3Server(endpoint=server.endpoint, access_key=access_key or server.access_key,
                    secret_key=secret_key or server.secret_key, kind=server.kind, port=server.port)


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_mount_and_write_with_each_signature(mounter: Mounter, rgw: S3Server, rgw_bucket: str,
                                             signature: str) -> None:
    mnt = mounter.mount(rgw, rgw_bucket, f"signature={signature}")
    payload = os.urandom(1 << 20)
    (mnt.path / f"sig-{signature}").write_bytes(payload)
    os.chmod(mnt.path / f"sig-{signature}", 0o640)
    fsync_tree(mnt.path)  # the write-back cache uploads in the background; fsync waits for it
    obj = boto_client(rgw).get_object(Bucket=rgw_bucket, Key=f"sig-{signature}")
    assert obj["Body"].read() == payload
    assert int(obj["Metadata"]["mode"]) & 0o777 == 0o640


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_heads_over_keep_alive_with_each_signature(rgw: S3Server, rgw_bucket: str, signature: str) -> None:
    """RGW checks the signatures keepalive.py makes; the proxy shows the connection is reused."""
    boto_client(rgw).put_object(Bucket=rgw_bucket, Key="ka/ü b+%41", Body=b"abc", Metadata={"mode": "33188"})
    proxy = KeepAliveProxy(rgw.port)
    proxy.start()
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        store = ObsStore(store_config(rgw, endpoint=endpoint, signature=signature), rgw_bucket)
        for _ in range(3):
            info = store.head("ka/ü b+%41")
            assert info.size == 3 and info.metadata is not None and info.metadata["mode"] == "33188"
        assert proxy.connections == 1 and len(proxy.requests) == 3
        store.close()
        bad = ObsStore(store_config(rgw, endpoint=endpoint, signature=signature, secret_key="not-it"), rgw_bucket)
        with pytest.raises(AccessDenied):  # a HEAD's 403 has no body, hence no error code
            bad.head("ka/ü b+%41")
        bad.close()
    finally:
        proxy.stop()


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_small_puts_over_keep_alive_with_each_signature(rgw: S3Server, rgw_bucket: str, tmp_path: Path,
                                                        signature: str) -> None:
    """RGW checks the signatures of the PUTs keepalive.py sends for small files and markers, with user
    metadata and conditions; the proxy shows the connection is reused, and an answer with an
    error code (a bad key) is read off the same kind of connection."""
    src = tmp_path / "src"
    src.write_bytes(b"small")
    meta = {"mode": "33188", "note": "a b;c/ü'*%41"}
    proxy = KeepAliveProxy(rgw.port)
    proxy.start()
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        store = ObsStore(store_config(rgw, endpoint=endpoint, signature=signature), rgw_bucket)
        etags = [store.put_file(f"kp/ü b+%41-{n}-{signature}", str(src), metadata=meta,
                                content_type="text/x-odd; a=b", if_none_match=True) for n in range(3)]
        assert proxy.connections == 1 and len(proxy.requests) == 3
        got = boto_client(rgw).get_object(Bucket=rgw_bucket, Key=f"kp/ü b+%41-0-{signature}")
        assert got["Body"].read() == b"small" and got["ETag"].strip('"') == etags[0]
        assert got["ContentType"] == "text/x-odd; a=b"
        sdk = store.client.headObject(rgw_bucket, f"kp/ü b+%41-0-{signature}", extensionHeaders=store._ext())
        info = store.head(f"kp/ü b+%41-0-{signature}")
        assert info.metadata is not None and info.metadata["note"] == meta["note"]
        assert {name: info.metadata.get(name) for name in meta} == {name: dict(sdk.header)[name] for name in meta}
        assert store.put_file(f"kp/ü b+%41-0-{signature}", str(src), metadata={}, content_type="text/plain",
                              if_match=etags[0]) == etags[0]
        marker = f"kp/dir ü+%41-{signature}/"  # a directory's marker (put_bytes) goes the same way
        etag = store.put_bytes(marker, b"", metadata=meta, content_type="application/x-directory")
        head = boto_client(rgw).head_object(Bucket=rgw_bucket, Key=marker)
        assert head["ETag"].strip('"') == etag and head["Metadata"]["mode"] == meta["mode"]
        store.close()
        bad = ObsStore(store_config(rgw, endpoint=endpoint, signature=signature, secret_key="not-it"), rgw_bucket)
        with pytest.raises(BadCredentials, match="secret key does not match"):  # the code, from the body
            bad.put_file("kp/refused", str(src), metadata={}, content_type="text/plain")
        bad.close()
    finally:
        proxy.stop()


def list_pages(store: ObsStore, prefix: str, delimiter: str | None) -> list[ListPage]:
    pages = [store.list(prefix, delimiter, None, max_keys=2)]
    while pages[-1].next_marker is not None:
        pages.append(store.list(prefix, delimiter, pages[-1].next_marker, max_keys=2))
    return pages


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_listings_read_what_the_sdk_reads(rgw: S3Server, rgw_bucket: str, signature: str) -> None:
    """Listings and small GETs go without the SDK (keepalive.py, signed here): RGW checks the
    signatures, with odd keys in the prefix, the marker and the GET's path, and each page says
    what the SDK's says of it."""
    keys = ["ls/ü b+%41/x", "ls/ü b+%41/y&<z>", "ls/a~b=c?d#e", "ls/plain", "ls/sub/deep/f", "ls/\u00e9t\u00e9"]
    for key in keys:
        boto_client(rgw).put_object(Bucket=rgw_bucket, Key=key, Body=key.encode())
    store = ObsStore(store_config(rgw, signature=signature), rgw_bucket)
    try:
        cases = [("ls/", "/"), ("ls/ü b+%41/", "/"), ("ls/", None)]
        pages = {case: list_pages(store, *case) for case in cases}
        store.check_access("ls/")
        small = {key: store.read_small(key, 1000) for key in keys}  # an attribute index's read
        assert store._client is None  # no SDK client was made for any of that
        assert small == {key: key.encode() for key in keys}
        assert store.read_small(keys[0], 3) == keys[0].encode()[:3]
        for (prefix, delimiter), ours in pages.items():
            marker = None
            for page in ours:
                sdk = store.client.listObjects(rgw_bucket, prefix=prefix, marker=marker, max_keys=2,
                                               delimiter=delimiter, extensionHeaders=store._ext())
                assert sdk.status == 200
                assert [(o.key, o.size, o.etag) for o in page.objects] == [
                    (c.key, c.size, c.etag.strip('"')) for c in sdk.body.contents]
                assert page.prefixes == [p.prefix for p in sdk.body.commonPrefixs]
                for info in page.objects:  # whole seconds, as a HEAD says
                    assert info.last_modified == store.head(info.key).last_modified
                assert (page.next_marker is not None) == bool(sdk.body.is_truncated)
                marker = page.next_marker
    finally:
        store.close()
    bad = ObsStore(store_config(rgw, signature=signature, secret_key="not-it"), rgw_bucket)
    with pytest.raises(BadCredentials, match="secret key does not match"):  # the code, from the body
        bad.list("ls/")
    bad.close()
    with pytest.raises(BucketNotFound):
        ObsStore(store_config(rgw, signature=signature), "no-such-bucket-here").check_access()


@pytest.mark.parametrize("signature", ["v2", "v4"])
def test_multi_object_deletes_with_each_signature(rgw: S3Server, rgw_bucket: str, signature: str) -> None:
    """Multi-object deletes go without the SDK (keepalive.py, deletexml.py): RGW checks the
    signature, the Content-MD5 and the body, with keys XML must escape."""
    s3 = boto_client(rgw)
    keys = ["md/ü b+%41/x", "md/a & <b>\"'", "md/plain", "md/sub/deep/f"]
    for key in keys:
        s3.put_object(Bucket=rgw_bucket, Key=key, Body=b"x")
    s3.put_object(Bucket=rgw_bucket, Key="md/keep", Body=b"x")
    store = ObsStore(store_config(rgw, signature=signature), rgw_bucket)
    try:
        store.delete_many([*keys, "md/never-there"])
        assert store._client is None
    finally:
        store.close()
    assert [o["Key"] for o in s3.list_objects(Bucket=rgw_bucket, Prefix="md/").get("Contents", [])] == ["md/keep"]
    bad = ObsStore(store_config(rgw, signature=signature, secret_key="not-it"), rgw_bucket)
    with pytest.raises(BadCredentials):
        bad.delete_many(["md/keep"])
    bad.close()


def test_wrong_secret_key(mounter: Mounter, rgw: S3Server, rgw_bucket: str) -> None:
    result, _ = mounter.run(wrong(rgw, secret_key="not-the-secret"), rgw_bucket)
    assert result.returncode == 3
    assert "secret key does not match" in result.stderr
    assert "not-the-secret" not in result.stderr


def test_unknown_access_key(mounter: Mounter, rgw: S3Server, rgw_bucket: str) -> None:
    result, _ = mounter.run(wrong(rgw, access_key="NOBODY"), rgw_bucket)
    assert result.returncode == 3
    assert "does not know this access key" in result.stderr


def test_missing_bucket_on_rgw(mounter: Mounter, rgw: S3Server) -> None:
    result, _ = mounter.run(rgw, "rgw-no-such-bucket")
    assert result.returncode == 4
    assert "rgw-no-such-bucket" in result.stderr


def test_a_bluestore_cluster_starts(tmp_path: Path) -> None:
    """The bench's default: bluestore on a sparse file (its block file must not be the symlink
    that ceph-osd --mkfs makes in the OSD's directory, or mkfs loops on it)."""
    server = start_rgw(tmp_path / "ceph", osd_store="bluestore")
    try:
        client = boto_client(server)
        client.create_bucket(Bucket="bluestore-check")
        client.put_object(Bucket="bluestore-check", Key="k", Body=b"on bluestore")
        assert client.get_object(Bucket="bluestore-check", Key="k")["Body"].read() == b"on bluestore"
    finally:
        stop_rgw(tmp_path / "ceph")


def test_pages_and_ranges_list_what_boto3_lists(rgw: S3Server, rgw_bucket: str) -> None:
    """RGW's own XML (listxml.py) and its marker semantics (listranges.py): pages of 3 keys,
    ranges of 2 hinted names of which some are gone, keys that need escaping, subdirectories."""
    s3 = boto_client(rgw)
    keys = ["lr/", "lr/a & b", "lr/a <c>", "lr/a/x", "lr/b", "lr/b.", "lr/b/y", "lr/b0", "lr/é", "lr/中 文",
            "lr/\"q\"", "lr/+plus", "lr/~", "lr/z/", "lr0"]
    for key in keys:
        s3.put_object(Bucket=rgw_bucket, Key=key, Body=key.encode())
    want = s3.list_objects(Bucket=rgw_bucket, Prefix="lr/", Delimiter="/")
    store = ObsStore(store_config(rgw, signature="v2"), rgw_bucket)

    async def fetch(marker: str | None) -> ListPage:
        return store.list("lr/", "/", marker, max_keys=3)

    hints = ["lr/a & b", "lr/b", "lr/b0", "lr/gone", "lr/中 文", "lr/~"]
    got = trio.run(lambda: list_ranges(fetch, split("lr/", hints, 2)))
    assert [(o.key, o.size, o.etag) for o in got.objects] == \
        [(o["Key"], o["Size"], o["ETag"].strip('"')) for o in want["Contents"]]
    assert got.prefixes == [p["Prefix"] for p in want["CommonPrefixes"]] == ["lr/a/", "lr/b/", "lr/z/"]
    seconds = {float(int(o["LastModified"].timestamp())) for o in want["Contents"]}
    assert {o.last_modified for o in got.objects} <= seconds
    store.close()
