"""A stand-in for kubelet: its directory layout, its order of calls, and a teardown that leaves no
mount behind even when a test failed halfway."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from csi.driver import DRIVER_NAME, Driver, DriverConfig
from csi.mounter import Mounter
from csi.mountinfo import OBSFS_FSTYPE, read_mounts
from csi.v1 import csi_pb2, csi_pb2_grpc
from tests.csi.helpers import MODE, mount_capability

RPC_TIMEOUT = 60
REPO = Path(__file__).resolve().parents[2]


def make_root() -> Path:
    """kubelet's directory for one test, outside pytest's 0700 tmp tree: a process running as
    uid 1000 must be able to walk down to a published target."""
    root = Path(tempfile.mkdtemp(prefix="kubelet-", dir="/tmp"))
    root.chmod(0o755)
    return root


def capability(mode: int = MODE.MULTI_NODE_MULTI_WRITER, group: str = "",
               flags: tuple[str, ...] = ()) -> csi_pb2.VolumeCapability:
    cap = mount_capability(mode)
    cap.mount.volume_mount_group = group
    cap.mount.mount_flags.extend(flags)
    return cap


def mounts_under(root: Path) -> list[Any]:
    prefix = f"{root}/"
    return [entry for entry in read_mounts() if entry.mount_point.startswith(prefix)]


@dataclass
class Kubelet:
    root: Path
    node: csi_pb2_grpc.NodeStub
    secrets: Mapping[str, str]
    driver: str = DRIVER_NAME
    published: dict[str, str] = field(default_factory=dict)  # target -> volume id

    def staging_path(self, volume_id: str) -> str:
        digest = hashlib.sha256(volume_id.encode()).hexdigest()
        return f"{self.root}/plugins/kubernetes.io/csi/{self.driver}/{digest}/globalmount"

    def target_path(self, pod_uid: str, pv: str) -> str:
        return f"{self.root}/pods/{pod_uid}/volumes/kubernetes.io~csi/{pv}/mount"

    def stage(self, volume_id: str, cap: csi_pb2.VolumeCapability | None = None,
              context: Mapping[str, str] | None = None, secrets: Mapping[str, str] | None = None) -> str:
        """NodeStageVolume as kubelet sends it: it creates the globalmount directory first."""
        staging = self.staging_path(volume_id)
        os.makedirs(staging, mode=0o755, exist_ok=True)
        self.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, volume_capability=cap or capability(),
            secrets=self.secrets if secrets is None else secrets, volume_context=context or {}),
            timeout=RPC_TIMEOUT)
        return staging

    def publish(self, volume_id: str, pod_uid: str | None = None, readonly: bool = False,
                cap: csi_pb2.VolumeCapability | None = None, target: str | None = None) -> str:
        """NodePublishVolume as kubelet sends it: it creates the parent of the target, not the target."""
        target = target or self.target_path(pod_uid or str(uuid.uuid4()), f"pv-{volume_id.replace('/', '-')}")
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        self.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=self.staging_path(volume_id), target_path=target,
            volume_capability=cap or capability(), readonly=readonly), timeout=RPC_TIMEOUT)
        self.published[target] = volume_id
        return target

    def unpublish(self, volume_id: str, target: str) -> None:
        self.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target),
                                      timeout=RPC_TIMEOUT)

    def unstage(self, volume_id: str) -> None:
        self.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=volume_id, staging_target_path=self.staging_path(volume_id)), timeout=RPC_TIMEOUT)

    def stats(self, volume_id: str, path: str, timeout: float = RPC_TIMEOUT) -> csi_pb2.NodeGetVolumeStatsResponse:
        return self.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path),
                                            timeout=timeout)


def start_plugin(root: Path, state_dir: Path, log: Path, wrapper: Sequence[str] = (),
                 extra: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """The real entry point in node mode, as the DaemonSet runs it, started through ``wrapper``
    (e.g. unshare) with ``extra`` flags; returns once Probe says ready."""
    endpoint = f"unix://{root / 'plugins' / DRIVER_NAME / 'csi.sock'}"
    with log.open("ab") as stderr:
        proc = subprocess.Popen([*wrapper, sys.executable, "-m", "csi.main", "--endpoint", endpoint,
                                 "--nodeid", "node-1", "--mode", "node", "--state-dir", str(state_dir),
                                 "--kubelet-dir", str(root), "--log-level", "DEBUG", *extra],
                                cwd=REPO, stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            with grpc.insecure_channel(endpoint) as channel:
                if csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=1).ready.value:
                    return proc, endpoint
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"the plugin did not become ready:\n{log.read_text()}"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def unmount_everything(root: Path) -> list[str]:
    """Unmount what a test left under ``root``: pod targets first, lazily, then staging mounts
    through ``obsfs umount`` so their daemons flush and exit. Returns what went wrong."""
    problems: list[str] = []
    for entry in reversed(mounts_under(root)):
        if entry.fstype != OBSFS_FSTYPE or "/pods/" in entry.mount_point:
            subprocess.run(["umount", "-l", entry.mount_point], capture_output=True)
    mounter = Mounter(probe_timeout=2)
    for entry in reversed(mounts_under(root)):
        if mounter.probe(entry.mount_point) is not None:  # a daemon the test killed
            subprocess.run(["fusermount3", "-u", "-z", entry.mount_point], capture_output=True)
            continue
        result = subprocess.run([sys.executable, "-m", "obsfs", "umount", "--timeout", "60", entry.mount_point],
                                capture_output=True, text=True, timeout=90)
        if result.returncode != 0:
            problems.append(f"obsfs umount {entry.mount_point}: exit {result.returncode}: {result.stderr.strip()}")
    for entry in mounts_under(root):
        subprocess.run(["fusermount3", "-u", "-z", entry.mount_point], capture_output=True)
        subprocess.run(["umount", "-l", entry.mount_point], capture_output=True)
    left = [entry.mount_point for entry in mounts_under(root)]
    if left:
        problems.append(f"still mounted: {left}")
    return problems


def remove_root(root: Path) -> None:
    """Delete the test's kubelet directory, but never through a mount: that would delete objects."""
    if not mounts_under(root):
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class NodeEnv:
    """A driver in ``all`` mode, as on a single-node cluster, with its own kubelet directory and
    state directory; ``kubelet`` calls the Node service the way kubelet does."""

    driver: Driver
    endpoint: str
    state_dir: Path
    kubelet: Kubelet
    controller: csi_pb2_grpc.ControllerStub
    node: csi_pb2_grpc.NodeStub


