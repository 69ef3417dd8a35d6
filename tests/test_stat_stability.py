"""A closed file's stat data stays what it was until the file changes: its upload, a listing, the
kernel forgetting the inode, a background HEAD, a rename of its directory and a remount with the
same cache dir show the same st_ino, st_mode, owner, st_size, st_mtime and st_ctime.

git relies on this: its index records those fields from fstat() before close(), and a file whose
fields differ later is dirty without a look at its contents ("Your local changes would be
overwritten" in the middle of a rebase).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.mounting import Mounter
from tests.s3server import S3Server
from tests.test_inode_numbers import forget_all_inodes

Stat = tuple[int, int, int, int, int, int, int]
FILES = [f"f{n}.txt" for n in range(6)]
NAMES = [*FILES, "link", "fifo", "moved.txt"]  # all in one directory


def fields(st: os.stat_result) -> Stat:
    """What git's index compares (st_dev aside: git leaves it out unless built with USE_STDEV)."""
    return st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def write_as_git_does(path: Path, text: str) -> Stat:
    """Create ``path`` as a git checkout does (O_EXCL, write, fstat, close): what the index records."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, text.encode())
        recorded = fields(os.fstat(fd))
    finally:
        os.close(fd)
    assert fields(os.lstat(path)) == recorded, f"{path.name}: close() changed its stat data"
    return recorded


def upload(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # waits for the upload of the file (write-back)
    finally:
        os.close(fd)


def test_stat_data_of_closed_files_stays(mounter: Mounter, moto: S3Server, bucket: str, tmp_path: Path) -> None:
    cache = f"cache_dir={tmp_path / 'cache'}"
    mnt = mounter.mount(moto, bucket, "upload_delay=0.5", cache)
    d = mnt.path / "d"
    d.mkdir()
    recorded = {name: write_as_git_does(d / name, f"{name}\n") for name in FILES}
    os.symlink("f0.txt", d / "link")
    os.mkfifo(d / "fifo")
    write_as_git_does(d / "moving.txt", "renamed after its upload\n")
    upload(d / "moving.txt")
    os.rename(d / "moving.txt", d / "moved.txt")  # a copy in the store
    for name in NAMES[len(FILES):]:
        recorded[name] = fields(os.lstat(d / name))

    def check(after: str, directory: Path) -> None:
        now = {name: fields(os.lstat(directory / name)) for name in NAMES}
        assert now == recorded, f"stat data changed after {after}"

    os.listdir(d)  # a listing while the uploads are pending
    check("a listing before the upload", d)
    for name in FILES:
        upload(d / name)
    check("the upload", d)
    os.listdir(d)
    check("a listing after the upload", d)
    forget_all_inodes()
    check("the kernel forgot the inodes", d)
    os.listdir(d)  # readdirplus hands the kernel new inodes with the listing's attributes
    check("a listing of forgotten inodes", d)

    # Replaced as git replaces a file it checks out: unlink, then a new file at the name.
    (d / FILES[0]).unlink()
    recorded[FILES[0]] = write_as_git_does(d / FILES[0], "another version\n")
    upload(d / FILES[0])
    forget_all_inodes()
    os.listdir(d)
    check("a replacement's upload, a forget and a listing", d)

    # Every key below is copied; the new names are listed with nothing of them in the stat cache.
    os.rename(d, mnt.path / "e")
    os.listdir(mnt.path / "e")
    check("a rename of their directory and a listing", mnt.path / "e")
    assert mnt.umount() == 0

    again = mounter.mount(moto, bucket, cache)  # the same cache dir: the same numbers
    os.listdir(again.path / "e")
    check("a remount and a listing", again.path / "e")
    forget_all_inodes()
    check("a remount and a forget", again.path / "e")
