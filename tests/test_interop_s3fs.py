"""Interoperability with Debian's s3fs 1.90 on the same bucket, in both directions."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounting import Mounter, force_unmount, is_mounted, write_passwd
from tests.s3server import S3Server
from tests.trees import SPECIAL, describe, expected_special, make_special, make_tree, special_view

pytestmark = pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs is installed by scripts/install.sh")


class S3fs:
    """s3fs mounts of the same server, unmounted in teardown."""

    def __init__(self, server: S3Server, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.mounts: list[Path] = []

    def mount(self, bucket: str) -> Path:
        target = self.tmp / f"s3fs{len(self.mounts)}"
        target.mkdir()
        self.mounts.append(target)
        passwd = write_passwd(self.tmp, self.server, "s3fs-passwd")
        subprocess.run(["s3fs", bucket, str(target), "-o",
                        f"url={self.server.endpoint},use_path_request_style,passwd_file={passwd},"
                        "stat_cache_expire=1,dbglevel=warn"], check=True)
        deadline = time.monotonic() + 20
        while not is_mounted(target):
            assert time.monotonic() < deadline, "s3fs did not mount"
            time.sleep(0.05)
        return target

    def unmount(self, target: Path) -> None:
        subprocess.run(["fusermount3", "-u", str(target)], check=True)
        deadline = time.monotonic() + 20
        while is_mounted(target) and time.monotonic() < deadline:
            time.sleep(0.05)

    def teardown(self) -> None:
        for target in self.mounts:
            if is_mounted(target):
                force_unmount(target)


@pytest.fixture
def s3fs(moto: S3Server, tmp_path: Path) -> Iterator[S3fs]:
    mounts = S3fs(moto, tmp_path)
    yield mounts
    mounts.teardown()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    make_tree(root)
    return root


def test_s3fs_writes_obsfs_reads(s3fs: S3fs, mounter: Mounter, moto: S3Server, bucket: str, source: Path) -> None:
    theirs = s3fs.mount(bucket)
    subprocess.run(["cp", "-a", str(source), str(theirs / "tree")], check=True)
    s3fs.unmount(theirs)
    ours = mounter.mount(moto, bucket)
    assert describe(ours.path / "tree") == describe(source)


def test_obsfs_writes_s3fs_reads(s3fs: S3fs, mounter: Mounter, moto: S3Server, bucket: str, source: Path) -> None:
    ours = mounter.mount(moto, bucket)
    subprocess.run(["cp", "-a", str(source), str(ours.path / "tree")], check=True)
    assert ours.umount() == 0
    theirs = s3fs.mount(bucket)
    assert describe(theirs / "tree") == describe(source)


def test_s3fs_sees_the_attribute_index_as_one_directory_at_the_root(s3fs: S3fs, mounter: Mounter, moto: S3Server,
                                                                    bucket: str, source: Path) -> None:
    """What ``-o attr_index`` changes for s3fs users (docs/posix.md): a ``.obsfs-index`` directory
    at the root, holding an ``index.json`` per directory written; the tree itself is unchanged."""
    ours = mounter.mount(moto, bucket, "attr_index")
    subprocess.run(["cp", "-a", str(source), str(ours.path / "tree")], check=True)
    assert ours.umount() == 0
    theirs = s3fs.mount(bucket)
    assert sorted(os.listdir(theirs)) == [".obsfs-index", "tree"]
    assert os.listdir(theirs / ".obsfs-index") == ["tree"]
    assert "index.json" in os.listdir(theirs / ".obsfs-index" / "tree")
    assert describe(theirs / "tree") == describe(source)


def test_special_files_both_ways(s3fs: S3fs, mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """s3fs 1.90 stores a FIFO, device or socket as an empty object with its type in ``mode`` and
    keeps no device number; obsfs adds an ``rdev`` field, which s3fs's copies carry along."""
    theirs = s3fs.mount(bucket)
    ours = mounter.mount(moto, bucket, "stat_cache_expire=0", "entry_timeout=0").path  # sees s3fs's changes
    (theirs / "by-s3fs").mkdir()
    make_special(theirs / "by-s3fs")
    (ours / "by-obsfs").mkdir()
    make_special(ours / "by-obsfs")

    assert special_view(ours / "by-s3fs") == expected_special(device_numbers=False)
    assert special_view(theirs / "by-obsfs") == expected_special(device_numbers=False)
    assert special_view(ours / "by-obsfs") == expected_special()

    os.chmod(theirs / "by-obsfs" / "null", 0o600)
    os.rename(theirs / "by-obsfs" / "disk", theirs / "by-obsfs" / "disk2")
    null, disk = (os.lstat(ours / "by-obsfs" / name) for name in ("null", "disk2"))
    assert (null.st_mode, null.st_rdev) == (SPECIAL["null"][0] & ~0o7777 | 0o600, SPECIAL["null"][1])
    assert (stat.S_IFMT(disk.st_mode), disk.st_rdev) == (stat.S_IFBLK, SPECIAL["disk"][1])
