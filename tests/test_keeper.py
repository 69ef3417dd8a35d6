"""The keeper over real mounts: a daemon killed with SIGKILL is replaced under the same mount,
a planned handover, and the keeper's end (``obsfs umount``, an unmount from outside). A mount has
a keeper unless it says ``-o nokeeper`` (or runs in the foreground, ``-f``).

The handover rests on libfuse 3.14 and pyfuse3 3.5 internals (``obsfs/handover.py``): the first
test also checks the pinned versions and what the daemon holds after the swap, so that an upgrade
of either fails here, loudly, and not as a hung mount in production."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pyfuse3

from obsfs.keeper import EXIT_HANDOVER, generation_of
from obsfs.runtime import state_file
from tests.mounting import OBSFS, Mount, Mounter, is_mounted, wait_for
from tests.s3server import S3Server
from tests.test_writeback import stored


def _pid(mnt: Mount, suffix: str) -> int:
    try:
        return int(state_file(str(mnt.path), suffix).read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _mountinfo(path: Path) -> str:
    with open("/proc/self/mountinfo") as stream:
        return next(line for line in stream if line.split()[4] == str(path))


def _fuse_fds(pid: int) -> list[int]:
    """The fds of ``pid`` on /dev/fuse, and each one's open flags (from fdinfo)."""
    flags = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{name}") == "/dev/fuse":
            with open(f"/proc/{pid}/fdinfo/{name}") as stream:
                fields = dict(line.split(":", 1) for line in stream if ":" in line)
            flags.append(int(fields["flags"].strip(), 8))
    return flags


def _respawned(mnt: Mount, old: int) -> int:
    """The next daemon's pid, once it has proved the mount answers (it writes its pid file then)."""
    wait_for(lambda: _pid(mnt, "pid") not in (0, old), "the keeper started a new daemon", seconds=5)
    return _pid(mnt, "pid")


def _hand_over(mnt: Mount) -> float:
    """A planned handover (SIGUSR1 to the keeper); returns, with the seconds it took, once the
    next daemon serves."""
    old, start = _pid(mnt, "pid"), time.monotonic()
    os.kill(_pid(mnt, "keeper"), signal.SIGUSR1)
    _respawned(mnt, old)
    return time.monotonic() - start


