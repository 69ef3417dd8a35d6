"""Real tools on a real mount: cp -a / rsync -a round trips and git, as users run them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.mounting import Mounter
from tests.s3server import S3Server
from tests.trees import describe, make_tree

GIT = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test", "-c", "init.defaultBranch=main"]


def test_cp_a_in_rsync_a_out(mounter: Mounter, moto: S3Server, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    make_tree(source)
    mnt = mounter.mount(moto, bucket)
    subprocess.run(["cp", "-a", str(source), str(mnt.path / "tree")], check=True)
    assert describe(mnt.path / "tree") == describe(source)
    assert mnt.umount() == 0
    again = mounter.mount(moto, bucket)  # a fresh daemon: everything comes from the store
    back = tmp_path / "back"
    subprocess.run(["rsync", "-a", f"{again.path / 'tree'}/", f"{back}/"], check=True)
    assert describe(back) == describe(source)
    # rsync into the mount as well: temp file, attributes, rename
    subprocess.run(["rsync", "-a", f"{source}/", f"{again.path / 'synced'}/"], check=True)
    assert describe(again.path / "synced") == describe(source)


def test_git_clone_status_log(mounter: Mounter, moto: S3Server, bucket: str, tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    subprocess.run([*GIT, "init", "-q", str(origin)], check=True)
    shutil.copytree(Path(__file__).resolve().parents[1] / "obsfs", origin / "obsfs")
    subprocess.run([*GIT, "-C", str(origin), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(origin), "commit", "-qm", "first"], check=True)
    (origin / "obsfs" / "__init__.py").write_text("# changed\n")
    subprocess.run([*GIT, "-C", str(origin), "commit", "-qam", "second"], check=True)
    mnt = mounter.mount(moto, bucket)
    clone = mnt.path / "clone"
    subprocess.run([*GIT, "clone", "-q", str(origin), str(clone)], check=True)

    def git(*args: str) -> str:
        return subprocess.run([*GIT, "-C", str(clone), *args], check=True, capture_output=True,
                              text=True).stdout

    assert "nothing to commit, working tree clean" in git("status")
    assert [line.split(" ", 1)[1] for line in git("log", "--oneline").splitlines()] == ["second", "first"]
    (clone / "new.txt").write_text("new\n")
    git("add", "new.txt")
    git("commit", "-qm", "third")
    assert git("log", "-1", "--format=%s").strip() == "third"
    git("fsck", "--strict")
    assert mnt.umount() == 0
    again = mounter.mount(moto, bucket)
    out = subprocess.run([*GIT, "-C", str(again.path / "clone"), "status", "--porcelain"], check=True,
                         capture_output=True, text=True).stdout
    assert out == ""
