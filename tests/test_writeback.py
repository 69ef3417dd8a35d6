"""The write-back cache under failure: nothing that close() or fsync() acknowledged is lost."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from obsfs.journal import JOURNALED_DATA_MAX
from obsfs.runtime import state_file
from tests.conftest import boto_client
from tests.mounting import (
    Mount,
    Mounter,
    daemon_pid,
    force_unmount,
    fsync_tree,
    is_mounted,
    kill_daemon_of,
    syscalls_of,
    wait_for,
)
from tests.s3server import S3Server, start_moto

# Uploads wait a minute: whatever the tests write stays dirty in the cache until they say so.
HOLD = "upload_delay=60"


def kill_daemon(mnt: Mount) -> None:
    """The mount crashes: its daemon, and its keeper, which would otherwise start the next daemon
    and upload the journal itself; the next mount must find what the crash left."""
    pid = int(state_file(str(mnt.path), "pid").read_text())
    kill_daemon_of(mnt.path)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    force_unmount(mnt.path)
    assert not is_mounted(mnt.path)


def stored(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]


def remount_and_drain(mounter: Mounter, server: S3Server, bucket: str, *extra: str) -> Mount:
    """A new daemon on the same cache dir uploads what the old one left; umount waits for it."""
    mnt = mounter.mount(server, bucket, *extra)
    assert mnt.umount() == 0
    return mnt


def test_fsync_returns_once_visible_in_store(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, HOLD)
    payload = os.urandom(100_000)
    with open(mnt.path / "f", "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
        assert stored(s3, bucket, "f") == payload  # no waiting: fsync already did
    # close() alone leaves it in the cache while the upload is held back, yet every reader sees it
    (mnt.path / "g").write_bytes(b"pending")
    assert "g" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert (mnt.path / "g").read_bytes() == b"pending"
    assert "g" in os.listdir(mnt.path)


def test_kill_9_during_a_large_write(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, HOLD, "multipart_size=5")
    closed = os.urandom(24 << 20)
    (mnt.path / "closed.bin").write_bytes(closed)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    while True:\n"
        "        f.write(os.urandom(1 << 20))\n"), str(mnt.path / "open.bin")], stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    kill_daemon(mnt)
    writer.kill()
    writer.wait()
    remount_and_drain(mounter, moto, bucket, "multipart_size=5")
    assert hashlib.sha256(stored(s3, bucket, "closed.bin")).digest() == hashlib.sha256(closed).digest()


def test_kill_9_with_many_small_files(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, HOLD)
    (mnt.path / "dir").mkdir()
    files = {f"dir/f{i:03d}": os.urandom(1000 + i) for i in range(200)}
    for name, data in files.items():
        (mnt.path / name).write_bytes(data)
    os.rename(mnt.path / "dir" / "f000", mnt.path / "dir" / "renamed")
    files["dir/renamed"] = files.pop("dir/f000")
    os.chmod(mnt.path / "dir" / "f001", 0o600)
    kill_daemon(mnt)
    after = remount_and_drain(mounter, moto, bucket)
    for name, data in files.items():
        assert stored(s3, bucket, name) == data, name
    assert int(s3.head_object(Bucket=bucket, Key="dir/f001")["Metadata"]["mode"]) & 0o777 == 0o600
    assert "f000" not in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert after.umount() == 0 or not is_mounted(after.path)


def test_a_closed_file_costs_one_fsync_or_two_and_its_upload_none(mounter: Mounter, moto: S3Server, bucket: str,
                                                                  s3: Any, tmp_path: Path) -> None:
    """close() makes the data durable. A small file's journal row carries its bytes, so the row's
    fsync is its only one (the kill -9 and reboot tests check what that keeps); a larger file's
    data file is fsynced before its row. Each used to cost both, and twice (at flush and again
    at release); the row's delete after the upload costs none: a row that describes only what
    the store has costs a repeated upload at worst if a power cut brings it back."""
    mnt = mounter.mount(moto, bucket, HOLD)
    names = [f"f{i}" for i in range(10)]
    sync_calls = ["fsync", "fdatasync"]
    with syscalls_of(daemon_pid(mnt.path), sync_calls, tmp_path) as closing:
        for name in names:
            (mnt.path / name).write_bytes(name.encode())
    assert closing() == len(names)
    with syscalls_of(daemon_pid(mnt.path), sync_calls, tmp_path) as closing_large:
        (mnt.path / "large").write_bytes(os.urandom(JOURNALED_DATA_MAX + 1))
    assert closing_large() == 2
    with syscalls_of(daemon_pid(mnt.path), sync_calls, tmp_path) as uploading:
        fsync_tree(mnt.path)  # waits for each upload, whose success skips the local fsync
    assert uploading() == 0
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == {*names, "large"}
    assert mnt.umount() == 0


def test_a_reboot_restores_small_files_from_the_journal(mounter: Mounter, moto: S3Server, bucket: str,
                                                        s3: Any) -> None:
    """A small file's data file is not fsynced at close, its journal row holds the bytes: after a
    power loss the data file may be torn or gone. The first mount of the next boot writes each
    one again from its row, so what close() acknowledged is what gets uploaded. (A kill -9 is
    no reboot: the data files stay authoritative, see the survival tests.)"""
    mnt = mounter.mount(moto, bucket, HOLD)
    files = {f"f{i}": os.urandom(1000 * (i + 1)) for i in range(4)}
    for name, data in files.items():
        (mnt.path / name).write_bytes(data)
    kill_daemon(mnt)
    cache = mounter.tmp / f"cache-{bucket}"
    staged = sorted((cache / "staging").iterdir())
    assert len(staged) == len(files)
    # What a power cut can leave of data the kernel had not written back: nothing, or zeros.
    staged[0].unlink()
    for path in staged[1:]:
        path.write_bytes(bytes(path.stat().st_size))
    with sqlite3.connect(cache / "journal.db") as db:
        assert db.execute("UPDATE boot SET boot_id = 'an earlier boot'").rowcount == 1
    remount_and_drain(mounter, moto, bucket)
    for name, data in files.items():
        assert stored(s3, bucket, name) == data, name
    assert "4 small file(s) restored from the journal" in mounter.log_text()


def test_recovery_finds_its_upload_already_stored(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """The crash came after the upload but before the journal row was deleted: the object already
    holds our bytes, so it is no conflict. Its attributes are the journal's, though, even where
    the stored ones differ (the upload was sent before a chmod that close() acknowledged)."""
    mnt = mounter.mount(moto, bucket, HOLD)
    data = os.urandom(70_000)
    (mnt.path / "doc").write_bytes(data)
    os.chmod(mnt.path / "doc", 0o604)
    kill_daemon(mnt)
    s3.put_object(Bucket=bucket, Key="doc", Body=data, Metadata={"mode": str(0o100644)})
    remount_and_drain(mounter, moto, bucket)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["doc"], "no conflict copy of identical bytes"
    assert stored(s3, bucket, "doc") == data
    assert int(s3.head_object(Bucket=bucket, Key="doc")["Metadata"]["mode"]) == 0o100604


def test_server_stopped_for_30s_during_writes(private_moto: S3Server, mounter: Mounter) -> None:
    # private_moto first: fixtures are torn down in reverse, so the server outlives the mount.
    s3 = boto_client(private_moto)
    s3.create_bucket(Bucket="outage")
    mnt = mounter.mount(private_moto, "outage", "readwrite_timeout=2,write_deadline=5,upload_delay=0")
    assert private_moto.proc is not None
    before = {f"before{i}": os.urandom(50_000) for i in range(5)}
    for name, data in before.items():
        (mnt.path / name).write_bytes(data)
    # A directory in use has been listed: new names in it are known to be free without asking the
    # store. (A lookup the cache cannot answer waits for the store, and fails with EIO at the deadline.)
    os.listdir(mnt.path)
    private_moto.proc.send_signal(signal.SIGSTOP)  # the server stops answering: connections hang
    during = {f"during{i}": os.urandom(50_000) for i in range(20)}
    during["before0"] = os.urandom(50_000)  # overwriting a file works the same
    start = time.monotonic()
    for name, data in during.items():
        (mnt.path / name).write_bytes(data)  # close() returns: the data is safe in the cache
    assert time.monotonic() - start < 20, "writes must not wait for the store"
    time.sleep(max(0.0, 30 - (time.monotonic() - start)))
    private_moto.proc.send_signal(signal.SIGCONT)
    fsync_tree(mnt.path)  # waits for the retried uploads to succeed
    (mnt.path / "after").write_bytes(b"resumed")
    fsync_tree(mnt.path)
    for name, data in {**before, **during, "after": b"resumed"}.items():  # "during" wins for before0
        assert stored(s3, "outage", name) == data, name


def test_full_cache_disk(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                         small_disk: Callable[[str], Path]) -> None:
    cache = small_disk("24m")
    mnt = mounter.mount(moto, bucket, f"cache_dir={cache},upload_delay=0")
    kept = os.urandom(4 << 20)
    (mnt.path / "kept").write_bytes(kept)
    with pytest.raises(OSError) as err, open(mnt.path / "huge", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
            f.flush()
    assert err.value.errno == errno.ENOSPC
    # A new directory's journal row may find no room either: then its marker is stored at once.
    (mnt.path / "made-while-full").mkdir(mode=0o700)
    os.unlink(mnt.path / "huge")
    (mnt.path / "after").write_bytes(b"space again")
    fsync_tree(mnt.path)
    assert mnt.umount() == 0
    assert stored(s3, bucket, "kept") == kept
    assert stored(s3, bucket, "after") == b"space again"
    assert int(s3.head_object(Bucket=bucket, Key="made-while-full/")["Metadata"]["mode"]) == stat.S_IFDIR | 0o700
    assert "huge" not in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def write_whole(path: Path, data: bytes, *, fsync: bool = False) -> bool:
    """Write ``data`` as a new version of ``path``, the way a careful program does: True only if
    every write() (and fsync(), if asked for) and the close() succeeded; ENOSPC anywhere gives
    False (other errors fail)."""
    ok = True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:1 << 20]):]
        if fsync:
            os.fsync(fd)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        ok = False
    try:
        os.close(fd)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        ok = False
    return ok


def test_cache_disk_that_fills_drains_again(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                            small_disk: Callable[[str], Path]) -> None:
    """200 MiB through a 64 MiB cache disk with the store up: writers get ENOSPC while the disk is
    full, the uploads free it, and every retried file gets through. Nothing that close()
    acknowledged is lost, no staged copy is left behind, and the unmount is clean."""
    cache = small_disk("64m")
    # Each upload starts 5 s after its close: the writer fills the disk long before (13 MB/s do),
    # as it would against a real network; then the uploads drain it while the writer retries.
    mnt = mounter.mount(moto, bucket, f"cache_dir={cache},upload_delay=5")
    names = [f"f{i:02d}" for i in range(50)]
    contents = {name: random.Random(name).randbytes(4 << 20) for name in names}
    acknowledged: set[str] = set()
    refused = 0
    pending = names
    deadline = time.monotonic() + 150
    while pending:
        assert time.monotonic() < deadline, (f"{len(pending)} files still refused after {refused} ENOSPC: "
                                             f"the cache disk never drained; staging holds "
                                             f"{len(os.listdir(cache / 'staging'))} files")
        # Every fifth writer fsyncs before close, so some uploads end while their file is open.
        left = [name for name in pending
                if not write_whole(mnt.path / name, contents[name], fsync=name.endswith(("0", "5")))]
        acknowledged.update(set(pending) - set(left))
        refused += len(left)
        if len(left) == len(pending):
            time.sleep(0.2)  # poll: no file got through this round, the uploads need time to free space
        pending = left
    assert refused > 0, "the cache disk never filled: the test proves nothing"
    fsync_tree(mnt.path)  # waits until the store has every file
    # The kernel sends RELEASE, which frees the last staged copies, after close() has returned.
    wait_for(lambda: os.listdir(cache / "staging") == [], "no staged copy outlives its upload", 10)
    assert shutil.disk_usage(cache).used < 16 << 20
    assert write_whole(mnt.path / "after", b"space again")
    assert mnt.umount() == 0
    for name in sorted(acknowledged):
        assert stored(s3, bucket, name) == contents[name], name
    assert stored(s3, bucket, "after") == b"space again"
    assert "Traceback" not in mounter.log_text()
    print(f"ENOSPC answers: {refused}; files acknowledged: {len(acknowledged)}")


def test_close_on_a_full_cache_disk_keeps_what_was_acknowledged(mounter: Mounter, moto: S3Server, bucket: str,
                                                                 s3: Any, small_disk: Callable[[str], Path]) -> None:
    """With the disk full, a close() whose journal row finds no room answers ENOSPC, and the row
    of the version acknowledged before stays: a crash right then still uploads it."""
    cache = small_disk("16m")
    mnt = mounter.mount(moto, bucket, f"cache_dir={cache}", HOLD)
    first = os.urandom((2 << 20) - 100)  # its last page has room for the append below
    (mnt.path / "doc").write_bytes(first)
    assert not write_whole(mnt.path / "filler", os.urandom(32 << 20)), "the disk did not fill"
    fd = os.open(mnt.path / "doc", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"appended")
    with pytest.raises(OSError) as err:
        os.close(fd)
    assert err.value.errno == errno.ENOSPC
    kill_daemon(mnt)
    remount_and_drain(mounter, moto, bucket, f"cache_dir={cache}")
    assert stored(s3, bucket, "doc")[:len(first)] == first
    assert "filler" not in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_conflict_keeps_both_versions(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, HOLD)
    (mnt.path / "doc").write_bytes(b"v1")
    fsync_tree(mnt.path)
    with open(mnt.path / "doc", "wb") as f:
        f.write(b"ours")
    s3.put_object(Bucket=bucket, Key="doc", Body=b"theirs")  # another client, meanwhile
    fsync_tree(mnt.path)
    listing = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert stored(s3, bucket, "doc") == b"theirs"
    conflicts = [k for k in listing if k.startswith("doc.obsfs-conflict-")]
    assert len(conflicts) == 1 and stored(s3, bucket, conflicts[0]) == b"ours"
    assert "kept both" in mounter.log_text()
    # The directory was listed before (fsync_tree); the conflict copy is in the next listing,
    # though this mount did not create its name (docs/write-back.md, "A warm listing").
    assert conflicts[0] in os.listdir(mnt.path)


def test_metadata_cache_spares_heads_on_remount(mounter: Mounter, tmp_path: Path) -> None:
    """Modes HEADed once are kept on disk by ETag: after a remount, listing and stat-ing a
    directory costs one LIST and no HEAD at all."""
    server = start_moto(log_path=tmp_path / "moto.log")
    try:
        s3 = boto_client(server)
        s3.create_bucket(Bucket="metacache")
        for i in range(20):
            s3.put_object(Bucket="metacache", Key=f"d/f{i}", Body=b"x", Metadata={"mode": str(0o100600 + i % 8)})
        first = mounter.mount(server, "metacache")
        modes = {e.name: e.stat().st_mode for e in os.scandir(first.path / "d")}
        assert first.umount() == 0
        heads_before = server.requests("HEAD", "/metacache/d/f")
        assert heads_before >= 20  # the first mount had to ask for each
        second = mounter.mount(server, "metacache")
        assert {e.name: e.stat().st_mode for e in os.scandir(second.path / "d")} == modes
        assert second.umount() == 0
        assert server.requests("HEAD", "/metacache/d/f") == heads_before
    finally:
        server.stop()
