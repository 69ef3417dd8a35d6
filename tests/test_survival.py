"""Open fds and cached names across a ``kill -9`` of the daemon of a keeper mount (issue #14,
item 2): inode numbers and file handles the kernel holds mean the same to the next daemon
(obsfs/handletable.py, FsCore.revive_inode), and data written through an fd that is still open
is kept. Mounted with ``attr_timeout=0`` so that every stat reaches the daemon and names the
inode number the kernel cached with the name (entry timeouts stay at their 60 s default)."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.mounting import Mount, Mounter
from tests.s3server import S3Server
from tests.test_keeper import _pid, _respawned
from tests.test_writeback import stored

OPTIONS = "keeper,attr_timeout=0"


def _kill_daemon(mnt: Mount) -> None:
    """SIGKILL the process that serves the mount (not the keeper) and wait for the next one; the
    mount must answer again within 5 s (issue #14)."""
    old = _pid(mnt, "pid")
    start = time.monotonic()
    os.kill(old, signal.SIGKILL)
    _respawned(mnt, old)
    os.stat(mnt.path)
    assert time.monotonic() - start < 5


def _cache_dir(mounter: Mounter, bucket: str) -> Path:
    return mounter.tmp / f"cache-{bucket}"


def test_open_fds_survive_kill_9(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    data = os.urandom(1 << 20)
    s3.put_object(Bucket=bucket, Key="dir/read", Body=data)
    mnt = mounter.mount(moto, bucket, OPTIONS)
    before = os.stat(mnt.path / "dir" / "read")
    reader = os.open(mnt.path / "dir" / "read", os.O_RDONLY)
    writer = os.open(mnt.path / "dir" / "written", os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        assert os.read(reader, len(data) // 2) == data[:len(data) // 2]
        assert os.write(writer, b"acknowledged by write() ") == 24  # neither closed nor fsynced
        _kill_daemon(mnt)
        # A name the kernel cached names the same inode number, which the next daemon knows.
        after = os.stat(mnt.path / "dir" / "read")
        assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
        assert os.fstat(writer).st_size == 24
        # Pages the kernel cached would hide the handle; dropped, the rest is read through it.
        os.posix_fadvise(reader, 0, 0, os.POSIX_FADV_DONTNEED)
        rest = b""
        while chunk := os.read(reader, 1 << 16):
            rest += chunk
        assert rest == data[len(data) // 2:]
        assert os.pread(reader, 100, 0) == data[:100]
        assert os.write(writer, b"and after the kill") == 18
    finally:
        os.close(reader)
        os.close(writer)  # close() succeeds: FLUSH and RELEASE of handles of the dead daemon
    assert (mnt.path / "dir" / "written").read_bytes() == b"acknowledged by write() and after the kill"
    assert os.stat(mnt.path / "dir" / "written").st_mode & 0o777 == 0o640
    assert mnt.umount() == 0
    assert stored(s3, bucket, "dir/written") == b"acknowledged by write() and after the kill"
    assert "discarding unacknowledged partial write" not in mounter.log_text()


def test_fsynced_writer_goes_on_from_its_upload(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """An fsync uploads while the fd stays open; the next daemon's upload is conditional on that
    version (the handle table's base ETag), so it replaces it, without a conflict copy."""
    s3.put_object(Bucket=bucket, Key="log", Body=b"old:")
    mnt = mounter.mount(moto, bucket, OPTIONS)
    fd = os.open(mnt.path / "log", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"fsynced,")
        os.fsync(fd)
        assert stored(s3, bucket, "log") == b"old:fsynced,"
        os.write(fd, b"unsynced,")
        _kill_daemon(mnt)
        os.write(fd, b"after")
        os.fsync(fd)
        assert stored(s3, bucket, "log") == b"old:fsynced,unsynced,after"
    finally:
        os.close(fd)
    assert mnt.umount() == 0
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["log"]


def test_unknown_inode_number_makes_the_kernel_walk_again(mounter: Mounter, moto: S3Server, bucket: str,
                                                          s3: Any) -> None:
    """A number neither the daemon nor the inode table knows is ESTALE: the VFS walks the path
    again (LOOKUP_REVAL), and the cached directory gets the number its path has now. (Objects are
    put directly: a file written through the mount would be known from the journal anyway.)"""
    s3.put_object(Bucket=bucket, Key="d/x", Body=b"x")
    mnt = mounter.mount(moto, bucket, OPTIONS)
    old, root = os.stat(mnt.path / "d").st_ino, os.stat(mnt.path)
    _kill_daemon(mnt)
    # The root keeps its times across daemons: were they to change, the kernel would drop every
    # name it cached below it, and no old number would reach the next daemon.
    assert os.stat(mnt.path).st_mtime_ns == root.st_mtime_ns
    with sqlite3.connect(_cache_dir(mounter, bucket) / "inodes.db") as db:
        assert db.execute("DELETE FROM inodes WHERE path = 'd'").rowcount == 1
    # A LOOKUP in the directory the kernel cached names its old number.
    assert os.stat(mnt.path / "d" / "x").st_size == 1
    assert os.stat(mnt.path / "d").st_ino != old


def test_a_directory_fd_survives(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    mnt = mounter.mount(moto, bucket, OPTIONS)
    (mnt.path / "d").mkdir()
    for name in ("a", "b"):
        (mnt.path / "d" / name).write_bytes(b"")
    fd = os.open(mnt.path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        _kill_daemon(mnt)
        assert sorted(os.listdir(fd)) == ["a", "b"]
    finally:
        os.close(fd)


def test_an_fd_of_a_file_deleted_meanwhile_is_stale(mounter: Mounter, moto: S3Server, bucket: str,
                                                      s3: Any) -> None:
    """The bound: a file another client deleted while the daemon was down cannot be read on, but
    its fd closes without an error."""
    mnt = mounter.mount(moto, bucket, OPTIONS)
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x" * 100)
    fd = os.open(mnt.path / "gone", os.O_RDONLY)
    try:
        _kill_daemon(mnt)
        s3.delete_object(Bucket=bucket, Key="gone")
        with pytest.raises(OSError) as err:
            os.pread(fd, 10, 0)
        assert err.value.errno == errno.ESTALE  # from the GETATTR the kernel sends first
        with pytest.raises(OSError) as err:
            os.fstat(fd)
        assert err.value.errno == errno.ESTALE
    finally:
        os.close(fd)
