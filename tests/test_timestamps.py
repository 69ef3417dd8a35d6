"""Timestamps over a real mount: directory times follow their entries, ctime follows every
change, utimensat sets atime and mtime independently, and all of them survive a remount in
s3fs's format (x-amz-meta-atime/-mtime/-ctime), which s3fs 1.90 reads and writes too.

Times are compared with a clock reading taken on either side, not after sleeps: a directory's
times are first set far in the past, so any change made by an operation is a new value.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from obsfs.meta import parse_time_ns
from tests.conftest import boto_client
from tests.mounting import Mount, Mounter, wait_for
from tests.s3server import S3Server, start_moto
from tests.test_interop_s3fs import S3fs

OLD = 1_000_000_000_123_456_789  # 2001-09-09, with nanoseconds
UTIME_OMIT = (1 << 30) - 2
AT_FDCWD = -100
NS = 1_000_000_000


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: Path, atime_ns: int | None, mtime_ns: int | None) -> None:
    """utimensat(2) with UTIME_OMIT for a time given as None (os.utime cannot omit one)."""
    def spec(ns: int | None) -> Timespec:
        return Timespec(0, UTIME_OMIT) if ns is None else Timespec(*divmod(ns, NS))

    libc = ctypes.CDLL(None, use_errno=True)
    times = (Timespec * 2)(spec(atime_ns), spec(mtime_ns))
    if libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        raise OSError(ctypes.get_errno(), f"utimensat {path}")


def stored_times(s3: Any, bucket: str, key: str) -> tuple[int | None, int | None, int | None]:
    meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    return parse_time_ns(meta.get("atime")), parse_time_ns(meta.get("mtime")), parse_time_ns(meta.get("ctime"))


def marker_times(s3: Any, bucket: str, key: str) -> tuple[int | None, int | None, int | None] | None:
    """``stored_times``, or None while the marker is not in the store."""
    try:
        return stored_times(s3, bucket, key)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return None
        raise


def times(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server of this module's own, whose access log counts the marker PUTs."""
    server = start_moto(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


def test_parent_times_follow_each_change_of_its_entries(mnt: Mount, s3: Any) -> None:
    root = mnt.path
    for name in ("a", "b", "gone", "old"):
        (root / name).mkdir()
    (root / "a" / "f").write_bytes(b"x")

    def changes(parent: Path, operation: Callable[[], object]) -> None:
        os.utime(parent, ns=(OLD, OLD))
        _, _, ctime_before = times(parent)
        operation()
        atime, mtime, ctime = times(parent)
        assert mtime > OLD and ctime > ctime_before, f"{operation} left {parent}'s times"
        assert atime == OLD, "only mtime and ctime change"

    changes(root / "a", lambda: (root / "a" / "new").write_bytes(b""))
    changes(root / "a", lambda: (root / "a" / "sub").mkdir())
    changes(root / "a", lambda: os.mknod(root / "a" / "node", stat.S_IFREG | 0o600))
    changes(root / "a", lambda: (root / "a" / "link").symlink_to("f"))
    changes(root / "a", lambda: (root / "a" / "link").unlink())
    changes(root / "a", lambda: (root / "a" / "sub").rmdir())
    changes(root / "a", lambda: (root / "a" / "f").rename(root / "a" / "g"))
    changes(root / "a", lambda: (root / "a" / "g").rename(root / "b" / "g"))  # the source's directory
    changes(root / "b", lambda: (root / "b" / "g").rename(root / "a" / "g"))  # the target's directory
    changes(root, lambda: (root / "gone").rmdir())  # the bucket root: in memory only
    changes(root, lambda: (root / "old").rename(root / "renamed"))  # a directory's rename

    # Stored in the marker after the upload delay, while the mount goes on (mkdir's marker is
    # owed from the start: it is that same lazy write).
    shown = times(root / "a")
    wait_for(lambda: marker_times(s3, mnt.source, "a/") == shown, "a/'s times reach its marker")

    # A directory only other tools' keys imply keeps its new times in memory: s3fs makes no
    # marker for it either.
    s3.put_object(Bucket=mnt.source, Key="implicit/x", Body=b"x")
    implicit = root / "implicit"
    _, mtime, _ = times(implicit)
    (implicit / "y").write_bytes(b"y")
    assert times(implicit)[1] > mtime
    assert mnt.umount() == 0  # writes whatever is pending
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=mnt.source)["Contents"]}
    assert {k for k in keys if k.startswith("implicit")} == {"implicit/x", "implicit/y"}


