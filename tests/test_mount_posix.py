"""POSIX behaviour of a real mount, through ordinary syscalls, checked against the store with boto3."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.mounting import Mount, Mounter, fsync_dir, fsync_tree, wait_for
from tests.s3server import S3Server


def bucket_of(mnt: Mount) -> str:
    return mnt.source.split(":")[0]


def head(s3: Any, mnt: Mount, key: str) -> dict[str, Any]:
    return s3.head_object(Bucket=bucket_of(mnt), Key=key)  # type: ignore[no-any-return]


def stored_keys(s3: Any, mnt: Mount) -> list[str]:
    """The keys in the store once every pending upload of the mount is done."""
    fsync_tree(mnt.path)
    return keys(s3, bucket_of(mnt))


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def test_write_read_and_store_format(mnt: Mount, s3: Any) -> None:
    path = mnt.path / "hello.txt"
    path.write_bytes(b"hello world\n")
    assert path.read_bytes() == b"hello world\n"
    st = path.stat()
    assert st.st_size == 12 and stat.S_ISREG(st.st_mode)
    fsync_tree(mnt.path)
    obj = head(s3, mnt, "hello.txt")
    assert obj["ContentLength"] == 12
    assert int(obj["Metadata"]["mode"]) == st.st_mode
    assert int(obj["Metadata"]["uid"]) == os.getuid()
    assert obj["ContentType"] == "text/plain"
    body = s3.get_object(Bucket=bucket_of(mnt), Key="hello.txt")["Body"].read()
    assert body == b"hello world\n"


def test_random_writes_append_and_truncate(mnt: Mount, s3: Any) -> None:
    path = mnt.path / "data.bin"
    payload = bytearray(os.urandom(3 << 20))
    path.write_bytes(payload)
    with open(path, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"X" * 100)
        payload[1 << 20:(1 << 20) + 100] = b"X" * 100
    with open(path, "ab") as f:
        f.write(b"tail")
        payload += b"tail"
    assert path.read_bytes() == payload
    os.truncate(path, 10)
    assert path.read_bytes() == payload[:10]
    with open(path, "r+b") as f:
        f.truncate(20)
    assert path.read_bytes() == payload[:10] + b"\0" * 10
    fsync_tree(mnt.path)
    assert s3.get_object(Bucket=bucket_of(mnt), Key="data.bin")["Body"].read() == payload[:10] + b"\0" * 10


def test_large_file_multipart(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    mnt = mounter.mount(moto, bucket, "multipart_size=5")
    payload = os.urandom(12 << 20)
    (mnt.path / "big").write_bytes(payload)
    assert (mnt.path / "big").read_bytes() == payload
    fsync_tree(mnt.path)
    obj = head(s3, mnt, "big")
    # Sent in 5 MiB parts while written (tests/test_partstream.py watches that); the final copy
    # onto itself, for the attributes, gives moto's object a plain MD5 ETag.
    assert obj["ContentLength"] == len(payload)
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == payload


def test_directories(mnt: Mount, s3: Any) -> None:
    (mnt.path / "a" / "b").mkdir(parents=True)
    (mnt.path / "empty").mkdir(mode=0o750)
    (mnt.path / "a" / "b" / "f").write_text("x")
    assert sorted(os.listdir(mnt.path)) == ["a", "empty"]
    fsync_dir(mnt.path)  # new directories' markers are owed (obsfs/dirtimes.py); fsync sends them
    marker = head(s3, mnt, "empty/")
    assert marker["ContentType"] == "application/x-directory"
    assert stat.S_ISDIR(int(marker["Metadata"]["mode"]))
    assert stat.S_IMODE((mnt.path / "empty").stat().st_mode) == 0o750
    with pytest.raises(OSError) as err:
        os.rmdir(mnt.path / "a")
    assert err.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        os.mkdir(mnt.path / "a")
    os.unlink(mnt.path / "a" / "b" / "f")
    os.rmdir(mnt.path / "a" / "b")
    os.rmdir(mnt.path / "a")
    assert os.listdir(mnt.path) == ["empty"]
    fsync_dir(mnt.path)  # removals are queued (obsfs/deletes.py); fsync of the directory sends them
    assert stored_keys(s3, mnt) == ["empty/"]


def open_for_write(path: Path, mode: str = "w") -> None:
    with open(path, mode):
        pass


def test_errno_values(mnt: Mount) -> None:
    (mnt.path / "file").write_text("x")
    (mnt.path / "dir").mkdir()
    cases = [
        (lambda: os.stat(mnt.path / "missing"), errno.ENOENT),
        (lambda: os.listdir(mnt.path / "file"), errno.ENOTDIR),
        (lambda: os.unlink(mnt.path / "dir"), errno.EISDIR),
        (lambda: os.rmdir(mnt.path / "file"), errno.ENOTDIR),
        (lambda: open_for_write(mnt.path / "dir"), errno.EISDIR),
        (lambda: os.mkdir(mnt.path / "file" / "sub"), errno.ENOTDIR),
        (lambda: os.link(mnt.path / "file", mnt.path / "hard"), errno.EPERM),
        (lambda: os.rename(mnt.path / "dir", mnt.path / "file"), errno.ENOTDIR),
        (lambda: open_for_write(mnt.path / ("x" * 300)), errno.ENAMETOOLONG),
    ]
    for action, expected in cases:
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == expected, action


def test_rename_file_and_tree(mnt: Mount, s3: Any) -> None:
    (mnt.path / "src").mkdir()
    (mnt.path / "src" / "sub").mkdir()
    (mnt.path / "src" / "sub" / "f1").write_text("one")
    (mnt.path / "src" / "f2").write_text("two")
    os.chmod(mnt.path / "src" / "f2", 0o600)
    os.rename(mnt.path / "src" / "f2", mnt.path / "src" / "f3")
    assert stat.S_IMODE((mnt.path / "src" / "f3").stat().st_mode) == 0o600
    fsync_tree(mnt.path / "src" / "sub")  # one file stored, one still pending, when the tree moves
    os.rename(mnt.path / "src", mnt.path / "dst")
    assert not (mnt.path / "src").exists()
    assert (mnt.path / "dst" / "sub" / "f1").read_text() == "one"
    assert (mnt.path / "dst" / "f3").read_text() == "two"
    assert stored_keys(s3, mnt) == ["dst/", "dst/f3", "dst/sub/", "dst/sub/f1"]
    assert int(head(s3, mnt, "dst/f3")["Metadata"]["mode"]) & 0o777 == 0o600
    # rename over an existing file replaces it
    (mnt.path / "other").write_text("old")
    os.rename(mnt.path / "dst" / "f3", mnt.path / "other")
    assert (mnt.path / "other").read_text() == "two"


def test_rename_while_open_for_writing(mnt: Mount, s3: Any) -> None:
    with open(mnt.path / "tmpfile", "w") as f:
        f.write("content")
        f.flush()
        os.rename(mnt.path / "tmpfile", mnt.path / "final")
        f.write(" more")
    assert (mnt.path / "final").read_text() == "content more"
    assert stored_keys(s3, mnt) == ["final"]


def test_symlink(mnt: Mount, s3: Any) -> None:
    (mnt.path / "target").write_text("data")
    os.symlink("target", mnt.path / "link")
    assert os.readlink(mnt.path / "link") == "target"
    assert (mnt.path / "link").read_text() == "data"
    assert stat.S_ISLNK(os.lstat(mnt.path / "link").st_mode)
    obj = s3.get_object(Bucket=bucket_of(mnt), Key="link")
    assert obj["Body"].read() == b"target"
    assert stat.S_ISLNK(int(obj["Metadata"]["mode"]))


def test_chmod_chown_utimens_persist(mnt: Mount, s3: Any) -> None:
    path = mnt.path / "f"
    path.write_text("x")
    os.chmod(path, 0o640)
    os.chown(path, 1234, 5678)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    st = path.stat()
    fsync_tree(mnt.path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    meta = head(s3, mnt, "f")["Metadata"]
    assert int(meta["mode"]) == stat.S_IFREG | 0o640
    assert (meta["uid"], meta["gid"]) == ("1234", "5678")
    assert meta["mtime"] == "1600000000.123456789"
    assert path.read_text() == "x"


def test_metadata_survives_remount(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    first = mounter.mount(moto, bucket)
    (first.path / "d").mkdir(mode=0o700)
    (first.path / "d" / "f").write_text("x")
    os.chmod(first.path / "d" / "f", 0o604)
    os.utime(first.path / "d" / "f", (1_500_000_000, 1_500_000_000))
    assert first.umount() == 0
    second = mounter.mount(moto, bucket)
    st = (second.path / "d" / "f").stat()
    assert stat.S_IMODE(st.st_mode) == 0o604 and st.st_mtime == 1_500_000_000
    assert stat.S_IMODE((second.path / "d").stat().st_mode) == 0o700


def test_foreign_objects_get_defaults_and_implicit_dirs(mounter: Mounter, moto: S3Server, bucket: str,
                                                        s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=b"abc")
    s3.put_object(Bucket=bucket, Key="imp/deep/file", Body=b"z")
    mnt = mounter.mount(moto, bucket)
    assert sorted(os.listdir(mnt.path)) == ["imp", "plain.txt"]
    st = (mnt.path / "plain.txt").stat()
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == os.getuid() and st.st_size == 3
    assert stat.S_IMODE((mnt.path / "imp").stat().st_mode) == 0o755
    assert os.listdir(mnt.path / "imp") == ["deep"]
    assert (mnt.path / "imp" / "deep" / "file").read_bytes() == b"z"


def test_listing_across_pages(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    names = [f"f{i:05d}" for i in range(1150)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: s3.put_object(Bucket=bucket, Key=f"many/{n}", Body=b""), names))
    mnt = mounter.mount(moto, bucket)
    assert sorted(os.listdir(mnt.path / "many")) == names
    assert all(e.stat().st_size == 0 for e in os.scandir(mnt.path / "many"))


def test_mount_uid_gid_umask_options(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    mnt = mounter.mount(moto, bucket, "uid=1000,gid=1001,umask=027,mp_umask=022")
    (mnt.path / "f").write_text("x")
    st = (mnt.path / "f").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_IMODE(mnt.path.stat().st_mode) == 0o755


def test_read_only_mount(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"data")
    mnt = mounter.mount(moto, bucket, "ro")
    assert (mnt.path / "f").read_bytes() == b"data"
    for action in (lambda: (mnt.path / "g").write_text("x"), lambda: os.mkdir(mnt.path / "d"),
                   lambda: os.unlink(mnt.path / "f"), lambda: open_for_write(mnt.path / "f", "r+b")):
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == errno.EROFS
    assert keys(s3, bucket) == ["f"]


def test_prefix_mount(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key="outside", Body=b"o")
    s3.put_object(Bucket=bucket, Key="team/a/inside", Body=b"i")
    mnt = mounter.mount(moto, f"{bucket}:/team/a")
    assert os.listdir(mnt.path) == ["inside"]
    (mnt.path / "new").write_text("n")
    (mnt.path / "sub").mkdir()
    fsync_tree(mnt.path)
    fsync_dir(mnt.path)
    assert keys(s3, bucket) == ["outside", "team/a/inside", "team/a/new", "team/a/sub/"]


def test_statfs_and_dots(mnt: Mount) -> None:
    st = os.statvfs(mnt.path)
    assert st.f_bavail > 0 and st.f_namemax == 255
    (mnt.path / "d").mkdir()
    entries = {e.name for e in os.scandir(mnt.path)}
    assert entries == {"d"}
    assert Path(mnt.path / "d" / "..").resolve() == mnt.path.resolve()


def test_unlink_open_file_keeps_handle(mnt: Mount, s3: Any) -> None:
    (mnt.path / "f").write_text("before")
    with open(mnt.path / "f", "r+") as f:
        os.unlink(mnt.path / "f")
        assert not (mnt.path / "f").exists()
        assert f.read() == "before"
    assert stored_keys(s3, mnt) == []


def test_zero_cache_timeouts(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    """With nothing cached in the kernel, every stat of the mount point reaches the daemon, even
    the ones it makes itself while it starts (it used to wait for itself there, for ever)."""
    mnt = mounter.mount(moto, bucket, "attr_timeout=0,entry_timeout=0")
    (mnt.path / "f").write_text("x")
    assert os.stat(mnt.path / "f").st_size == 1


def test_writing_an_unlinked_open_file_leaves_no_staged_copy(mounter: Mounter, moto: S3Server, bucket: str,
                                                              s3: Any, tmp_path: Path) -> None:
    """Data written after the name is gone can never be uploaded: its local copy goes at the last close."""
    mnt = mounter.mount(moto, bucket, f"cache_dir={tmp_path / 'cache'}")
    (mnt.path / "f").write_text("before")
    with open(mnt.path / "f", "r+") as f:
        os.unlink(mnt.path / "f")
        f.write("written after the unlink")
        f.flush()
        f.seek(0)
        assert f.read() == "written after the unlink"
    staging = tmp_path / "cache" / "staging"
    wait_for(lambda: not os.listdir(staging), "the staged copy is removed after the last close")
    assert stored_keys(s3, mnt) == []


def test_fsgroup_lets_a_group_member_write(public_dir: Path, mounter: Mounter, moto: S3Server, bucket: str,
                                          s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key="existing", Body=b"x")
    (public_dir / "mnt").mkdir()
    result, mnt = mounter.run(moto, bucket, public_dir / "mnt", "fsgroup=4321,allow_other")
    assert result.returncode == 0, result.stderr
    st = (mnt.path / "existing").stat()
    assert st.st_gid == 4321 and st.st_mode & 0o060 == 0o060
    # a non-root process in that group (as a pod with fsGroup runs) can write and create
    script = (f"open('{mnt.path}/existing', 'a').write('y'); open('{mnt.path}/new', 'w').write('z')")
    result = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--groups=4321", sys.executable, "-c",
                             script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (mnt.path / "existing").read_text() == "xy"
    assert (mnt.path / "new").stat().st_uid == 1000


def test_hidden_root_names(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key=".obsfs-volume.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="sub/.obsfs-volume.json", Body=b"{}")
    mnt = mounter.mount(moto, bucket, "hide=.obsfs-volume.json")
    assert os.listdir(mnt.path) == ["sub"]
    assert not (mnt.path / ".obsfs-volume.json").exists()
    assert os.listdir(mnt.path / "sub") == [".obsfs-volume.json"]  # only the root is reserved
    for action in (lambda: (mnt.path / ".obsfs-volume.json").write_text("x"),
                   lambda: os.mkdir(mnt.path / ".obsfs-volume.json"),
                   lambda: os.rename(mnt.path / "sub" / ".obsfs-volume.json", mnt.path / ".obsfs-volume.json")):
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == errno.EPERM
    assert stored_keys(s3, mnt) == [".obsfs-volume.json", "sub/.obsfs-volume.json"]
