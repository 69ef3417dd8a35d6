"""The FUSE peers: obsfs, s3fs and rclone mount, each mounted the way its users would, on the same RGW.

Each mount gets a fresh mount point and a fresh cache dir, so a "cold" mount really knows nothing
(except a remount, which is given the cache dir of the mount before it on purpose). A
mount is always torn down, whatever happened: the peer's own unmount first (obsfs flushes there), then
``fusermount3 -u``, then ``-u -z``, then SIGTERM/SIGKILL of the processes that served it.

Peer settings worth knowing when reading the numbers:
- s3fs runs with its defaults (no ``use_cache``), in the foreground as our child.
- rclone runs with ``--vfs-cache-mode writes`` and ``--vfs-write-back 0s``: the default 5 s delay before
  an upload starts would add a constant to every "until durable" time and measure a setting, not
  the client. Its remote is configured through ``RCLONE_CONFIG_*`` variables, and ``AWS_CA_BUNDLE`` is
  removed from its environment: Debian's rclone 1.60 fails to create the remote when it is set.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.attrs import FIELDS
from bench.errors import MountError
from bench.procs import (
    HangGuard,
    Memory,
    alive,
    cpu_seconds,
    first_line,
    force_unmount,
    is_mounted,
    memory_of,
    mount_pids,
    stop_pids,
)
from bench.rgw import Endpoint

log = logging.getLogger(__name__)

OBSFS = Path(sys.executable).with_name("obsfs")
MOUNT_WAIT = 120.0  # seconds for a peer to answer after it was started
MOUNT_POLL = 0.002  # seconds between checks whether a mount answers: fine enough to time a 0.15 s start
UNMOUNT_WAIT = 900.0  # seconds a peer may take to flush on unmount


@dataclass
class Mount:
    peer: str
    path: Path
    log_file: Path
    cache: Path
    proc: subprocess.Popen[bytes] | None
    peak: Memory = field(default_factory=lambda: Memory(0, 0))
    ready_s: float = 0.0  # from starting the mount command until a listing of its root returned

    def pids(self) -> list[int]:
        return mount_pids(self.path, [self.proc.pid] if self.proc else [])

    def memory(self) -> Memory:
        """Current memory; also remembers the highest peak seen, since processes may exit before unmount."""
        now = memory_of(self.pids())
        self.peak = Memory(max(self.peak.rss_kib, now.rss_kib), max(self.peak.hwm_kib, now.hwm_kib))
        return now

    def cpu(self) -> float:
        """CPU seconds the mount's processes used so far; workloads take the difference."""
        return cpu_seconds(self.pids())

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Peer(ABC):
    name: str
    tool: str  # the program that must be installed, found on PATH
    honors: frozenset[str] = FIELDS  # the stored attributes (bench.attrs) it shows as they are

    def __init__(self, endpoint: Endpoint, bucket: str, workdir: Path, hang_guard: float) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.workdir = workdir
        self.hang_guard = hang_guard
        self._count = 0
        self.passwd = workdir / "passwd"
        if not self.passwd.exists():
            self.passwd.write_text(f"{endpoint.access_key}:{endpoint.secret_key}\n")
        self.passwd.chmod(0o600)

    @abstractmethod
    def start(self, mnt: Path, cache: Path, log_file: Path) -> subprocess.Popen[bytes] | None:
        """Start serving ``mnt``; a child process if the peer stays our child, else None."""

    def unmount(self, mount: Mount) -> None:
        """The peer's normal unmount; the default suits peers that run as our foreground child."""
        if not is_mounted(mount.path):
            return
        result = subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise MountError(f"{self.name}: fusermount3 -u failed: {result.stderr.strip()}")
        if mount.proc is not None:
            mount.proc.wait(timeout=UNMOUNT_WAIT)

    def version(self) -> str:
        return "unknown"

    def missing(self) -> str | None:
        """Why this peer cannot run here, or None: a missing peer is reported, not a crash."""
        return None if shutil.which(self.tool) else f"{self.tool} is not installed (run scripts/install.sh)"

    @contextmanager
    def mounted(self, cache: Path | None = None) -> Iterator[Mount]:
        """A mount with a fresh cache dir, or with ``cache`` (a remount that finds what was cached)."""
        self._count += 1
        tag = f"{self.name}-{self._count}"
        mnt = self.workdir / "mnt" / tag
        cache = cache or self.workdir / "cache" / tag
        log_file = self.workdir / "logs" / f"{tag}.log"
        for directory in (mnt, cache, log_file.parent):
            directory.mkdir(parents=True, exist_ok=True)
        mount = Mount(self.name, mnt, log_file, cache, None)
        guard = HangGuard(mnt, self.hang_guard)
        try:
            start = time.perf_counter()
            mount.proc = self.start(mnt, cache, log_file)
            self._wait_for_mount(mount)
            mount.ready_s = time.perf_counter() - start
            yield mount
        finally:
            guard.cancel()
            self._teardown(mount)

    def _wait_for_mount(self, mount: Mount) -> None:
        """Until the mount point lists: a mount that is in the table but does not answer yet is not up."""
        end = time.monotonic() + MOUNT_WAIT
        error: OSError | None = None
        while True:
            if is_mounted(mount.path):
                try:
                    os.listdir(mount.path)
                    return
                except OSError as exc:
                    error = exc
            if mount.proc is not None and mount.proc.poll() is not None:
                raise MountError(f"{self.name} exited with {mount.proc.returncode} before mounting:\n"
                                 f"{mount.log_tail()}")
            if time.monotonic() > end:
                raise MountError(f"{self.name} did not answer within {MOUNT_WAIT:.0f} s ({error}):\n"
                                 f"{mount.log_tail()}")
            time.sleep(MOUNT_POLL)

    def _teardown(self, mount: Mount) -> None:
        pids = mount.pids()
        if is_mounted(mount.path):
            try:
                self.unmount(mount)
            except (MountError, subprocess.SubprocessError, OSError) as exc:
                log.error("%s: unmount of %s failed (%s); forcing it", self.name, mount.path, exc)
        force_unmount(mount.path)
        if is_mounted(mount.path):
            log.error("%s: %s is still mounted after fusermount3 -u -z", self.name, mount.path)
        living = [p for p in pids if alive(p)]
        if living:
            log.warning("%s: processes %s still alive after unmount; stopping them", self.name, living)
            stop_pids(living)
        if mount.proc is not None and mount.proc.poll() is None:
            mount.proc.kill()
        if mount.proc is not None:
            mount.proc.wait()