def test_ctime_follows_chmod_chown_write_and_rename(mnt: Mount, s3: Any) -> None:
    f = mnt.path / "f"
    f.write_bytes(b"1")
    os.utime(f, ns=(OLD, OLD))

    def changes_ctime(operation: Callable[[], object], *, mtime_too: bool = False) -> None:
        atime, mtime, ctime = times(f)
        operation()
        after = times(f)
        assert after[2] > ctime, f"{operation} left the ctime"
        assert after[0] == atime, "atime stays"
        assert (after[1] > mtime) if mtime_too else after[1] == mtime

    changes_ctime(lambda: f.chmod(0o600))
    changes_ctime(lambda: os.chown(f, 1234, 5678))
    with open(f, "r+b", buffering=0) as stream:
        changes_ctime(lambda: stream.write(b"2"), mtime_too=True)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)  # stored: the rename below copies the object in the store
    finally:
        os.close(fd)
    _, _, ctime = times(f)
    f.rename(mnt.path / "g")
    # The kernel sets a renamed inode's ctime itself; the store shows whether we did.
    atime, mtime, stored_ctime = stored_times(s3, mnt.source, "g")
    assert stored_ctime is not None and stored_ctime > ctime, "the renamed object carries its new ctime"
    assert (atime, mtime) == times(mnt.path / "g")[:2]


def test_many_creates_in_one_directory_cost_one_marker_write(mounter: Mounter, logged: S3Server) -> None:
    """The lazy write is bounded: the upload delay (here longer than the test) gathers every
    change, mkdir's own marker included, and the unmount writes what is pending."""
    s3 = boto_client(logged)
    s3.create_bucket(Bucket="dirtimes")
    mnt = mounter.mount(logged, "dirtimes", "upload_delay=60")
    (mnt.path / "d").mkdir()
    for i in range(50):
        (mnt.path / "d" / f"f{i}").write_bytes(b"")
    os.unlink(mnt.path / "d" / "f0")
    shown = times(mnt.path / "d")
    assert mnt.umount() == 0
    assert logged.requests("PUT", "/dirtimes/d/ HTTP") == 1, "the marker, once, with the times of the last change"
    assert stored_times(s3, "dirtimes", "d/") == shown


def test_utimens_sets_atime_and_mtime_independently_and_a_remount_keeps_them(
        mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, "upload_delay=60")
    f, d = mnt.path / "f", mnt.path / "d"
    f.write_bytes(b"data")
    d.mkdir()
    (d / "x").write_bytes(b"")  # a lazy write of d's times is pending: the utime below must win
    os.utime(f, ns=(OLD, OLD + 7 * NS + 1))
    os.utime(d, ns=(OLD + 2, OLD + 3))
    assert times(f)[:2] == (OLD, OLD + 7 * NS + 1)
    utimensat(f, OLD + 5, None)
    assert times(f)[:2] == (OLD + 5, OLD + 7 * NS + 1)
    _, _, ctime = times(f)
    utimensat(f, None, OLD + 9)
    assert times(f)[:2] == (OLD + 5, OLD + 9)
    assert times(f)[2] > ctime, "utimensat changes ctime"
    assert f.read_bytes() == b"data"
    assert times(f)[0] == OLD + 5, "a read does not change atime (noatime, as s3fs)"
    before = {p.name: times(p) for p in (f, d)}
    assert mnt.umount() == 0
    assert stored_times(s3, bucket, "f")[:2] == (OLD + 5, OLD + 9)
    assert stored_times(s3, bucket, "d/")[:2] == (OLD + 2, OLD + 3)
    again = mounter.mount(moto, bucket)
    assert {name: times(again.path / name) for name in before} == before


@pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs is installed by scripts/install.sh")
def test_times_cross_over_to_s3fs_and_back(mounter: Mounter, moto: S3Server, bucket: str, tmp_path: Path) -> None:
    s3fs = S3fs(moto, tmp_path)
    try:
        theirs = s3fs.mount(bucket)
        (theirs / "theirs").write_bytes(b"2")
        os.utime(theirs / "theirs", ns=(OLD + 5, OLD + 6 * NS + 7))
        s3fs.unmount(theirs)
        ours = mounter.mount(moto, bucket)
        assert times(ours.path / "theirs")[:2] == (OLD + 5, OLD + 6 * NS + 7)
        (ours.path / "ours").write_bytes(b"1")
        (ours.path / "dir").mkdir()
        os.utime(ours.path / "ours", ns=(OLD + 1, OLD + 2 * NS))
        os.utime(ours.path / "dir", ns=(OLD + 3, OLD + 4))
        assert ours.umount() == 0
        theirs = s3fs.mount(bucket)
        assert times(theirs / "ours")[:2] == (OLD + 1, OLD + 2 * NS)
        assert times(theirs / "dir")[:2] == (OLD + 3, OLD + 4)
    finally:
        s3fs.teardown()
