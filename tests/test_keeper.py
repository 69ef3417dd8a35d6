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
from pathlib import Path
from typing import Any

import pyfuse3
import pytest

from obsfs.runtime import state_file
from tests.mounting import Mount, Mounter, is_mounted, wait_for
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


def test_internals_the_handover_rests_on(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """If this fails after an upgrade, read obsfs/handover.py before changing the pins."""
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
    with pytest.raises(OSError) as err:
        os.statvfs(mnt.path)  # not stat: the kernel may answer that from its attribute cache
    assert err.value.errno == errno.ENOTCONN


def test_unmount_from_outside_ends_keeper_and_daemon(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    mnt = mounter.mount(moto, bucket, "keeper")
    daemon, keeper = _pid(mnt, "pid"), _pid(mnt, "keeper")
    subprocess.run(["fusermount3", "-u", str(mnt.path)], check=True)
    wait_for(lambda: not _alive(keeper) and not _alive(daemon), "keeper and daemon exited", seconds=10)
    assert not is_mounted(mnt.path)


def test_planned_handover_under_a_read_loop(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """SIGUSR1 to the keeper: the daemon stops reading requests, answers those it has, and exits;
    the next one takes the queue. A loop of open-read-close runs across it. Entry timeouts are 0
    here because inode numbers are not kept across daemons yet (a cached name would point at an
    inode number the next daemon does not know, docs/survival.md)."""
    mnt = mounter.mount(moto, bucket, "keeper,entry_timeout=0,attr_timeout=0")
    data = os.urandom(64 << 10)
    (mnt.path / "f").write_bytes(data)
    errors: list[int] = []
    reads = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                assert (mnt.path / "f").read_bytes() == data
                reads[0] += 1
            except OSError as exc:
                errors.append(exc.errno or 0)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        wait_for(lambda: reads[0] > 20, "the loop reads")
        old = _pid(mnt, "pid")
        os.kill(_pid(mnt, "keeper"), signal.SIGUSR1)
        _respawned(mnt, old)
        before = reads[0]
        wait_for(lambda: reads[0] > before + 20, "the loop reads through the next daemon")
    finally:
        stop.set()
        thread.join()
    # What is left for a handover without a failed call (issue #14 item 3): a request the old
    # daemon had read but not answered when it let go of its clone fails with ECONNABORTED, and
    # a handle it opened can still meet EBADF. At most one call per handover, seen twice at most.
    assert set(errors) <= {errno.EBADF, errno.ECONNABORTED} and len(errors) <= 2, errors
