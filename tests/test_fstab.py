"""fstab and ``mount -t fuse.obsfs``: util-linux mount(8) runs mount.fuse3, which runs ``obsfs``.

mount(8) runs its helpers without PATH, and mount.fuse3 finds ``obsfs`` through /bin/sh's
default PATH; no environment can point it at this checkout's virtualenv. So the ``helper``
fixture links it into /usr/local/sbin for the test, and removes the link afterwards. The fstab
files are the tests' own (``mount -T``); /etc/fstab is never read or touched.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from obsfs.runtime import state_file
from tests.mounting import OBSFS, force_unmount, is_mounted, kill_daemon_of, wait_for, write_passwd
from tests.s3server import S3Server

HELPER_LINK = Path("/usr/local/sbin/obsfs")  # the first entry of dash's default PATH
VENV_OBSFS = Path(sys.executable).parent / "obsfs"


@pytest.fixture
def helper() -> Iterator[None]:
    """``obsfs`` where mount.fuse3 looks for it, pointing at this checkout's entry point."""
    if not VENV_OBSFS.exists():
        pytest.fail(f"{VENV_OBSFS} is missing: run ./scripts/install.sh")
    try:
        HELPER_LINK.symlink_to(VENV_OBSFS)
    except FileExistsError:
        if HELPER_LINK.resolve() != VENV_OBSFS.resolve():
            pytest.fail(f"{HELPER_LINK} exists and is not {VENV_OBSFS}: another obsfs install (or "
                        "another checkout's test run) owns it")
        yield  # the same link, made by hand: leave it
        return
    try:
        yield
    finally:
        HELPER_LINK.unlink()


@dataclass
class Fstab:
    """A private fstab and the mount points it names; all unmounted in teardown, also on failure."""

    tmp: Path
    server: S3Server
    bucket: str
    mountpoints: list[Path] = field(default_factory=list)

    def options(self, extra: str = "", cache: str = "cache") -> str:
        """The options a real fstab line needs: no environment reaches the daemon, so the keys
        come from passwd_file. Each line mounted at once needs a ``cache`` dir of its own."""
        passwd = write_passwd(self.tmp, self.server)
        base = (f"passwd_file={passwd},url={self.server.endpoint},use_path_request_style,"
                f"cache_dir={self.tmp / cache},logfile={self.tmp / 'obsfs.log'},dbglevel=info")
        return f"{extra},{base}" if extra else base

    def mountpoint(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        self.mountpoints.append(path)
        return path

    def write(self, *lines: str) -> Path:
        path = self.tmp / "fstab"
        path.write_text("# obsfs test fstab\n" + "".join(line + "\n" for line in lines))
        return path

    def log(self) -> str:
        log = self.tmp / "obsfs.log"
        return log.read_text() if log.exists() else "(no daemon log)"

    def teardown(self) -> None:
        """Unmount what a failed test left; a daemon still draining must not outlive the test."""
        for path in self.mountpoints:
            if is_mounted(path):
                subprocess.run(["umount", str(path)], capture_output=True, timeout=60)
            if is_mounted(path):
                force_unmount(path)
            try:
                wait_for(functools.partial(daemon_gone, path), f"the daemon of {path} exits", 10)
            except AssertionError:
                kill_daemon_of(path)
            for suffix in ("pid", "status"):
                state_file(str(path), suffix).unlink(missing_ok=True)


@pytest.fixture
def fstab(helper: None, moto: S3Server, bucket: str, tmp_path: Path) -> Iterator[Fstab]:
    table = Fstab(tmp_path, moto, bucket)
    try:
        yield table
    finally:
        table.teardown()


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """mount(8) or umount(8) as an init script would run it: no secrets in the environment."""
    env = {k: v for k, v in os.environ.items() if "ACCESS_KEY" not in k and "SECRET" not in k}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, env=env)


def mount_options(path: Path) -> tuple[str, str, set[str]]:
    """(source, type, per-mount flags) of the mount at ``path``, from mountinfo."""
    with open("/proc/self/mountinfo") as stream:
        for line in stream:
            fields, _, tail = line.partition(" - ")
            parts = fields.split()
            if parts[4] == str(path):
                fstype, source, _ = tail.split(maxsplit=2)
                return source, fstype, set(parts[5].split(","))
    raise AssertionError(f"{path} is not mounted")


def daemon_gone(path: Path) -> bool:
    return not state_file(str(path), "pid").exists()


def daemon_pid(path: Path) -> int:
    return int(state_file(str(path), "pid").read_text())


def unmount_and_wait(path: Path, fstab: Fstab) -> None:
    """Plain umount(8); the daemon sees the kernel let go, uploads what is pending, exits 0."""
    pid = daemon_pid(path)
    result = run("umount", str(path))  # no umount.fuse helper exists: umount2(2), then the kernel
    assert result.returncode == 0, result.stderr  # ends the FUSE session
    assert not is_mounted(path)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), f"daemon {pid} exits after umount")
    assert state_file(str(path), "status").read_text() == "0", fstab.log()