def start_node_driver(root: Path, state_dir: Path, **config: str) -> tuple[Driver, str]:
    """A driver in ``all`` mode; ``config``: more DriverConfig fields (credentials, ...)."""
    socket_dir = root / "plugins" / DRIVER_NAME
    socket_dir.mkdir(parents=True, exist_ok=True)
    endpoint = f"unix://{socket_dir / 'csi.sock'}"
    driver = Driver(DriverConfig(endpoint=endpoint, mode="all", node_id="node-1", state_dir=str(state_dir),
                                 kubelet_dir=str(root), **config))  # type: ignore[arg-type]
    driver.start()
    return driver, endpoint


@contextlib.contextmanager
def node_environment(tmp_path: Path, secrets: dict[str, str], **config: str) -> Iterator[NodeEnv]:
    """Everything is unmounted in teardown, also when the test failed halfway."""
    root = make_root()
    state_dir = tmp_path / "state"
    driver, endpoint = start_node_driver(root, state_dir, **config)
    try:
        with grpc.insecure_channel(endpoint) as channel:
            node = csi_pb2_grpc.NodeStub(channel)
            yield NodeEnv(driver, endpoint, state_dir, Kubelet(root, node, secrets),
                          csi_pb2_grpc.ControllerStub(channel), node)
    finally:
        driver.stop(0)
        problems = unmount_everything(root)
        remove_root(root)
    assert not problems, problems
