"""Deadlines hold while the store is down, on real mounts over a moto server of each test's own.

Two kinds of outage: a killed server (connections are refused at once) and a stopped one
(SIGSTOP: the kernel still accepts connections, nothing ever answers, so only a clock can tell).
Elapsed times are asserted only as upper bounds: the promised deadline plus a 2 s margin.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obsfs.runtime import state_file
from tests.conftest import boto_client
from tests.mounting import Mount, Mounter, fsync_tree
from tests.s3server import S3Server

DEADLINE = 4
MARGIN = 2
MIB = 1 << 20

READER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
print("opened", flush=True)
sys.stdin.readline()  # the test takes the store down, then lets us read
start = time.monotonic()
longest = 0.0
try:
    while True:
        began = time.monotonic()
        try:
            data = os.read(fd, 1 << 20)
        finally:
            longest = max(longest, time.monotonic() - began)
        if not data:
            break
    print("EOF", flush=True)
except OSError as exc:
    print(f"errno {exc.errno} syscall {longest:.2f} total {time.monotonic() - start:.2f}", flush=True)
"""


def take_down(server: S3Server, outage: str) -> None:
    if outage == "killed":
        server.kill()
    else:
        server.pause()


def bring_back(server: S3Server, outage: str, bucket: str) -> None:
    """End the outage. A killed moto restarts empty, so the bucket is made again."""
    if outage == "killed":
        server.start_moto()
        boto_client(server).create_bucket(Bucket=bucket)
    else:
        server.resume()


