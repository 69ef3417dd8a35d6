"""Real tools on a real mount: cp -a / rsync -a round trips and git, as users run them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

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


@pytest.mark.parametrize("delay", ["0", "0.5", "2"])
def test_git_history_survives_a_remount_on_a_fresh_cache(mounter: Mounter, moto: S3Server, bucket: str,
                                                         s3: Any, tmp_path: Path, delay: str) -> None:
    """git replaces index, refs and config by rename over and over within upload_delay, and gc
    deletes what it packed. After a remount that has none of the first daemon's cache, every
    object, ref and the index must be what git last wrote."""
    mnt = mounter.mount(moto, bucket, f"upload_delay={delay}", f"cache_dir={tmp_path / 'cache-1'}")
    repo = mnt.path / "repo"

    def git(*args: str, cwd: Path | None = None) -> str:
        done = subprocess.run([*GIT, "-C", str(cwd or repo), *args], capture_output=True, text=True)
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout

    git("init", "-q", str(repo), cwd=mnt.path)
    git("config", "branch.main.description", "kept in .git/config")
    for number in range(12):
        (repo / f"main-{number % 4}.txt").write_text(f"main {number}\n")
        git("add", ".")
        git("commit", "-qm", f"main {number}")
    git("checkout", "-qb", "topic", "HEAD~4")
    for number in range(10):
        (repo / f"topic-{number % 3}.txt").write_text(f"topic {number}\n")
        git("add", ".")
        git("commit", "-qm", f"topic {number}")
    git("checkout", "-qb", "rebased", "topic")
    git("rebase", "-q", "main")
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-edit", "topic")
    for number in range(8):
        (repo / "after-merge.txt").write_text(f"after {number}\n")
        git("add", "after-merge.txt")
        git("commit", "-qm", f"after merge {number}")
    git("gc", "-q")
    log = git("log", "--all", "--format=%H %P %s")
    refs = git("show-ref")
    assert len(git("rev-list", "--all").split()) >= 30
    git("fsck", "--full", "--strict")
    assert mnt.umount() == 0

    again = mounter.mount(moto, bucket, f"cache_dir={tmp_path / 'cache-2'}")
    repo = again.path / "repo"
    git("fsck", "--full", "--strict")
    assert git("log", "--all", "--format=%H %P %s") == log
    assert git("show-ref") == refs
    assert git("status", "--porcelain") == ""
    assert git("config", "branch.main.description").strip() == "kept in .git/config"
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert [k for k in stored if "obsfs-conflict" in k] == [], "a replacement was taken for another client's change"