def test_internals_the_handover_rests_on(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """If this fails after an upgrade, read obsfs/handover.py before changing the pins: the swap
    (KeeperSession) and the planned handover's drain (Drain: pyfuse3's reader loop in
    internal.pxi, libfuse's fuse_session_receive_buf_int) rest on these versions' internals."""
    assert pyfuse3.__version__ == "3.5.0"
    plain = mounter.mount(moto, bucket, "nokeeper")
    mnt = mounter.mount(moto, bucket, "cache_dir=" + str(mounter.tmp / "cache-keeper"))
    daemon, keeper = _pid(mnt, "pid"), _pid(mnt, "keeper")
    with open(f"/proc/{daemon}/maps") as stream:
        libfuse = {os.path.realpath(line.split()[-1]) for line in stream if "libfuse3" in line}
    assert [os.path.basename(path) for path in libfuse] == ["libfuse3.so.3.14.0"]
    # After the swap the session fd is a clone of the device: one /dev/fuse fd in each process
    # (the keeper's original is closed in the daemon), blocking (libfuse reads it so).
    for pid in (daemon, keeper):
        fds = _fuse_fds(pid)
        assert len(fds) == 1, f"pid {pid}: {fds}"
        assert fds[0] & os.O_NONBLOCK == 0 and fds[0] & os.O_ACCMODE == os.O_RDWR
    # The keeper mounts as libfuse does: same type, source, flags and options.
    def fields(line: str) -> list[str]:
        return [*line.split()[5:6], *line.split(" - ")[1].split()]
    assert fields(_mountinfo(mnt.path)) == fields(_mountinfo(plain.path))


def test_kill_9_keeps_the_mount(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """The default mount: it has a keeper."""
    mnt = mounter.mount(moto, bucket)
    (mnt.path / "dir").mkdir()
    (mnt.path / "dir" / "before").write_bytes(b"acknowledged before the kill")
    info, dev = _mountinfo(mnt.path), os.stat(mnt.path).st_dev
    daemon, keeper = _pid(mnt, "pid"), _pid(mnt, "keeper")
    os.kill(daemon, signal.SIGKILL)
    new = _respawned(mnt, daemon)
    assert _alive(keeper) and not _alive(daemon)
    assert _mountinfo(mnt.path) == info and os.stat(mnt.path).st_dev == dev
    # Inode numbers are not yet kept across daemons: a listing hands the kernel the new ones
    # (docs/survival.md). Then stat, new opens, reads and writes work.
    assert sorted(os.listdir(mnt.path)) == ["dir"]
    assert os.listdir(mnt.path / "dir") == ["before"]
    assert (mnt.path / "dir" / "before").read_bytes() == b"acknowledged before the kill"
    (mnt.path / "dir" / "after").write_bytes(b"written after")
    assert os.stat(mnt.path / "dir" / "after").st_size == len(b"written after")
    # The closed file was in the journal: the new daemon uploads it.
    wait_for(lambda: stored(s3, bucket, "dir/before") == b"acknowledged before the kill",
             "the journal replayed the write the dead daemon had acknowledged", seconds=20)
    assert mnt.umount() == 0
    assert stored(s3, bucket, "dir/after") == b"written after"
    assert not is_mounted(mnt.path)
    assert not _alive(new) and not _alive(keeper)
    assert not state_file(str(mnt.path), "keeper").exists()
    assert not state_file(str(mnt.path), "sock").exists()


def test_nokeeper_mount_dies_with_its_daemon(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """``-o nokeeper``: the daemon holds the connection itself, and nothing restarts it."""
    mnt = mounter.mount(moto, bucket, "nokeeper")
    assert not state_file(str(mnt.path), "keeper").exists()
    daemon = _pid(mnt, "pid")
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not _alive(daemon), "the daemon died")
    # Its main thread can be a zombie while its other threads still hold the device: a call made
    # then is aborted with the connection (ECONNABORTED). Once the kernel is done, every call
    # finds no connection, and nothing brings one back.
    wait_for(lambda: _statvfs_error(mnt.path) == errno.ENOTCONN, "the mount is dead: ENOTCONN")
    assert _statvfs_error(mnt.path) == errno.ENOTCONN


def _statvfs_error(path: Path) -> int | None:
    """The errno of a statvfs, which always goes to the daemon (a stat may be answered from the
    kernel's attribute cache); None if it succeeds."""
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno
    return None


def test_unmount_from_outside_ends_keeper_and_daemon(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    mnt = mounter.mount(moto, bucket, "keeper")
    daemon, keeper = _pid(mnt, "pid"), _pid(mnt, "keeper")
    subprocess.run(["fusermount3", "-u", str(mnt.path)], check=True)
    wait_for(lambda: not _alive(keeper) and not _alive(daemon), "keeper and daemon exited", seconds=10)
    assert not is_mounted(mnt.path)


class Workload:
    """Threads that each loop over create, write, close, rename, open, read, stat and readdir in a
    directory of their own, so that requests are in flight whenever a handover happens, and
    record the errors they meet."""

    def __init__(self, root: Path, loops: int) -> None:
        self.dirs = [root / f"w{n}" for n in range(loops)]
        self.errors: list[str] = []
        self.done = [0] * loops
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(n,)) for n in range(loops)]

    def _loop(self, n: int) -> None:
        directory = self.dirs[n]
        directory.mkdir()
        while not self._stop.is_set():
            payload = os.urandom(4096 + n)
            try:
                (directory / "new").write_bytes(payload)
                os.rename(directory / "new", directory / "f")
                assert (directory / "f").read_bytes() == payload, "read back other bytes"
                for _ in range(20):  # cheap requests, so that the queue is rarely empty
                    assert os.stat(directory / "f").st_size == len(payload), "stat gave another size"
                assert os.listdir(directory) == ["f"], "readdir gave other names"
            except (OSError, AssertionError) as exc:
                self.errors.append(f"w{n}: {exc!r}")
            self.done[n] += 1

    def __enter__(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def progress(self, iterations: int) -> None:
        """Wait until every loop did ``iterations`` more (through whichever daemon serves now)."""
        targets = [done + iterations for done in self.done]
        wait_for(lambda: all(d >= t for d, t in zip(self.done, targets, strict=True)), "every loop goes on")


def test_planned_handover_fails_no_call(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """SIGUSR1 to the keeper (or ``obsfs upgrade``): the daemon stops reading requests, answers
    every one it has read, and exits; the next one takes the kernel's queue. Loops on the mount
    go on across several handovers without a single failed call (issue #14: "no failed
    syscall")."""
    mnt = mounter.mount(moto, bucket, "keeper,attr_timeout=0")
    # An idle mount sends the daemon no request to stop at: it makes one itself.
    _hand_over(mnt)
    keeper = _pid(mnt, "keeper")
    with Workload(mnt.path, loops=4) as work:
        work.progress(2)
        # About one in four handovers met the race that failed a call (docs/survival.md): eight
        # of them make a regression show in all but about one run in ten.
        took = [_hand_over(mnt) for _ in range(8)]
        # The command for it: the keeper re-executes itself (test_the_keeper_upgrades_itself_in_place),
        # then the same handover.
        start = time.monotonic()
        upgrade = subprocess.run([*OBSFS, "upgrade", str(mnt.path)], capture_output=True, text=True, timeout=120)
        took.append(time.monotonic() - start)
        assert upgrade.returncode == 0, upgrade.stderr
        assert generation_of(keeper) == 1 and upgrade.stdout.count("\n") == 1
        work.progress(1)
    print(f"handovers took {', '.join(f'{t:.2f}' for t in took)} s (the last one: obsfs upgrade); "
          f"{sum(work.done)} iterations, {len(work.errors)} failed")
    assert work.errors == []


def test_the_keeper_upgrades_itself_in_place(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """SIGUSR2: the keeper re-executes the obsfs installed now as the same process, and keeps
    the mount, its daemon and the open fds; loops on the mount go on without a failed call. The
    new image supervises as the old one did: it restarts a killed daemon, and umount ends it."""
    mnt = mounter.mount(moto, bucket, "keeper,attr_timeout=0")
    keeper, daemon = _pid(mnt, "keeper"), _pid(mnt, "pid")
    (mnt.path / "held").write_bytes(b"before")
    fd = os.open(mnt.path / "held", os.O_RDWR)
    try:
        with Workload(mnt.path, loops=2) as work:
            work.progress(1)
            for generation in (1, 2):  # the second time from the state the first one carried
                os.kill(keeper, signal.SIGUSR2)
                wait_for(partial(lambda g: generation_of(keeper) == g, generation), "the keeper re-executed itself",
                         seconds=20)
                assert os.pwrite(fd, b"after%d" % generation, 0) == 6
            work.progress(1)
        assert work.errors == []
        assert (_pid(mnt, "keeper"), _pid(mnt, "pid")) == (keeper, daemon) and _alive(daemon)
        os.kill(daemon, signal.SIGKILL)
        _respawned(mnt, daemon)
        assert os.pread(fd, 6, 0) == b"after2"
    finally:
        os.close(fd)
    assert (mnt.path / "held").read_bytes() == b"after2"
    assert mnt.umount() == 0
    assert not is_mounted(mnt.path) and not _alive(keeper)


def test_upgrade_needs_a_keeper(tmp_path: Path) -> None:
    result = subprocess.run([*OBSFS, "upgrade", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "-o nokeeper" in result.stderr


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as stream:
        return {int(child) for child in stream.read().split()}


def test_a_handover_asked_of_a_starting_daemon_waits_until_it_is_ready(mounter: Mounter, moto: S3Server,
                                                                      bucket: str) -> None:
    """A daemon that is still starting may not handle SIGUSR1 yet (its default action kills):
    the keeper passes the request on once the daemon is ready."""
    mnt = mounter.mount(moto, bucket, "keeper")
    keeper, first = _pid(mnt, "keeper"), _pid(mnt, "pid")
    os.kill(keeper, signal.SIGUSR1)
    wait_for(lambda: bool(_children(keeper) - {first}), "the keeper started the next daemon", seconds=10)
    (second,) = _children(keeper) - {first}
    os.kill(keeper, signal.SIGUSR1)  # while it imports, long before it is ready
    wait_for(lambda: _pid(mnt, "pid") not in (0, first, second), "a third daemon took over", seconds=20)
    assert f"daemon {second} exited with {EXIT_HANDOVER}" in mounter.log_text()
    assert os.listdir(mnt.path) == []


def test_a_file_uploaded_while_open_goes_on_after_kill_9_without_a_conflict(mounter: Mounter, moto: S3Server,
                                                                            bucket: str, s3: Any) -> None:
    """An upload that ends while its file is still open, with other uploads queued: the journal
    row of the version it stored must go at once, not with the next journal write
    (``Journal.remove(later=...)``). Held over a kill -9, the row made the next daemon upload the
    open file's newer bytes as a version based on none: that met our own upload, the newer
    bytes went to a conflict copy, and the name showed the older ones (once, under load, in
    test_the_keeper_upgrades_itself_in_place)."""
    mnt = mounter.mount(moto, bucket, "keeper")
    # A large upload still going on when held's ends, and no close (a journal write) after it.
    with open(mnt.path / "big", "wb") as stream:
        chunk = os.urandom(1 << 20)
        for _ in range(160):
            stream.write(chunk)
    held = mnt.path / "held"
    held.write_bytes(b"before")
    fd = os.open(held, os.O_RDWR)
    try:
        wait_for(lambda: _exists(s3, bucket, "held"), "held was uploaded", seconds=30)
        assert os.pwrite(fd, b"after2", 0) == 6  # staged only: neither closed nor fsynced
        daemon = _pid(mnt, "pid")
        os.kill(daemon, signal.SIGKILL)
        big_was_queued = not _exists(s3, bucket, "big")
        _respawned(mnt, daemon)
        assert os.pread(fd, 6, 0) == b"after2"
    finally:
        os.close(fd)
    assert held.read_bytes() == b"after2"
    assert mnt.umount() == 0
    assert big_was_queued, "big was in the store before the kill: the case was not reached"
    assert stored(s3, bucket, "held") == b"after2"
    assert [key for key in _keys(s3, bucket, "") if "conflict" in key] == []


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0))


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]
