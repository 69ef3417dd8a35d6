"""The read path through a real mount: the disk cache of clean chunks, keyed by ETag.

Requests are counted in moto's own access log, so "served from the cache" means the server saw
no GET, not that a counter of ours says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import boto_client
from tests.mounting import Mounter
from tests.s3server import S3Server, start_moto

MIB = 1 << 20


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[S3Server]:
    server = start_moto(log_path=tmp_path / "moto.log")
    yield server
    server.stop()


def read_through(mounter: Mounter, server: S3Server, bucket: str, cache: Path, *extra: str) -> bytes:
    """Mount with ``cache`` as the cache dir, read ``big`` start to end, unmount."""
    mnt = mounter.mount(server, bucket, f"cache_dir={cache}", *extra)
    data = (mnt.path / "big").read_bytes()
    assert mnt.umount() == 0
    return data


def test_a_remount_reads_from_the_disk_cache(mounter: Mounter, logged: S3Server, tmp_path: Path) -> None:
    s3 = boto_client(logged)
    s3.create_bucket(Bucket="readcache")
    first_version = os.urandom(10 * MIB + 5)
    s3.put_object(Bucket="readcache", Key="big", Body=first_version)
    cache = tmp_path / "cache"
    assert read_through(mounter, logged, "readcache", cache, "cache_size=100") == first_version
    gets = logged.requests("GET", "/readcache/big")
    assert gets >= 3  # 4 MiB chunks
    assert read_through(mounter, logged, "readcache", cache, "cache_size=100") == first_version
    assert logged.requests("GET", "/readcache/big") == gets, "the second mount read the cached chunks"
    # Another client replaces the object: the new ETag misses the cache, nothing stale is served.
    second_version = os.urandom(len(first_version))
    s3.put_object(Bucket="readcache", Key="big", Body=second_version)
    assert read_through(mounter, logged, "readcache", cache, "cache_size=100") == second_version
    assert logged.requests("GET", "/readcache/big") > gets


def test_a_scan_larger_than_a_quarter_of_the_cache_skips_it(mounter: Mounter, logged: S3Server,
                                                            tmp_path: Path) -> None:
    s3 = boto_client(logged)
    s3.create_bucket(Bucket="scan")
    s3.put_object(Bucket="scan", Key="big", Body=os.urandom(12 * MIB))
    cache = tmp_path / "cache"
    read_through(mounter, logged, "scan", cache, "cache_size=20")
    chunks = [p for p in (cache / "data").iterdir() if not p.name.endswith(".tmp")]
    # Only what the reader waited for (the first chunk) was kept; the readahead went past the cache.
    assert len(chunks) == 1
