"""The cache dir holds file contents, paths and attributes: only the daemon's user may read it.

Each test runs the real daemon with a permissive umask and stats what it really created, SQLite's
``-wal`` and ``-shm`` files included (SQLite gives those the main database's mode, not the umask's).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.mounting import Mount, Mounter, fsync_tree
from tests.s3server import S3Server

PAYLOAD = b"contents nobody else may read\n" * 100


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` ("." here) and of everything below it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> dict[str, int]:
    found = modes(root)
    loose = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (root / name).is_dir() else 0o600)}
    assert not loose, f"not private: {loose}"
    return found


def use_the_caches(mnt: Mount, s3: Any, bucket: str) -> None:
    """Make the daemon create every kind of cache file: journal and staging (a write), read cache
    chunks (a read of a foreign object), metadata cache rows (a listing with attributes)."""
    (mnt.path / "written").write_bytes(PAYLOAD)
    assert (mnt.path / "foreign").read_bytes() == PAYLOAD
    result = subprocess.run(["ls", "-l", str(mnt.path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    fsync_tree(mnt.path)
    assert s3.get_object(Bucket=bucket, Key="written")["Body"].read() == PAYLOAD


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_new_cache_dir_and_log_are_private(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                           tmp_path: Path, umask: int) -> None:
    s3.put_object(Bucket=bucket, Key="foreign", Body=PAYLOAD)
    cache = tmp_path / "cache"
    mnt = mounter.mount(moto, bucket, f"cache_dir={cache}", umask=umask)
    use_the_caches(mnt, s3, bucket)
    live = assert_private(cache)  # while mounted, SQLite's -wal and -shm files exist
    assert {"lock", "journal.db", "journal.db-wal", "journal.db-shm", "meta.db", "meta.db-wal",
            "meta.db-shm", "data", "staging"} <= set(live)
    assert mnt.umount() == 0
    after = assert_private(cache)
    assert any(name.startswith("data/") for name in after), "no read cache chunk was written"
    logs = list(tmp_path.glob("obsfs-*.log"))  # -o logfile= outside the cache dir
    assert logs
    assert all(stat.S_IMODE(log.stat().st_mode) == 0o600 for log in logs)


def test_existing_cache_dir_is_made_private(mounter: Mounter, moto: S3Server, bucket: str, s3: Any,
                                            tmp_path: Path) -> None:
    """A cache dir an earlier version left world-readable, with a database in it."""
    s3.put_object(Bucket=bucket, Key="foreign", Body=PAYLOAD)
    cache = tmp_path / "cache"
    (cache / "data").mkdir(parents=True)
    sqlite3.connect(cache / "meta.db").close()
    (cache / "data" / ("0" * 32 + ".0")).write_bytes(b"an old chunk")
    for path in (cache, cache / "data"):
        path.chmod(0o755)
    for path in (cache / "meta.db", cache / "data" / ("0" * 32 + ".0")):
        path.chmod(0o644)
    mnt = mounter.mount(moto, bucket, f"cache_dir={cache}", umask=0o022)
    use_the_caches(mnt, s3, bucket)
    assert "meta.db-wal" in assert_private(cache)
    assert mnt.umount() == 0
    assert_private(cache)
    assert os.path.exists(cache / "meta.db")
