"""One path keeps one inode number: after the kernel forgets its inodes (drop_caches), after a
rename, and after a remount with the same cache dir; and what tar, rsync and find make of that."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from obsfs.meta import DIR_CONTENT_TYPE, Attrs, to_metadata
from tests.mounting import Mounter, fsync_tree
from tests.s3server import S3Server


def forget_all_inodes() -> None:
    """Make the kernel evict every unused dentry and inode, which sends FORGETs to the daemon."""
    Path("/proc/sys/vm/drop_caches").write_text("3")


def numbers(root: Path) -> dict[str, int]:
    """st_ino of every entry below ``root``, by path relative to it."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            out[os.path.relpath(path, root)] = os.lstat(path).st_ino
    return out


def test_numbers_survive_forget_rename_and_remount(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    mnt = mounter.mount(moto, bucket)
    (mnt.path / "d" / "sub").mkdir(parents=True)
    for name in ("d/f", "d/sub/g", "top"):
        (mnt.path / name).write_text(name)
    fsync_tree(mnt.path)
    before = numbers(mnt.path)
    assert len(set(before.values())) == len(before) == 5

    forget_all_inodes()
    assert numbers(mnt.path) == before

    os.rename(mnt.path / "d" / "f", mnt.path / "d" / "f2")
    forget_all_inodes()  # what is below d is then renamed on disk only, not in memory
    os.rename(mnt.path / "d", mnt.path / "e")
    forget_all_inodes()
    renamed = numbers(mnt.path)
    assert renamed == {"e": before["d"], "e/sub": before["d/sub"], "e/f2": before["d/f"],
                       "e/sub/g": before["d/sub/g"], "top": before["top"]}
    found = subprocess.run(["find", str(mnt.path), "-inum", str(before["d/sub/g"]),
                            "-samefile", str(mnt.path / "e" / "sub" / "g")],
                           check=True, capture_output=True, text=True).stdout.split()
    assert found == [str(mnt.path / "e" / "sub" / "g")]

    (mnt.path / "top").unlink()
    (mnt.path / "top").write_text("another file")
    renamed["top"] = (mnt.path / "top").stat().st_ino
    assert renamed["top"] not in before.values(), "a new file at an old name is a new file"

    assert mnt.umount() == 0
    again = mounter.mount(moto, bucket)  # the same cache dir
    assert numbers(again.path) == renamed


def make_files(root: Path, dirs: int = 20, per_dir: int = 100) -> None:
    """``dirs * per_dir`` files with distinct modes and old mtimes (set last, dirs included). One in
    20 has contents: the rest cost tar no GET, and the numbers are what is tested."""
    for d in range(dirs):
        directory = root / f"dir{d:02}"
        directory.mkdir(parents=True)
        for f in range(per_dir):
            path = directory / f"file{f:03}.txt"
            path.write_text(f"{d}/{f}\n" * (f % 20 == 0))
            path.chmod(0o600 + (f % 3) * 0o040)
    for i, path in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(path, ns=(1_600_000_000_000_000_000 + i * 1_000_000_000,) * 2)


def plant(s3: Any, bucket: str, root: Path) -> None:
    """Store the tree at ``root`` as an obsfs (or s3fs) mount would have: a marker with attributes
    per directory, an object with attributes per file. Much faster than copying it in through a
    mount (2,000 closes, each journaled and then uploaded), and the same objects."""

    def put(path: Path) -> None:
        st = path.lstat()
        attrs = Attrs(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, size=st.st_size, atime_ns=st.st_atime_ns,
                      mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        key = str(path.relative_to(root.parent))
        if path.is_dir():
            s3.put_object(Bucket=bucket, Key=key + "/", Body=b"", Metadata=to_metadata(attrs),
                          ContentType=DIR_CONTENT_TYPE)
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), Metadata=to_metadata(attrs))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, [root, *root.rglob("*")]))


def test_tar_and_rsync_see_an_unchanged_tree_of_2000_files(mounter: Mounter, moto: S3Server, bucket: str,
                                                          s3: Any, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_files(source / "tree")
    started = time.monotonic()
    plant(s3, bucket, source / "tree")
    mnt = mounter.mount(moto, bucket)

    def tar(archive: Path, *extra: str) -> None:
        subprocess.run(["tar", "-cf", str(archive), *extra, "-C", str(mnt.path), "tree"], check=True)

    # A level-0 dump records every directory's inode number (to /dev/null: tar then reads no
    # contents); a level-1 dump finds each directory unchanged, and so holds no file, only if
    # the numbers held.
    snapshot = f"--listed-incremental={tmp_path / 'snapshot'}"
    tar(Path("/dev/null"), snapshot)
    before = numbers(mnt.path / "tree")
    assert len(before) == 2020
    tar(tmp_path / "before.tar")
    forget_all_inodes()
    tar(tmp_path / "after.tar")
    assert (tmp_path / "after.tar").read_bytes() == (tmp_path / "before.tar").read_bytes()
    tar(tmp_path / "level1.tar", snapshot)
    level1 = subprocess.run(["tar", "-tf", str(tmp_path / "level1.tar")], check=True, capture_output=True,
                            text=True).stdout.split()
    assert [name for name in level1 if not name.endswith("/")] == [], "files dumped again"
    assert numbers(mnt.path / "tree") == before

    assert mnt.umount() == 0
    again = mounter.mount(moto, bucket)
    changes = subprocess.run(["rsync", "-aHi", "--dry-run", f"{source / 'tree'}/", f"{again.path / 'tree'}/"],
                             check=True, capture_output=True, text=True).stdout
    assert changes == ""
    assert numbers(again.path / "tree") == before
    print(f"2,000 files: {time.monotonic() - started:.1f} s")
