"""Removals through the journal (obsfs/deletes.py): acknowledged locally, sent in batches, replayed
after kill -9, and never landing after a newer object of the same key. ``upload_delay=60`` holds
the queue, so a test sees the store before the batch; ``upload_delay=0`` sends it at once, so it
races whatever the test does next."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import boto_client
from tests.mounting import Mounter, daemon_pid, fsync_dir, syscalls_of
from tests.s3server import S3Server, start_moto
from tests.test_races import body, keys
from tests.test_writeback import HOLD, kill_daemon


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[S3Server]:
    """A moto server of the test's own whose request log the test counts."""
    server = start_moto(log_path=tmp_path / "moto.log")
    yield server
    server.stop()


def put_tree(s3: Any, bucket: str, dirs: int, files: int) -> list[str]:
    """``dirs`` directories with markers (as obsfs and s3fs write them), ``files`` files each."""
    made = ["top/"]
    for d in range(dirs):
        made.append(f"top/d{d}/")
        made += [f"top/d{d}/f{f}" for f in range(files)]
    for key in made:
        s3.put_object(Bucket=bucket, Key=key, Body=b"" if key.endswith("/") else key.encode())
    return made


def test_rm_r_is_acknowledged_locally_and_sent_in_one_batch(mounter: Mounter, logged: S3Server,
                                                            tmp_path: Path) -> None:
    """``rm -r`` returns while the store still has every key: the names are gone for the mount
    (lookups, listings, the rmdir of each directory), and fsync of the parent sends them, in
    one multi-object DELETE per level of the tree instead of one request per key."""
    s3 = boto_client(logged)
    s3.create_bucket(Bucket="rmtree")
    made = put_tree(s3, "rmtree", dirs=4, files=25)
    mnt = mounter.mount(logged, "rmtree", HOLD)
    shutil.rmtree(mnt.path / "top")
    assert os.listdir(mnt.path) == []
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.path / "top" / "d0" / "f0")
    assert keys(s3, "rmtree") == sorted(made), "sent before the delay: nothing was queued"
    fsync_dir(mnt.path)
    assert keys(s3, "rmtree") == []
    # Files, then their directories' markers, then the top one: each level once its keys below are gone.
    assert logged.requests("POST", "/rmtree?delete") == 3
    assert logged.requests("DELETE", "/rmtree/") == 0
    assert mnt.umount() == 0


