"""Directories other tools marked their own way (obsfs/dialects.py) browse as in s3fs 1.90, and
their markers stay untouched until the user acts on the directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsfs.meta import DIR_CONTENT_TYPE
from tests.mounting import Mounter, fsync_dir
from tests.s3server import S3Server
from tests.test_interop_s3fs import S3fs, pytestmark  # noqa: F401  (skipped without s3fs)

FOLDER_MODE = stat.S_IFDIR | 0o700
PLANTED: dict[str, tuple[bytes, dict[str, Any]]] = {
    "folder_$folder$": (b"", {"Metadata": {"mode": str(FOLDER_MODE)}}),  # old s3fs, nothing below
    "hadoop_$folder$": (b"", {}),  # Hadoop S3N
    "hadoop/part-0": (b"part", {}),
    "zero": (b"", {}),  # a zero-byte object without a slash, keys below
    "zero/f": (b"zero-f", {}),
    "xdir": (b"", {"ContentType": DIR_CONTENT_TYPE}),
    "xdir/f": (b"xdir-f", {}),
    "file": (b"data", {}),  # a file hides the keys below it
    "file/hidden": (b"hidden", {}),
    "both/": (b"", {"ContentType": DIR_CONTENT_TYPE}),
    "both_$folder$": (b"", {}),
    "both/f": (b"both-f", {}),
    "plain/f": (b"plain-f", {}),
}
EXPECTED = {"folder": None, "hadoop": None, "hadoop/part-0": b"part", "zero": None, "zero/f": b"zero-f",
            "xdir": None, "xdir/f": b"xdir-f", "file": b"data", "both": None, "both/f": b"both-f",
            "plain": None, "plain/f": b"plain-f"}


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root``: a directory's is None, a file's its contents."""
    found: dict[str, bytes | None] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), root)] = None
        for name in files:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = Path(path).read_bytes()
    return found


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


@pytest.fixture
def s3fs_mounts(moto: S3Server, tmp_path: Path) -> Iterator[S3fs]:
    mounts = S3fs(moto, tmp_path)
    yield mounts
    mounts.teardown()


def test_other_tools_directories(mounter: Mounter, s3fs_mounts: S3fs, moto: S3Server, bucket: str,
                                 s3: Any) -> None:
    for key, (body, extra) in PLANTED.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    ours = mounter.mount(moto, bucket).path
    theirs = s3fs_mounts.mount(bucket)

    # Looked up before any listing, then listed: both ways see the same.
    kinds = {name: stat.S_ISDIR(os.lstat(ours / name).st_mode) for name in EXPECTED if "/" not in name}
    assert kinds == {name: EXPECTED[name] is None for name in kinds}
    assert sorted(os.listdir(ours)) == sorted(kinds)
    assert tree(ours) == EXPECTED == tree(theirs)
    assert os.lstat(ours / "folder").st_mode == os.lstat(theirs / "folder").st_mode == FOLDER_MODE
    with pytest.raises(NotADirectoryError):
        (ours / "file" / "hidden").read_bytes()
    assert keys(s3, bucket) == set(PLANTED), "browsing changed no marker"
    s3fs_mounts.unmount(theirs)

    os.rmdir(ours / "folder")  # its only marker goes
    os.rename(ours / "hadoop", ours / "hadoop2")  # moved as s3fs does: to a "dir/" marker
    os.chmod(ours / "zero", 0o700)  # a "zero/" marker holds it; the object "zero" stays
    assert stat.S_IMODE(os.lstat(ours / "zero").st_mode) == 0o700
    os.unlink(ours / "both" / "f")
    os.rmdir(ours / "both")  # both markers go
    fsync_dir(ours)  # removals are queued; this sends them
    assert keys(s3, bucket) == set(PLANTED) - {
        "folder_$folder$", "hadoop_$folder$", "hadoop/part-0", "both/", "both_$folder$", "both/f"} | {
        "hadoop2/", "hadoop2/part-0", "zero/"}
    os.unlink(ours / "zero" / "f")
    os.rmdir(ours / "zero")  # the zero-byte object was its marker: it goes too, not back as a file
    assert "zero" not in os.listdir(ours)
    fsync_dir(ours)
    assert {"zero", "zero/"}.isdisjoint(keys(s3, bucket))
