"""FIFOs, device nodes and unix sockets on a real mount: stored as s3fs stores them (an empty
object, the type in ``mode``), shown with their type and device number by a fresh daemon too,
and left to the kernel when opened."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.mounting import Mounter, fsync_dir
from tests.s3server import S3Server
from tests.test_mount_posix import keys
from tests.trees import SPECIAL, expected_special, make_special, special_view

MTIME_NS = 1_600_000_000_123_456_789


def stored(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return s3.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]


def exchange_through_fifo(fifo: Path) -> bytes:
    """What a reader process gets from a writer process through ``fifo``. Opening either end
    waits for the other, as only a pipe does: a FUSE open of a file would not wait."""
    writer = subprocess.Popen([sys.executable, "-c", f"open({str(fifo)!r}, 'wb').write(b'through the pipe')"])
    try:
        reader = subprocess.run([sys.executable, "-c", f"import sys; sys.stdout.buffer.write(open({str(fifo)!r}, "
                                 "'rb').read())"], capture_output=True, timeout=60, check=True)
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    return reader.stdout


def test_special_files(mounter: Mounter, moto: S3Server, bucket: str, s3: Any, tmp_path: Path) -> None:
    mnt = mounter.mount(moto, bucket)
    made = mnt.path / "made"
    made.mkdir()
    make_special(made)
    assert special_view(made) == expected_special()
    for name, (_, rdev) in SPECIAL.items():
        obj = stored(s3, bucket, f"made/{name}")
        assert obj["ContentLength"] == 0
        assert obj["Metadata"]["mode"] == str(os.lstat(made / name).st_mode)
        assert obj["Metadata"].get("rdev") == (str(rdev) if rdev else None), "only devices have a number"

    # The data goes through the kernel's pipe on this host; the object stays as it was.
    before = stored(s3, bucket, "made/fifo")
    assert exchange_through_fifo(made / "fifo") == b"through the pipe"
    after = stored(s3, bucket, "made/fifo")
    assert (after["ETag"], after["LastModified"], after["ContentLength"]) == (
        before["ETag"], before["LastModified"], 0)
    # A socket bound on the mount is reachable by its path while its inode lives.
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(str(mnt.path / "live.sock"))
        server.listen()
        client.connect(str(mnt.path / "live.sock"))
        client.sendall(b"hi")
        assert server.accept()[0].recv(2) == b"hi"
    os.unlink(mnt.path / "live.sock")

    for name in SPECIAL:
        os.chmod(made / name, 0o604)
        os.chown(made / name, 1234, 5678)
        os.utime(made / name, ns=(MTIME_NS, MTIME_NS))
        os.rename(made / name, made / f"{name}-moved")
    os.rename(made, mnt.path / "moved")  # a directory's objects are copied one by one
    changed = {name: (f"{int(mode, 8) & ~0o7777 | 0o604:o}", major, minor, size)
               for name, (mode, major, minor, size) in expected_special(renamed="-moved").items()}

    def check(root: Path) -> None:
        assert special_view(root / "moved") == changed
        for name in changed:
            st = os.lstat(root / "moved" / name)
            assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1234, 5678, MTIME_NS), name

    check(mnt.path)
    assert keys(s3, bucket, "moved/") == sorted(["moved/", *(f"moved/{name}" for name in changed)])
    assert stored(s3, bucket, "moved/disk-moved")["Metadata"]["rdev"] == str(SPECIAL["disk"][1])
    assert mnt.umount() == 0

    # A fresh daemon: with this mount's cache of HEAD answers, then with none (a listing shows
    # each as a regular file until its HEAD answers; what the kernel is shown next is the truth).
    again = mounter.mount(moto, bucket)
    check(again.path)
    assert again.umount() == 0
    cold = mounter.mount(moto, bucket, f"cache_dir={tmp_path / 'cold-cache'}")
    assert sorted(os.listdir(cold.path / "moved")) == sorted(changed)
    check(cold.path)
    assert stat.S_ISFIFO(os.stat(cold.path / "moved" / "fifo-moved").st_mode)  # and it stays one

    for name in changed:
        os.unlink(cold.path / "moved" / name)
    fsync_dir(cold.path / "moved")  # removals are queued; this sends them
    assert keys(s3, bucket, "moved/") == ["moved/"]


def test_a_file_replaced_by_a_fifo_elsewhere(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """Another client turns a file this mount has open into a FIFO. The name gets a new inode;
    the open one stays the regular file it was, and fstat on it keeps working."""
    s3.put_object(Bucket=bucket, Key="x", Body=b"data")
    mnt = mounter.mount(moto, bucket, "stat_cache_expire=0", "entry_timeout=0")
    with open(mnt.path / "x", "rb") as opened:
        s3.put_object(Bucket=bucket, Key="x", Body=b"", Metadata={"mode": str(stat.S_IFIFO | 0o640)})
        now = os.lstat(mnt.path / "x")
        assert stat.S_ISFIFO(now.st_mode)
        was = os.fstat(opened.fileno())
        assert (stat.S_ISREG(was.st_mode), was.st_size) == (True, 4)
        assert was.st_ino != now.st_ino