class ObsfsPeer(Peer):
    name = "obsfs"
    tool = str(OBSFS)
    extra_options = ""  # appended to the -o list

    def start(self, mnt: Path, cache: Path, log_file: Path) -> None:
        options = (f"url={self.endpoint.url},use_path_request_style,signature=v2,passwd_file={self.passwd},"
                   f"logfile={log_file},cache_dir={cache}{self.extra_options}")
        result = subprocess.run([str(OBSFS), "mount", self.bucket, str(mnt), "-o", options],
                                capture_output=True, text=True, timeout=MOUNT_WAIT)
        if result.returncode != 0:
            raise MountError(f"obsfs mount exited with {result.returncode}: {result.stderr.strip()}\n"
                             f"{log_file.read_text(errors='replace')[-1500:] if log_file.exists() else ''}")

    def unmount(self, mount: Mount) -> None:
        """``obsfs umount`` uploads what is pending and waits for the daemon: that is its durable unmount."""
        result = subprocess.run([str(OBSFS), "umount", str(mount.path), "--timeout", str(UNMOUNT_WAIT)],
                                capture_output=True, text=True, timeout=UNMOUNT_WAIT + 60)
        if result.returncode != 0:
            raise MountError(f"obsfs umount exited with {result.returncode}: {result.stderr.strip()}\n"
                             f"{mount.log_tail()}")

    def version(self) -> str:
        """``git rev-parse`` only: it reads the repository and never refreshes the index."""
        rev = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True)
        return f"{first_line([str(OBSFS), '--version'])} (git {rev.stdout.strip() or '?'} + working tree)"


class S3fsPeer(Peer):
    name = "s3fs"
    tool = "s3fs"

    def start(self, mnt: Path, cache: Path, log_file: Path) -> subprocess.Popen[bytes]:
        options = f"url={self.endpoint.url},use_path_request_style,passwd_file={self.passwd}"
        with log_file.open("ab") as out:
            return subprocess.Popen(["s3fs", self.bucket, str(mnt), "-f", "-o", options], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def version(self) -> str:
        return first_line(["s3fs", "--version"])


class RclonePeer(Peer):
    name = "rclone"
    tool = "rclone"
    honors = frozenset({"size", "mtime"})  # mode and owner come from --file-perms, --uid and --gid

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update(RCLONE_CONFIG_RGW_TYPE="s3", RCLONE_CONFIG_RGW_PROVIDER="Ceph",
                   RCLONE_CONFIG_RGW_ACCESS_KEY_ID=self.endpoint.access_key,
                   RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY=self.endpoint.secret_key,
                   RCLONE_CONFIG_RGW_ENDPOINT=self.endpoint.url)
        return env

    def start(self, mnt: Path, cache: Path, log_file: Path) -> subprocess.Popen[bytes]:
        config = self.workdir / "rclone.conf"
        config.touch(mode=0o600)  # empty: the remote comes from the environment, never from ~/.config
        argv = ["rclone", "mount", f"rgw:{self.bucket}", str(mnt), "--config", str(config),
                "--vfs-cache-mode", "writes", "--vfs-write-back", "0s", "--cache-dir", str(cache),
                "--log-file", str(log_file), "--log-level", "NOTICE"]
        return subprocess.Popen(argv, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def version(self) -> str:
        return first_line(["rclone", "version"])


class ObsfsIndexedPeer(ObsfsPeer):
    """obsfs with ``-o attr_index``: it writes the directory that every peer's ``ls_own`` lists,
    and is the mount obsfs lists it with (#16.2). Not a peer of its own in the table."""

    name = "obsfs-indexed"
    extra_options = ",attr_index"


class ObsfsUncountedPeer(ObsfsPeer):
    """obsfs with ``-o metrics=off``: what obsfs's metrics cost is its ratio to this one."""

    name = "obsfs-nometrics"
    extra_options = ",metrics=off"


class ObsfsUnkeptPeer(ObsfsPeer):
    """obsfs with ``-o nokeeper``: what keeping the mount alive across a daemon's death costs is
    obsfs's ratio to this one (issue #14, item 4)."""

    name = "obsfs-nokeeper"
    extra_options = ",nokeeper"


FUSE_PEERS: dict[str, type[Peer]] = {p.name: p for p in (ObsfsPeer, ObsfsUncountedPeer, ObsfsUnkeptPeer, S3fsPeer,
                                                          RclonePeer)}
