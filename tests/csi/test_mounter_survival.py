"""The node plugin in a PID namespace of its own, as in its container, with the obsfs daemons run by
``obsfs-mounter`` outside it: killing the namespace's PID 1 (what a container restart does) must
leave the volumes serving, and a new plugin must take them over and tear them down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.mounter import SocketMounter
from csi.mountinfo import read_mounts
from csi.v1 import csi_pb2_grpc
from obsfs.runtime import state_file
from tests.csi.helpers import store_secrets
from tests.csi.kubelet import (
    REPO,
    Kubelet,
    make_root,
    mounts_under,
    remove_root,
    start_plugin,
    stop,
    unmount_everything,
)
from tests.mounting import fsync_tree
from tests.s3server import S3Server

# A container of its own: a PID namespace whose PID 1 is obsfs-csi, its own /proc and /run (so
# neither the daemons' pids nor their pid files are visible), and a mount namespace that shares
# kubelet's directory with the host both ways, as mountPropagation: Bidirectional does.
CONTAINER = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "unchanged", "--",
             "sh", "-c", 'mount -t tmpfs none /run && exec "$@"', "sh"]


def start_mounter(socket_path: Path, root: Path, log: Path) -> subprocess.Popen[bytes]:
    """The real entry point, outside the plugin's namespaces; returns once it answers."""
    with log.open("ab") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "csi.mounterd", "--socket", str(socket_path),
                                 "--kubelet-dir", str(root), "--log-level", "DEBUG"], cwd=REPO, stderr=stderr)
    client, deadline = SocketMounter(str(socket_path)), time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            client.hello()
            return proc
        except Exception:
            assert time.monotonic() < deadline, f"obsfs-mounter did not come up:\n{log.read_text()}"
            time.sleep(0.1)


def namespace_init(unshare: subprocess.Popen[bytes]) -> int:
    """The host pid of the namespace's PID 1: unshare's only child."""
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def obsfs_daemons(mountpoint: str) -> list[int]:
    """Processes running ``obsfs mount ... MOUNTPOINT``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"obsfs" in argv and b"mount" in argv and mountpoint.encode() in argv:
            found.append(int(proc.name))
    return found


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """kubelet's directory as a shared mount, so that the plugin's namespace and the host see each
    other's mounts under it; everything is unmounted in teardown."""
    root = make_root()
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    subprocess.run(["mount", "--make-shared", str(root)], check=True)
    try:
        yield root
    finally:
        problems = unmount_everything(root)
        subprocess.run(["umount", "-l", str(root)], check=True)
        remove_root(root)
        assert not problems, problems


def test_volumes_outlive_the_plugins_container(shared_root: Path, tmp_path: Path, moto: S3Server, s3: Any,
                                               bucket: str) -> None:
    root, state_dir, socket_path = shared_root, tmp_path / "state", tmp_path / "mounter" / "mounter.sock"
    plugin_log, mounter_log = tmp_path / "plugin.log", tmp_path / "mounter.log"
    access, secret = f"AK{uuid.uuid4().hex}", f"SK{uuid.uuid4().hex}"  # moto takes any keys
    secrets = store_secrets(moto, accessKeyID=access, secretAccessKey=secret)
    in_container = {"wrapper": CONTAINER, "extra": ["--mounter-socket", str(socket_path)]}
    procs = [start_mounter(socket_path, root, mounter_log)]
    try:
        plugin, endpoint = start_plugin(root, state_dir, plugin_log, **in_container)
        procs.append(plugin)
        with grpc.insecure_channel(endpoint) as channel:
            kubelet = Kubelet(root, csi_pb2_grpc.NodeStub(channel), secrets)
            staging = kubelet.stage(bucket)
            target = kubelet.publish(bucket)
        Path(target, "before.txt").write_text("before")
        daemon = int(state_file(staging, "pid").read_text())
        assert os.readlink(f"/proc/{daemon}/ns/pid") == os.readlink("/proc/self/ns/pid"), \
            "the daemon runs in the plugin's PID namespace"

        os.kill(namespace_init(plugin), signal.SIGKILL)  # the container's end: every process in it dies
        plugin.wait()
        assert Path(target, "before.txt").read_text() == "before"
        Path(target, "after.txt").write_text("after the plugin died")
        fsync_tree(Path(target))
        assert Path(target, "after.txt").read_text() == "after the plugin died"

        plugin, endpoint = start_plugin(root, state_dir, plugin_log, **in_container)
        procs.append(plugin)
        assert f"re-adopted volume {bucket} staged at {staging}" in plugin_log.read_text()
        with grpc.insecure_channel(endpoint) as channel:
            kubelet = Kubelet(root, csi_pb2_grpc.NodeStub(channel), secrets)
            health = kubelet.stats(bucket, target).volume_condition
            assert not health.abnormal, health.message
            kubelet.unpublish(bucket, target)
            kubelet.unstage(bucket)
        assert not mounts_under(root)
        assert not [e for e in read_mounts() if e.mount_point in (staging, target)]
        assert not obsfs_daemons(staging)
        assert sorted(obj["Key"] for obj in s3.list_objects(Bucket=bucket)["Contents"]) == ["after.txt", "before.txt"]
        assert s3.get_object(Bucket=bucket, Key="after.txt")["Body"].read() == b"after the plugin died"
        for log in (plugin_log, mounter_log):
            text = log.read_text()
            assert access not in text and secret not in text, log
    finally:
        for proc in reversed(procs):
            stop(proc)
