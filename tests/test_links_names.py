"""Link counts on a real mount: what ``find``, ``ls -l`` and ``fstat`` see."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.mounting import Mount, Mounter
from tests.s3server import S3Server


def nlink(path: Path) -> int:
    return os.lstat(path).st_nlink


def test_directory_link_counts_follow_subdirectories(mnt: Mount) -> None:
    d = mnt.path / "d"
    d.mkdir()
    assert nlink(d) == 2  # made here: known to be empty
    (d / "a").mkdir()
    (d / "b").mkdir()
    (d / "f").write_text("x")
    os.symlink("f", d / "l")
    assert nlink(d) == 4  # files and symlinks are not subdirectories
    assert nlink(d / "f") == 1 and nlink(d / "l") == 1
    (mnt.path / "e").mkdir()
    os.rename(d / "b", mnt.path / "e" / "b")  # out of d, into e
    assert (nlink(d), nlink(mnt.path / "e")) == (3, 3)
    os.rename(mnt.path / "e" / "b", d / "b2")  # and back under another name
    assert (nlink(d), nlink(mnt.path / "e")) == (4, 2)
    os.rename(d / "b2", d / "b3")  # within d: the count stays
    assert nlink(d) == 4
    os.rmdir(d / "a")
    assert nlink(d) == 3
    os.rename(d / "f", d / "g")  # a file moving changes nothing
    assert nlink(d) == 3
    os.listdir(mnt.path)
    assert nlink(mnt.path) == 4  # the root: d and e


def test_link_counts_of_directories_made_by_others(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """Until this mount has listed a directory it does not know how many subdirectories it has:
    1 then, which tells find not to count on it; exact once listed."""
    for key in ("top/", "top/sub1/", "top/sub2/x", "top/file"):  # sub2 exists only as a prefix
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    mnt = mounter.mount(moto, bucket)
    top = mnt.path / "top"
    assert nlink(top) == 1
    assert sorted(os.listdir(top)) == ["file", "sub1", "sub2"]
    assert nlink(top) == 4
    assert nlink(top / "sub2") == 1  # not listed yet
    # find trusts these counts on a FUSE mount (no -noleaf needed): it finds every directory.
    found = subprocess.run(["find", str(mnt.path), "-type", "d"], capture_output=True, text=True, check=True)
    assert sorted(Path(p).relative_to(mnt.path).as_posix() for p in found.stdout.split()) == [
        ".", "top", "top/sub1", "top/sub2"]


def test_unlinked_open_file_has_no_links(mnt: Mount) -> None:
    (mnt.path / "f").write_text("data")
    with open(mnt.path / "f") as f:
        assert os.fstat(f.fileno()).st_nlink == 1
        os.unlink(mnt.path / "f")
        assert os.fstat(f.fileno()).st_nlink == 0
        assert f.read() == "data"
    with open(mnt.path / "new", "w") as f:  # never uploaded
        os.unlink(mnt.path / "new")
        assert os.fstat(f.fileno()).st_nlink == 0


def test_removed_open_directory_has_no_links(mnt: Mount) -> None:
    (mnt.path / "d").mkdir()
    fd = os.open(mnt.path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(mnt.path / "d")
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)

