"""Objects other tools wrote that obsfs cannot show as they are: odd user metadata, long names.

The daemon must neither die nor answer EIO: an unrepresentable field shows its default (as for an
object without metadata), an unreachable name is left out of the listing, and each such object
is logged once per mount, however often it is listed or looked up.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from tests.mounting import Mounter
from tests.s3server import S3Server

# Every path lookup reaches the daemon and HEADs the object again, so a warning printed per
# lookup instead of per object would show up several times. (attr_timeout=0 is left out: with it
# the daemon's own realpath of the mount point at startup waits on itself.)
NO_CACHES = ("stat_cache_expire=0", "entry_timeout=0")

UNREPRESENTABLE = {
    "mode-negative": {"mode": "-1"},
    "mode-2-32": {"mode": str(2**32 + (stat.S_IFREG | 0o600))},
    "mode-above-16-bits": {"mode": str(0o1000000 | stat.S_IFREG | 0o600)},
    "mode-text": {"mode": "abc"},
    "mode-empty": {"mode": ""},
    "mode-nan": {"mode": "NaN"},
    "mode-inf": {"mode": "inf"},
    "mode-underscored": {"mode": "33_188"},
    "mtime-milliseconds": {"mtime": "1700000000000"},
    "mtime-negative-milliseconds": {"mtime": "-1700000000000"},
    "mtime-nan": {"mtime": "NaN"},
    "mtime-inf": {"mtime": "inf"},
    "ctime-milliseconds": {"ctime": "1700000000000"},
    "uid-negative": {"uid": "-5"},
    "uid-2-32": {"uid": str(2**32)},
    "uid-minus-one": {"uid": str(2**32 - 1)},
    "gid-negative": {"gid": "-5"},
    "gid-2-32": {"gid": str(2**32)},
    "all-at-once": {"mode": "-1", "uid": "-5", "gid": str(2**32), "mtime": "1700000000000",
                    "ctime": "inf"},
}
# Stored modes obsfs corrects without losing anything it can show: the kind comes from the key.
CORRECTED = {
    "mode-without-type": ({"mode": "384"}, stat.S_IFREG | 0o600),
    "mode-of-a-dir-on-a-file": ({"mode": str(stat.S_IFDIR | 0o600)}, stat.S_IFREG | 0o600),
    "mode-of-no-kind": ({"mode": str(0o030000 | 0o640)}, stat.S_IFREG | 0o640),  # no S_IFMT has these bits
}


def warnings_about(log: str, name: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line and f"{name!r}" in line]


def ls_l(path: Path) -> str:
    result = subprocess.run(["ls", "-l", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_unrepresentable_metadata_shows_the_defaults(mounter: Mounter, moto: S3Server, bucket: str,
                                                     s3: Any) -> None:
    for name, meta in UNREPRESENTABLE.items():
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode(), Metadata=meta)
    for name, (meta, _) in CORRECTED.items():
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode(), Metadata=meta)
    s3.put_object(Bucket=bucket, Key="dir/", Body=b"", ContentType="application/x-directory",
                  Metadata={"mode": "-1", "uid": "-5", "mtime": "1700000000000"})
    s3.put_object(Bucket=bucket, Key="dir/inside", Body=b"inside")
    mnt = mounter.mount(moto, bucket, *NO_CACHES)

    expected = {*UNREPRESENTABLE, *CORRECTED, "dir"}
    for _ in range(2):
        assert set(os.listdir(mnt.path)) == expected
        listing = ls_l(mnt.path)
        assert all(name in listing for name in expected)
        for name in UNREPRESENTABLE:
            st = os.stat(mnt.path / name)
            stored = s3.head_object(Bucket=bucket, Key=name)["LastModified"].timestamp()
            assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFREG | 0o644, os.getuid(), os.getgid()), name
            assert st.st_mtime == st.st_ctime == stored, name
            assert (mnt.path / name).read_bytes() == name.encode()
        for name, (_, mode) in CORRECTED.items():
            assert os.stat(mnt.path / name).st_mode == mode, name
            assert (mnt.path / name).read_bytes() == name.encode()
        st = os.stat(mnt.path / "dir")
        assert (st.st_mode, st.st_uid) == (stat.S_IFDIR | 0o755, os.getuid())
        assert os.listdir(mnt.path / "dir") == ["inside"]
        assert (mnt.path / "dir" / "inside").read_bytes() == b"inside"

    assert mnt.umount() == 0  # the daemon is still there to be asked, and exits cleanly
    log = mounter.log_text()
    for name in [*UNREPRESENTABLE, "dir/"]:
        assert len(warnings_about(log, name)) == 1, (name, warnings_about(log, name))
    for name in CORRECTED:
        assert warnings_about(log, name) == []


def test_names_longer_than_255_bytes_are_left_out(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    """S3 keys may have 1,024 bytes in one component; a FUSE name has at most 255 (NAME_MAX), so
    such a file or directory cannot be reached, and a listing that showed it would only lie."""
    reachable = {"ok": "long/ok", "n" * 255: f"long/{'n' * 255}", "é" * 127: f"long/{'é' * 127}",
                 "p" * 255: f"long/{'p' * 255}/inside"}
    unreachable = {"long/" + "f" * 256: "long/" + "f" * 256,
                   "long/" + "é" * 128: "long/" + "é" * 128,  # 128 characters, 256 bytes
                   "long/" + "d" * 300 + "/": "long/" + "d" * 300 + "/inside",  # an implicit directory
                   "long/" + "m" * 256 + "/": "long/" + "m" * 256 + "/",  # a directory marker
                   "r" * 1000: "r" * 1000}
    for key in [*reachable.values(), *unreachable.values()]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    mnt = mounter.mount(moto, bucket, *NO_CACHES)

    for _ in range(2):
        assert os.listdir(mnt.path) == ["long"]
        assert sorted(os.listdir(mnt.path / "long")) == sorted(reachable)
        assert all(name in ls_l(mnt.path / "long") for name in reachable)
        for name, key in reachable.items():
            if key.endswith("/inside"):
                assert (mnt.path / "long" / name / "inside").read_bytes() == key.encode()
            else:
                assert (mnt.path / "long" / name).read_bytes() == key.encode()

    assert mnt.umount() == 0
    log = mounter.log_text()
    for shown_as in unreachable:
        assert len(warnings_about(log, shown_as)) == 1, (shown_as, warnings_about(log, shown_as))
