"""What a listing costs in requests, counted on a real mount through its metrics endpoint.

Counts, not times: how many LISTs and HEADs reach the store and how many LOOKUPs and GETATTRs the
kernel sends, for ``ls -l`` and for a directory read in small ``getdents`` calls. Objects carry
s3fs-style metadata that no default matches, so every listing is also checked for showing it.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.mounting import Mounter
from tests.s3server import S3Server, free_port
from tests.test_metrics import scrape, value

STORED = {"mode": str(stat.S_IFREG | 0o640), "uid": "1234", "gid": "2345", "mtime": "1000000000"}
SHOWN = "-rw-r----- 1 1234 2345 1 1000000000"  # ls -ln --time-style=+%s without the name
SYS_GETDENTS64 = 217  # x86_64


def plant(s3: Any, bucket: str, names: list[str]) -> None:
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=b"x", Metadata=STORED)


def ls_ln(path: Path) -> list[str]:
    result = subprocess.run(["ls", "-ln", "--time-style=+%s", str(path)], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, LC_ALL="C"))
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if not line.startswith("total")]


class Counts:
    """Requests the mount served since the last ``since()``."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.last = scrape(self.url)

    def since(self) -> dict[str, float]:
        now = scrape(self.url)
        out = {}
        for operation in ("list", "head"):
            key = "obsfs_store_requests_total"
            out[operation] = sum(v - self.last.get(k, 0.0) for k, v in now.items()
                                 if k[0] == key and ("operation", operation) in k[1])
        for operation in ("lookup", "getattr", "readdir"):
            out[operation] = (value(now, "obsfs_fuse_operations_total", operation=operation)
                              - value(self.last, "obsfs_fuse_operations_total", operation=operation))
        self.last = now
        return out


def test_a_warm_ls_l_sends_no_request_per_entry_nor_to_the_store(mounter: Mounter, moto: S3Server, bucket: str,
                                                                  s3: Any) -> None:
    names = [f"d/f{i:02d}" for i in range(20)]
    plant(s3, bucket, names)
    port = free_port()
    mnt = mounter.mount(moto, bucket, f"metrics=127.0.0.1:{port}")
    counts = Counts(port)
    cold = ls_ln(mnt.path / "d")
    assert [line.rsplit(" ", 1)[0] for line in cold] == [SHOWN] * len(names)
    assert counts.since()["head"] >= len(names)  # exact attributes need one HEAD each, once
    # Within stat_cache_expire the listing is the one just made, and the kernel holds every
    # entry's attributes: one opendir and a few READDIRPLUS batches, nothing per entry.
    assert ls_ln(mnt.path / "d") == cold
    warm = counts.since()
    assert (warm["list"], warm["head"]) == (0, 0)
    assert warm["lookup"] + warm["getattr"] <= 2  # the directory itself at most
    # What this mount changes is in the next listing at once.
    (mnt.path / "d" / "f00").unlink()
    (mnt.path / "d" / "new").write_bytes(b"x")
    listed = os.listdir(mnt.path / "d")
    assert "f00" not in listed and "new" in listed
    assert counts.since()["list"] == 0


def test_another_clients_changes_show_once_the_listing_expired(mounter: Mounter, moto: S3Server, bucket: str,
                                                                s3: Any) -> None:
    plant(s3, bucket, ["d/a", "d/b"])
    mnt = mounter.mount(moto, bucket, "stat_cache_expire=1")
    assert sorted(os.listdir(mnt.path / "d")) == ["a", "b"]
    s3.delete_object(Bucket=bucket, Key="d/a")
    plant(s3, bucket, ["d/c"])
    time.sleep(1.2)  # past stat_cache_expire: the next listing asks the store
    assert sorted(os.listdir(mnt.path / "d")) == ["b", "c"]


def getdents(fd: int, size: int) -> int:
    """One getdents64 call with a buffer of ``size`` bytes; the bytes it filled."""
    buf = ctypes.create_string_buffer(size)
    filled = ctypes.CDLL(None, use_errno=True).syscall(SYS_GETDENTS64, fd, buf, size)
    assert filled >= 0, os.strerror(ctypes.get_errno())
    return int(filled)


def test_entries_headed_during_a_listing_reach_the_kernel_exact(mounter: Mounter, moto: S3Server, bucket: str,
                                                                 s3: Any) -> None:
    """A directory read in several READDIRPLUS requests: those that come after the HEADs of their
    entries answered hand the kernel exact attributes with their timeouts, so ``ls -l`` sends no
    LOOKUP for them (it reads and stats a batch at a time)."""
    names = ["f1", "f2", "f3"]
    plant(s3, bucket, [f"d/{n}" for n in names])
    port = free_port()
    mnt = mounter.mount(moto, bucket, f"metrics=127.0.0.1:{port}")
    counts = Counts(port)
    fd = os.open(mnt.path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Room for "." and ".." only: the first READDIRPLUS lists the directory and starts the
        # HEADs; its entries reach the kernel with the defaults and zero timeouts.
        assert getdents(fd, 64) == 48
        give_up = time.monotonic() + 60  # a hang guard, not a timing check
        while value(scrape(counts.url), "obsfs_store_requests_total", operation="head", outcome="ok") < len(names):
            assert time.monotonic() < give_up, "the listing's HEADs never answered"
            time.sleep(0.05)
        time.sleep(0.2)  # the last answer reaches the trio thread after it was counted
        while getdents(fd, 4096):
            pass
    finally:
        os.close(fd)
    counts.since()
    for name in names:
        st = os.lstat(mnt.path / "d" / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o640, 1234, 1_000_000_000)
    assert counts.since()["lookup"] == 0


def test_lookups_past_the_listings_expiry_list_a_small_directory_once(mounter: Mounter, moto: S3Server, bucket: str,
                                                                       s3: Any) -> None:
    """Names probed in a directory whose listing has expired (a build, or ``cp -r`` asking
    whether each destination exists): one LIST of the directory answers them all, where each
    name cost a HEAD, and each missing one a LIST and another HEAD besides."""
    plant(s3, bucket, ["d/a", "d/b"])
    port = free_port()
    mnt = mounter.mount(moto, bucket, f"stat_cache_expire=1,negative_timeout=1,metrics=127.0.0.1:{port}")
    assert [line.rsplit(" ", 1)[0] for line in ls_ln(mnt.path / "d")] == [SHOWN] * 2
    counts = Counts(port)
    time.sleep(1.2)  # past stat_cache_expire: the kernel asks again, and so must the mount
    missing = [f"missing{i:02d}" for i in range(40)]
    for name in missing:
        assert not (mnt.path / "d" / name).exists()
    st = os.lstat(mnt.path / "d" / "a")  # known from the listing, exact by its ETag
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o640, 1234, 1_000_000_000)
    asked = counts.since()
    assert asked["lookup"] >= len(missing)  # the kernel did ask for each name
    # d listed again, once; no name HEADed.
    assert (asked["list"], asked["head"]) == (1, 0), asked
    # Another client's new file shows once the listing expires again, as before.
    plant(s3, bucket, ["d/missing00"])
    time.sleep(1.2)  # and the kernel's "no such name" with it
    assert (mnt.path / "d" / "missing00").exists()