def test_queued_deletes_survive_kill_9(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """Removals acknowledged, then the daemon is killed before the batch: the next mount hides the
    names at once and sends the deletes; the tree never comes back."""
    put_tree(s3, bucket, dirs=2, files=5)
    s3.put_object(Bucket=bucket, Key="kept", Body=b"kept")
    mnt = mounter.mount(moto, bucket, HOLD)
    shutil.rmtree(mnt.path / "top")
    kill_daemon(mnt)
    assert "top/d0/f0" in keys(s3, bucket)
    again = mounter.mount(moto, bucket, HOLD)
    assert os.listdir(again.path) == ["kept"]
    with pytest.raises(FileNotFoundError):
        os.stat(again.path / "top")
    assert again.umount() == 0  # drains the replayed deletes
    assert keys(s3, bucket) == ["kept"]


def test_unlinks_are_fsynced_by_fsyncdir_not_one_by_one(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                                        tmp_path: Path) -> None:
    """An unlink's journal row survives kill -9 without an fsync (the test above replays such
    rows); POSIX makes an unlink durable when its directory is fsynced, so that is when the
    journal is fsynced. An fsync per unlink made rm -r of 1,000 files wait for 1,000 of them."""
    s3.put_object(Bucket=bucket, Key="d/", Body=b"")
    for n in range(20):
        s3.put_object(Bucket=bucket, Key=f"d/f{n}", Body=b"x")
    mnt = mounter.mount(moto, bucket, HOLD)
    names = os.listdir(mnt.path / "d")
    sync_calls = ["fsync", "fdatasync"]
    with syscalls_of(daemon_pid(mnt.path), sync_calls, tmp_path) as during_unlinks:
        for name in names:
            os.unlink(mnt.path / "d" / name)
    assert during_unlinks() == 0
    with syscalls_of(daemon_pid(mnt.path), sync_calls, tmp_path) as during_fsyncdir:
        fsync_dir(mnt.path / "d")
    assert during_fsyncdir() > 0
    assert keys(s3, bucket) == ["d/"]
    assert mnt.umount() == 0


def test_unlink_then_create_the_same_name(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """The new file's upload is never deleted by the delete queued for the old one: the upload
    (at unmount, before the queue's turn) must send the delete first."""
    mnt = mounter.mount(moto, bucket, HOLD)
    for n in range(20):
        s3.put_object(Bucket=bucket, Key=f"f{n}", Body=b"old")
        os.unlink(mnt.path / f"f{n}")
        (mnt.path / f"f{n}").write_bytes(f"new {n}".encode())
    assert mnt.umount() == 0
    assert keys(s3, bucket) == sorted(f"f{r}" for r in range(20)), "a conflict copy, or a new file deleted"
    assert all(body(s3, bucket, f"f{r}") == f"new {r}".encode() for r in range(20))


def test_unlink_and_create_replayed_in_order_after_kill_9(mounter: Mounter, moto: S3Server, bucket: str,
                                                          s3: Any) -> None:
    """Both the delete of the old object and the upload of the new file are in the journal when the
    daemon dies: the next mount sends them in the order they happened."""
    s3.put_object(Bucket=bucket, Key="a", Body=b"old")
    mnt = mounter.mount(moto, bucket, HOLD)
    os.unlink(mnt.path / "a")
    (mnt.path / "a").write_bytes(b"new")
    kill_daemon(mnt)
    again = mounter.mount(moto, bucket, "upload_delay=0")
    assert (again.path / "a").read_bytes() == b"new"
    assert again.umount() == 0
    assert keys(s3, bucket) == ["a"]
    assert body(s3, bucket, "a") == b"new"


@pytest.mark.parametrize("unsent", [False, True], ids=["stored", "unsent"])
def test_rename_onto_a_removed_name(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                    unsent: bool) -> None:
    """A rename onto a name whose delete is queued: the moved file stays (stored: a COPY; unsent:
    an upload under the new name)."""
    s3.put_object(Bucket=bucket, Key="b", Body=b"removed")
    if not unsent:
        s3.put_object(Bucket=bucket, Key="a", Body=b"moved")
    mnt = mounter.mount(moto, bucket, HOLD)
    os.unlink(mnt.path / "b")
    if unsent:
        (mnt.path / "a").write_bytes(b"moved")
    os.rename(mnt.path / "a", mnt.path / "b")
    assert mnt.umount() == 0
    assert keys(s3, bucket) == ["b"]
    assert body(s3, bucket, "b") == b"moved"


def test_mkdir_and_symlink_onto_removed_names(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """Entries stored at once (a directory's marker, a symlink) after the same name was removed."""
    s3.put_object(Bucket=bucket, Key="d/", Body=b"")
    s3.put_object(Bucket=bucket, Key="l", Body=b"removed")
    mnt = mounter.mount(moto, bucket, HOLD)
    os.rmdir(mnt.path / "d")
    os.mkdir(mnt.path / "d")
    os.unlink(mnt.path / "l")
    os.symlink("target", mnt.path / "l")
    assert mnt.umount() == 0
    assert keys(s3, bucket) == ["d/", "l"]
    again = mounter.mount(moto, bucket)
    assert os.path.isdir(again.path / "d")
    assert os.readlink(again.path / "l") == "target"


def test_rmdir_still_refuses_a_directory_with_live_entries(mounter: Mounter, moto: S3Server, bucket: str,
                                                           s3: Any) -> None:
    """Queued deletes make a directory empty only of what this mount removed."""
    put_tree(s3, bucket, dirs=1, files=3)
    mnt = mounter.mount(moto, bucket, HOLD)
    os.unlink(mnt.path / "top" / "d0" / "f0")
    with pytest.raises(OSError) as caught:
        os.rmdir(mnt.path / "top" / "d0")
    assert caught.value.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(mnt.path / "top" / "d0")) == ["f1", "f2"]
    assert mnt.umount() == 0
    assert keys(s3, bucket) == ["top/", "top/d0/", "top/d0/f1", "top/d0/f2"]
