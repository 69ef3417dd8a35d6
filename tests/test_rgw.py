"""Against Ceph RGW, the one server here that checks signatures: credentials and signature versions."""

from __future__ import annotations

import os

import pytest

from tests.conftest import boto_client
from tests.mounting import Mounter, fsync_tree
from tests.s3server import S3Server


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
