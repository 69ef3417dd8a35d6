"""A test tree with every kind of entry, and a description of it that says what rsync -a keeps."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


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