def test_mount_all_from_fstab_then_umount(fstab: Fstab, s3: object) -> None:
    mnt = fstab.mountpoint("mnt")
    # upload_delay: the upload is still pending when umount(8) returns; the daemon must drain it.
    table = fstab.write(f"{fstab.bucket} {mnt} fuse.obsfs _netdev,{fstab.options('upload_delay=60')} 0 0")
    result = run("mount", "-T", str(table), "-a")
    assert result.returncode == 0, f"{result.stderr}\n{fstab.log()}"
    assert is_mounted(mnt)
    source, fstype, flags = mount_options(mnt)
    assert (source, fstype) == (fstab.bucket, "fuse.obsfs")  # as in fstab: what mount -a compares
    assert {"nosuid", "nodev"} <= flags  # mount.fuse3 asked for dev,suid; see runtime.FUSE_KERNEL_FLAGS
    data = os.urandom(3 << 20)
    (mnt / "f").write_bytes(data)
    again = run("mount", "-T", str(table), "-a", "-v")
    assert again.returncode == 0 and "already mounted" in again.stdout, again
    unmount_and_wait(mnt, fstab)
    assert s3.get_object(Bucket=fstab.bucket, Key="f")["Body"].read() == data  # type: ignore[attr-defined]


def test_mount_by_mount_point_with_prefix_and_foreign_options(fstab: Fstab, s3: object) -> None:
    """``mount MOUNTPOINT`` finds the line; the options of mount(8), systemd and the FUSE helper
    (``user`` implies noexec,nosuid,nodev) are taken or ignored, not refused."""
    mnt = fstab.mountpoint("mnt")
    foreign = "_netdev,nofail,user,x-systemd.automount,x-systemd.mount-timeout=30,noatime,defaults"
    table = fstab.write(f"{fstab.bucket}:/team {mnt} fuse.obsfs {fstab.options(foreign)} 0 0")
    result = run("mount", "-T", str(table), str(mnt))
    assert result.returncode == 0, f"{result.stderr}\n{fstab.log()}"
    source, _, flags = mount_options(mnt)
    assert source == f"{fstab.bucket}:/team"
    assert {"noexec", "nosuid", "nodev", "noatime"} <= flags
    assert "already mounted" in run("mount", "-T", str(table), "-a", "-v").stdout
    (mnt / "g").write_text("in a prefix")
    unmount_and_wait(mnt, fstab)
    assert s3.get_object(Bucket=fstab.bucket, Key="team/g")["Body"].read() == b"in a prefix"  # type: ignore[attr-defined]


def test_noauto_is_skipped_by_mount_all(fstab: Fstab) -> None:
    auto, manual = fstab.mountpoint("auto"), fstab.mountpoint("manual")
    table = fstab.write(f"{fstab.bucket} {manual} fuse.obsfs noauto,{fstab.options()} 0 0",
                        f"{fstab.bucket}:/other {auto} fuse.obsfs {fstab.options(cache='cache2')} 0 0")
    result = run("mount", "-T", str(table), "-a")
    assert result.returncode == 0, f"{result.stderr}\n{fstab.log()}"
    assert is_mounted(auto)
    assert not is_mounted(manual)
    unmount_and_wait(auto, fstab)


def test_mount_type_fuse_obsfs(fstab: Fstab, s3: object) -> None:
    """``mount -t fuse.obsfs`` without an fstab, read-only; ``obsfs umount`` stops such a mount too."""
    s3.put_object(Bucket=fstab.bucket, Key="seen", Body=b"from the store")  # type: ignore[attr-defined]
    mnt = fstab.mountpoint("mnt")
    result = run("mount", "-t", "fuse.obsfs", fstab.bucket, str(mnt), "-o", fstab.options("ro"))
    assert result.returncode == 0, f"{result.stderr}\n{fstab.log()}"
    assert "ro" in mount_options(mnt)[2]
    assert (mnt / "seen").read_bytes() == b"from the store"
    with pytest.raises(OSError) as error:
        (mnt / "new").write_text("x")
    assert error.value.errno == errno.EROFS
    assert subprocess.run([*OBSFS, "umount", str(mnt)], timeout=120).returncode == 0
    assert not is_mounted(mnt)


def test_mount_errors_reach_mount(fstab: Fstab) -> None:
    """A refused option fails ``mount`` with obsfs's one line, and mounts nothing."""
    mnt = fstab.mountpoint("mnt")
    result = run("mount", "-t", "fuse.obsfs", fstab.bucket, str(mnt), "-o", fstab.options("nosymfollow"))
    assert result.returncode != 0
    assert "unknown mount option 'nosymfollow'" in result.stderr
    assert not is_mounted(mnt)
