"""A test tree with every kind of entry, and a description of it that says what rsync -a keeps;
and the special files (FIFO, devices, socket) as mkfifo, mknod and bind make them."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
from pathlib import Path

# name -> (mode given to the call that makes it, device number)
SPECIAL = {
    "fifo": (stat.S_IFIFO | 0o640, 0),
    "null": (stat.S_IFCHR | 0o666, os.makedev(1, 3)),
    "disk": (stat.S_IFBLK | 0o660, os.makedev(259, 70000)),  # a minor above 255: its bits are split
    "sock": (stat.S_IFSOCK | 0o777, 0),  # bind() asks for 0777 less the umask
}


def make_tree(root: Path) -> None:
    """Files of several sizes and modes, nested and empty dirs, symlinks and old mtimes."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    shutil.copytree(Path(__file__).resolve().parents[1] / "obsfs", root / "code")
    (root / "a" / "b" / "secret").write_text("only me\n")
    (root / "a" / "b" / "secret").chmod(0o600)
    (root / "a" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "a" / "tool.sh").chmod(0o755)
    (root / "zero").write_bytes(b"")
    (root / "binary").write_bytes(os.urandom(3 << 20))
    os.symlink("b/secret", root / "a" / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "empty").chmod(0o700)
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(1_500_000_000_000_000_000 + i * 1_000_000_123,) * 2, follow_symlinks=False)


def describe(root: Path) -> list[str]:
    """Everything rsync -a promises to keep: type, mode, mtime, size, link target, contents."""
    out = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        size = "-" if path.is_dir() and not path.is_symlink() else st.st_size  # dir sizes are not data
        line = f"{path.relative_to(root)} {st.st_mode:o} {st.st_mtime_ns // 1000} {size}"
        if path.is_symlink():
            line += f" -> {os.readlink(path)}"
        elif path.is_file():
            line += f" {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
        out.append(line)
    return out


def make_special(root: Path) -> None:
    """Each of SPECIAL in ``root``, made by the syscall programs use: mkfifo, mknod, bind."""
    for name, (mode, rdev) in SPECIAL.items():
        if stat.S_ISSOCK(mode):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(root / name))
        elif stat.S_ISFIFO(mode):
            os.mkfifo(root / name, stat.S_IMODE(mode))
        else:
            os.mknod(root / name, mode, rdev)


def special_view(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Name -> (octal st_mode, major, minor, size) of each entry in ``root``, by lstat."""
    out = {}
    for path in root.iterdir():
        st = path.lstat()
        out[path.name] = (f"{st.st_mode:o}", os.major(st.st_rdev), os.minor(st.st_rdev), st.st_size)
    return out


def expected_special(*, renamed: str = "", device_numbers: bool = True) -> dict[str, tuple[str, int, int, int]]:
    """``special_view`` of what ``make_special`` made under this process's umask; without the
    device numbers for s3fs, which keeps none."""
    umask = os.umask(0)
    os.umask(umask)
    return {name + renamed: (f"{mode & ~umask:o}", os.major(rdev) if device_numbers else 0,
                             os.minor(rdev) if device_numbers else 0, 0)
            for name, (mode, rdev) in SPECIAL.items()}