@pytest.mark.parametrize("outage", ["killed", "stopped"])
def test_a_cold_read_fails_within_one_deadline(private_moto: S3Server, mounter: Mounter, outage: str) -> None:
    """One read() syscall, and the whole-file read it belongs to, end in EIO within the deadline:
    not one deadline per READ the kernel sends (readahead, then its retry of the failed page), and
    not a socket timeout (20 s here) per attempt."""
    s3 = boto_client(private_moto)
    s3.create_bucket(Bucket="cold")
    s3.put_object(Bucket="cold", Key="big", Body=os.urandom(24 * MIB))
    mnt = mounter.mount(private_moto, "cold", f"deadline={DEADLINE},readwrite_timeout=20")
    reader = subprocess.Popen([sys.executable, "-c", READER, str(mnt.path / "big")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdin is not None
    assert reader.stdout.readline().strip() == "opened"  # looked up and opened while the store was up
    take_down(private_moto, outage)
    reader.stdin.write("go\n")
    reader.stdin.flush()
    out, _ = reader.communicate(timeout=300)  # a hang fails here instead of blocking the suite
    word, code, _, syscall, _, total = out.split()
    assert (word, int(code)) == ("errno", errno.EIO)
    assert float(syscall) <= DEADLINE + MARGIN, out
    assert float(total) <= DEADLINE + MARGIN, out


def daemon_pid(mnt: Mount) -> int:
    return int(state_file(str(mnt.path), "pid").read_text())


def journal_keys(cache: Path) -> list[str]:
    with sqlite3.connect(cache / "journal.db") as db:
        return sorted(row[0] for row in db.execute("SELECT key FROM dirty"))


@pytest.mark.parametrize("outage", ["killed", "stopped"])
def test_sigterm_returns_within_the_drain_deadline(private_moto: S3Server, mounter: Mounter, tmp_path: Path,
                                                   outage: str) -> None:
    """With the store down, SIGTERM ends the daemon within drain_deadline: exit code 1, the file
    named in the log, its data kept in the journal and uploaded by the next mount."""
    s3 = boto_client(private_moto)
    s3.create_bucket(Bucket="drain")
    cache = tmp_path / "cache"
    options = f"cache_dir={cache},deadline={DEADLINE},readwrite_timeout=20,upload_delay=600,drain_deadline=3"
    mnt = mounter.mount(private_moto, "drain", options)
    (mnt.path / "pending").write_bytes(b"keep me")  # journaled at close; its upload waits 600 s
    take_down(private_moto, outage)
    pid = daemon_pid(mnt)
    start = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while state_file(str(mnt.path), "pid").exists() and time.monotonic() - start < 120:
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    assert elapsed <= 3 + MARGIN, f"the daemon took {elapsed:.1f} s"
    assert state_file(str(mnt.path), "status").read_text() == "1"
    assert "not uploaded: pending" in mounter.log_text()
    assert journal_keys(cache) == ["pending"]
    bring_back(private_moto, outage, "drain")
    again = mounter.mount(private_moto, "drain", f"cache_dir={cache}")
    fsync_tree(again.path)
    assert s3.get_object(Bucket="drain", Key="pending")["Body"].read() == b"keep me"


def timed(fn: object, *args: object) -> float:
    start = time.monotonic()
    fn(*args)  # type: ignore[operator]
    return time.monotonic() - start


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as stream:  # O_WRONLY | O_CREAT | O_TRUNC
        stream.write(data)


def open_flags(path: Path, flags: int) -> None:
    os.close(os.open(path, flags, 0o644))


@pytest.mark.parametrize("outage", ["killed", "stopped"])
def test_open_for_writing_creates_files_during_an_outage(private_moto: S3Server, mounter: Mounter,
                                                         outage: str) -> None:
    """open(path, "w") needs nothing from the store: it replaces whatever is there. It succeeds in
    the root of a fresh mount, the first one within the deadline (a stopped store is found out
    only by waiting), the next ones at once; the data reaches the store when it is back. O_EXCL,
    and O_CREAT without O_TRUNC, need to know what the store holds: EIO, without waiting."""
    s3 = boto_client(private_moto)
    s3.create_bucket(Bucket="create")
    mnt = mounter.mount(private_moto, "create", f"deadline={DEADLINE}")
    take_down(private_moto, outage)
    assert timed(write_file, mnt.path / "first.txt", b"one") <= DEADLINE + MARGIN
    assert timed(write_file, mnt.path / "second.txt", b"two") <= MARGIN
    for flags in (os.O_WRONLY | os.O_CREAT | os.O_EXCL, os.O_WRONLY | os.O_CREAT | os.O_APPEND):
        start = time.monotonic()
        with pytest.raises(OSError) as err:
            open_flags(mnt.path / "third.txt", flags)
        assert err.value.errno == errno.EIO
        assert time.monotonic() - start <= MARGIN
    assert (mnt.path / "first.txt").read_bytes() == b"one"  # local truth until uploaded
    bring_back(private_moto, outage, "create")
    fsync_tree(mnt.path)
    for key, body in (("first.txt", b"one"), ("second.txt", b"two")):
        assert s3.get_object(Bucket="create", Key=key)["Body"].read() == body
    assert "third.txt" not in {o["Key"] for o in s3.list_objects_v2(Bucket="create").get("Contents", [])}


def test_a_blind_truncating_create_never_overwrites_what_it_did_not_see(private_moto: S3Server,
                                                                       mounter: Mounter) -> None:
    """During an outage, open(path, "w") of a name the mount never saw cannot know that the store
    holds an object there. When the store is back, the conditional upload finds it: the stored
    object stays, ours is kept next to it as a conflict copy."""
    s3 = boto_client(private_moto)
    s3.create_bucket(Bucket="blind")
    s3.put_object(Bucket="blind", Key="theirs.txt", Body=b"theirs")
    mnt = mounter.mount(private_moto, "blind", f"deadline={DEADLINE}")
    private_moto.pause()
    assert timed(write_file, mnt.path / "theirs.txt", b"ours") <= DEADLINE + MARGIN
    private_moto.resume()
    fsync_tree(mnt.path)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="blind")["Contents"]}
    conflicts = [k for k in keys if k.startswith("theirs.txt.obsfs-conflict-")]
    assert len(conflicts) == 1, keys
    assert s3.get_object(Bucket="blind", Key="theirs.txt")["Body"].read() == b"theirs"
    assert s3.get_object(Bucket="blind", Key=conflicts[0])["Body"].read() == b"ours"
