"""Mount buckets through the real ``obsfs`` entry point, and always unmount them again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from obsfs.runtime import state_file
from tests.s3server import S3Server

OBSFS = [sys.executable, "-m", "obsfs"]


def write_passwd(directory: Path, server: S3Server, name: str = "passwd") -> Path:
    path = directory / name
    path.write_text(f"{server.access_key}:{server.secret_key}\n")
    path.chmod(0o600)
    return path


def is_mounted(path: Path) -> bool:
    real = os.path.abspath(path)  # not realpath: that stats the path, which hangs on a hung mount
    with open("/proc/self/mountinfo") as stream:
        return any(line.split()[4] == real for line in stream)


def fsync_tree(root: Path) -> None:
    """fsync every file below ``root``: with the write-back cache, that waits for the uploads."""
    for path in [root, *root.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory: it sends the deletes queued below it (obsfs/deletes.py) and waits."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Poll (the daemon works in the background); fail with ``what`` if it never holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {seconds:.0f} s: {what}"
        time.sleep(0.05)


def kill_daemon_of(path: Path) -> None:
    """SIGKILL the daemon of a mount, and its keeper first (the default), which would start
    another one."""
    for suffix in ("keeper", "pid"):
        try:
            pid = int(state_file(str(path), suffix).read_text())
            os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass


def daemon_pid(path: Path) -> int:
    return int(state_file(str(path), "pid").read_text())


def _traced_by(pid: int, tracer: int) -> bool:
    """Every thread of ``pid`` is traced by ``tracer`` (threads that end meanwhile do not count)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended
            continue
        if f"TracerPid:\t{tracer}\n" not in status:
            return False
    return True


@contextmanager
def syscalls_of(pid: int, names: list[str], scratch: Path) -> Iterator[Callable[[], int]]:
    """Count the system calls ``names`` that any thread of process ``pid`` makes while the block
    runs (strace; a count, not a time). The callable gives the count once the block is done."""
    out = scratch / f"strace-{pid}-{time.monotonic_ns()}.txt"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", f"trace={','.join(names)}", "-o", str(out),
                               "-p", str(pid)])
    counted: list[int] = []
    try:
        wait_for(lambda: _traced_by(pid, tracer.pid), f"strace attached to {pid}", 30)
        yield lambda: counted[0]
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches and writes what it has
        tracer.wait(timeout=30)
    pattern = re.compile(rf"\b({'|'.join(names)})\(")
    counted.append(sum(1 for line in out.read_text().splitlines() if pattern.search(line)))


def force_unmount(path: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)


@dataclass
class Mount:
    path: Path
    source: str
    server: S3Server
    options: list[str] = field(default_factory=list)

    def umount(self, timeout: float = 60) -> int:
        result = subprocess.run([*OBSFS, "umount", str(self.path)], capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
        return result.returncode


@dataclass
class Mounter:
    """Makes mounts for one test and tears every one of them down, even when the test failed."""

    tmp: Path
    mounts: list[Mount] = field(default_factory=list)
    counter: int = 0

    def options_for(self, server: S3Server, source: str, extra: list[str]) -> list[str]:
        passwd = write_passwd(self.tmp, server)
        self.counter += 1
        log = self.tmp / f"obsfs-{self.counter}.log"
        base = (f"url={server.endpoint},passwd_file={passwd},use_path_request_style,"
                f"signature={'v2' if server.kind == 'rgw' else 'v4'},logfile={log},dbglevel=info,"
                "deadline=10,readwrite_timeout=5")
        if not any(re.search(r"(^|,)(cache_dir|use_cache)=", option) for option in extra):
            # As the default (one cache dir per bucket and prefix, found again by a remount), but
            # in the test's own directory, so that a test run leaves nothing in /var/cache.
            base += f",cache_dir={self.tmp / ('cache-' + re.sub(r'[^A-Za-z0-9.-]', '_', source))}"
        return [base, *extra]

    def run(self, server: S3Server, source: str, mountpoint: Path | None = None, *extra: str,
            env: dict[str, str] | None = None, umask: int = -1) -> tuple[subprocess.CompletedProcess[str], Mount]:
        """Run ``obsfs mount`` (with ``umask`` if not -1); the caller checks the result. The mount is
        torn down either way."""
        if mountpoint is None:
            self.counter += 1
            mountpoint = self.tmp / f"mnt{self.counter}"
            mountpoint.mkdir()
        options = self.options_for(server, source, list(extra))
        argv = [*OBSFS, "mount", source, str(mountpoint)]
        for option in options:
            argv += ["-o", option]
        mount = Mount(mountpoint, source, server, options)
        self.mounts.append(mount)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, umask=umask)
        return result, mount

    def mount(self, server: S3Server, source: str, *extra: str, umask: int = -1) -> Mount:
        result, mount = self.run(server, source, None, *extra, umask=umask)
        assert result.returncode == 0, f"mount failed ({result.returncode}): {result.stderr}"
        assert is_mounted(mount.path)
        return mount

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("obsfs-*.log")))

    def teardown(self) -> list[str]:
        """Unmount everything; returns problems (a daemon that did not exit cleanly)."""
        problems = []
        for mount in self.mounts:
            if not is_mounted(mount.path):
                continue
            try:
                code = mount.umount()
            except subprocess.TimeoutExpired:
                code = -1
            if code != 0:
                problems.append(f"{mount.path}: umount exit {code}")
            deadline = time.monotonic() + 10
            while is_mounted(mount.path) and time.monotonic() < deadline:
                time.sleep(0.05)
            if is_mounted(mount.path):
                force_unmount(mount.path)
                problems.append(f"{mount.path}: still mounted after umount")
            kill_daemon_of(mount.path)  # a daemon still draining must not outlive the test
        return problems
