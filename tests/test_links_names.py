"""Link counts and name limits on a real mount: what ``find``, ``ls -l`` and ``rm`` see, and the
errno of a name or key the store cannot hold."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.mounting import Mount, Mounter, fsync_dir, fsync_tree
from tests.s3server import S3Server
from tests.test_mount_posix import bucket_of, keys, open_for_write, stored_keys


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


LONG = "n" * 256
LONG_UTF8 = "é" * 128  # 128 characters, 256 bytes


@pytest.mark.parametrize("name", [LONG, LONG_UTF8])
def test_names_over_255_bytes(mnt: Mount, name: str) -> None:
    (mnt.path / "f").write_text("x")
    (mnt.path / "d").mkdir()
    actions: list[Callable[[], object]] = [
        lambda: open_for_write(mnt.path / name),
        lambda: os.mkdir(mnt.path / name),
        lambda: os.symlink("f", mnt.path / name),
        lambda: os.rename(mnt.path / "f", mnt.path / name),
        lambda: os.rename(mnt.path / "d", mnt.path / "d" / name),
        lambda: os.stat(mnt.path / name),
        lambda: os.stat(mnt.path / "d" / name),
    ]
    for action in actions:
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == errno.ENAMETOOLONG, action
    assert sorted(os.listdir(mnt.path)) == ["d", "f"]


def test_names_of_255_bytes(mnt: Mount, s3: Any) -> None:
    longest = "m" * 255
    utf8 = "é" * 127 + "x"
    (mnt.path / longest).write_text("x")
    (mnt.path / utf8).mkdir()
    os.symlink(longest, mnt.path / utf8 / longest)
    os.rename(mnt.path / longest, mnt.path / utf8 / ("r" * 255))
    assert sorted(os.listdir(mnt.path / utf8)) == [longest, "r" * 255]
    fsync_dir(mnt.path)  # the new directory's marker is owed (obsfs/dirtimes.py)
    assert stored_keys(s3, mnt) == sorted([f"{utf8}/", f"{utf8}/{longest}", f"{utf8}/{'r' * 255}"])


def deep_dirs(root: Path, used: int) -> tuple[Path, int]:
    """Directories of 250-byte names below ``root`` until their marker keys take up
    ``used`` + about 1,000 bytes; returns the deepest and its marker key's length."""
    path = root
    while used + 251 <= 1010:
        path = path / (chr(ord("a") + len(path.relative_to(root).parts)) * 250)
        path.mkdir()
        used += 251
    return path, used


def assert_key_limit(mnt: Mount, s3: Any, deep: Path, used: int) -> None:
    """At ``deep`` (whose marker key is ``used`` bytes long) a key of 1,024 bytes can be made and
    one of 1,025 cannot, whichever call would make it; nothing of the refused ones reaches the store."""
    fits, over = "f" * (1024 - used), "f" * (1025 - used)
    fits_dir, over_dir = "g" * (1023 - used), "g" * (1024 - used)  # the marker has a "/" more
    (mnt.path / "src").write_text("x")
    (mnt.path / "srcdir").mkdir()
    refused: list[Callable[[], object]] = [
        lambda: open_for_write(deep / over),
        lambda: os.mkdir(deep / over_dir),
        lambda: os.symlink("src", deep / over),
        lambda: os.rename(mnt.path / "src", deep / over),
        lambda: os.rename(mnt.path / "srcdir", deep / over_dir),
    ]
    for action in refused:
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == errno.ENAMETOOLONG, action
    assert os.listdir(deep) == []
    assert (mnt.path / "src").read_text() == "x" and (mnt.path / "srcdir").is_dir()
    (deep / fits).write_text("fits")
    (deep / fits_dir).mkdir()
    os.symlink("src", deep / ("s" * len(fits)))
    os.rename(mnt.path / "srcdir", deep / ("h" * len(fits_dir)))
    fsync_tree(mnt.path)
    fsync_dir(mnt.path)  # and the new directories' markers
    stored = keys(s3, bucket_of(mnt))
    longest = [k for k in stored if len(k.encode()) == 1024]
    assert len(longest) == 4, stored
    assert max(len(k.encode()) for k in stored) == 1024
    assert (deep / fits).read_text() == "fits"


def test_key_limit_with_nested_directories(mnt: Mount, s3: Any) -> None:
    deep, used = deep_dirs(mnt.path, 0)
    assert_key_limit(mnt, s3, deep, used)


def test_key_limit_counts_the_mount_prefix(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    prefix = "vol/" + "p" * 100  # keys start with "vol/ppp.../": 105 bytes
    mnt = mounter.mount(moto, f"{bucket}:/{prefix}")
    deep, used = deep_dirs(mnt.path, len(prefix) + 1)
    assert_key_limit(mnt, s3, deep, used)
    assert all(k.startswith(prefix + "/") for k in keys(s3, bucket))


def test_directory_rename_that_would_make_a_key_too_long(mnt: Mount, s3: Any) -> None:
    """The new name fits, but a key below it would not: refused before anything is copied."""
    deep, used = deep_dirs(mnt.path, 0)
    short = deep.parent / "x"  # a sibling of deep, with a 1-byte name
    (short / ("k" * 250)).mkdir(parents=True)  # its marker key: used + 2 bytes
    inside = Path("k" * 250) / ("i" * (1021 - used))  # a key of 1,023 bytes
    (short / inside).write_text("x")
    fsync_tree(mnt.path)
    fsync_dir(mnt.path)
    before = keys(s3, bucket_of(mnt))
    with pytest.raises(OSError) as err:
        os.rename(short, deep.parent / "xyz")  # its file would need 1,025 bytes
    assert err.value.errno == errno.ENAMETOOLONG
    assert keys(s3, bucket_of(mnt)) == before
    assert (short / inside).read_text() == "x"
    os.rename(short, deep.parent / "y")  # the same length: fine
    assert (deep.parent / "y" / inside).read_text() == "x"

