"""Parts of a large file go to the store while it is still being written (obsfs/partstream.py).

Each test writes through a real mount on moto and watches the multipart upload from outside with
boto3: parts must appear before close, and whatever breaks the append-only pattern (a write before
the end, a truncate, a rename, an unlink, a crash) must still give exactly the file's contents
and leave no open multipart upload behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obsfs.upload import local_etags
from tests.mounting import Mount, Mounter, wait_for
from tests.s3server import S3Server
from tests.test_writeback import HOLD, kill_daemon, stored

PART = 5 << 20
OPTIONS = (HOLD, "multipart_size=5")


def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])  # type: ignore[no-any-return]


def parts_sent(s3: Any, bucket: str, key: str) -> int:
    uploads = [u for u in open_uploads(s3, bucket) if u["Key"] == key]
    if not uploads:
        return 0
    return len(s3.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", []))


def wait_for_parts(s3: Any, bucket: str, key: str, count: int) -> None:
    wait_for(lambda: parts_sent(s3, bucket, key) >= count, f"{count} parts of {key} uploaded before close")


def wait_for_no_uploads(s3: Any, bucket: str) -> None:
    wait_for(lambda: not open_uploads(s3, bucket), "every multipart upload completed or aborted")


def test_parts_go_out_while_the_file_is_written(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                                tmp: Path) -> None:
    mnt = mounter.mount(moto, bucket, *OPTIONS)
    data = os.urandom(3 * PART + 123_457)  # no two parts alike: a misplaced part shows
    fd = os.open(mnt.path / "big.bin", os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.write(fd, data[:2 * PART + 1])
        wait_for_parts(s3, bucket, "big.bin", 2)
        assert "big.bin" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        os.write(fd, data[2 * PART + 1:])
        os.fsync(fd)
    finally:
        os.close(fd)
    assert stored(s3, bucket, "big.bin") == data
    # An ETag the retry logic recognises as ours (moto's copy onto itself gives the body's MD5).
    copy = tmp / "copy.bin"
    copy.write_bytes(data)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"].strip('"') in local_etags(str(copy), len(data), PART)
    # The attributes are those of the finished file, not of the moment the upload began.
    st = os.stat(mnt.path / "big.bin")
    assert head["Metadata"]["mode"] == str(st.st_mode)
    seconds, _, fraction = head["Metadata"]["mtime"].partition(".")  # s3fs's "sec.nsec"
    assert int(seconds) * 10**9 + int(fraction.ljust(9, "0")) == st.st_mtime_ns
    assert not open_uploads(s3, bucket)


def test_a_file_ending_on_a_part_boundary(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, *OPTIONS)
    data = os.urandom(3 * PART)
    with open(mnt.path / "even.bin", "wb") as f:
        f.write(data)
        f.flush()
        wait_for_parts(s3, bucket, "even.bin", 3)  # all of it, before close: no tail part is left
        os.fsync(f.fileno())
    assert stored(s3, bucket, "even.bin") == data
    assert not open_uploads(s3, bucket)


def _write_then(mnt: Mount, s3: Any, bucket: str, name: str, change: Callable[[int], bytes]) -> bytes:
    """Write 2.4 parts, wait until two are in the store, apply ``change`` to the open descriptor
    (it returns the expected contents), then fsync and close."""
    data = os.urandom(2 * PART + 2 * (1 << 20))
    fd = os.open(mnt.path / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        wait_for_parts(s3, bucket, name, 2)
        expected = change(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    return expected


def test_a_write_before_the_end_abandons_the_stream(mounter: Mounter, moto: S3Server, bucket: str,
                                                    s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, *OPTIONS)

    def rewrite_start(fd: int) -> bytes:
        os.pwrite(fd, b"X" * 1000, 10)
        return bytes(os.pread(fd, 3 * PART, 0))

    expected = _write_then(mnt, s3, bucket, "rewritten.bin", rewrite_start)
    assert stored(s3, bucket, "rewritten.bin") == expected
    assert expected[10:1010] == b"X" * 1000
    wait_for_no_uploads(s3, bucket)


def test_truncate_abandons_the_stream(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, *OPTIONS)

    def shrink_and_append(fd: int) -> bytes:
        os.ftruncate(fd, PART + 7)
        os.pwrite(fd, b"tail", PART + 7)
        return bytes(os.pread(fd, 3 * PART, 0))

    expected = _write_then(mnt, s3, bucket, "shrunk.bin", shrink_and_append)
    assert len(expected) == PART + 11
    assert stored(s3, bucket, "shrunk.bin") == expected
    wait_for_no_uploads(s3, bucket)


def test_rename_while_streaming(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, *OPTIONS)

    def rename_and_append(fd: int) -> bytes:
        os.rename(mnt.path / "before.bin", mnt.path / "after.bin")
        os.write(fd, b"more after the rename")
        return bytes(os.pread(fd, 3 * PART, 0))

    expected = _write_then(mnt, s3, bucket, "before.bin", rename_and_append)
    assert stored(s3, bucket, "after.bin") == expected
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["after.bin"]
    wait_for_no_uploads(s3, bucket)


def test_unlink_while_streaming(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, *OPTIONS)
    fd = os.open(mnt.path / "gone.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(2 * PART + 1))
        wait_for_parts(s3, bucket, "gone.bin", 2)
        os.unlink(mnt.path / "gone.bin")
        os.write(fd, b"still writable after the unlink")
    finally:
        os.close(fd)
    wait_for_no_uploads(s3, bucket)
    assert mnt.umount() == 0
    assert not s3.list_objects_v2(Bucket=bucket).get("Contents")


def test_kill_9_mid_stream_aborts_the_upload_on_remount(mounter: Mounter, moto: S3Server, bucket: str,
                                                        s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, *OPTIONS)
    closed = os.urandom(100_000)  # one PUT, held back by upload_delay
    (mnt.path / "closed.bin").write_bytes(closed)
    fd = os.open(mnt.path / "torn.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, os.urandom(2 * PART + 1))
    wait_for_parts(s3, bucket, "torn.bin", 2)
    kill_daemon(mnt)
    with contextlib.suppress(OSError):  # ENOTCONN: the daemon is gone
        os.close(fd)
    assert [u["Key"] for u in open_uploads(s3, bucket)] == ["torn.bin"]
    again = mounter.mount(moto, bucket, *OPTIONS)
    assert not open_uploads(s3, bucket), "the new daemon aborts what the old one left open"
    assert again.umount() == 0
    # The closed file was acknowledged, so it is uploaded; the torn one never was.
    assert hashlib.sha256(stored(s3, bucket, "closed.bin")).digest() == hashlib.sha256(closed).digest()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["closed.bin"]
