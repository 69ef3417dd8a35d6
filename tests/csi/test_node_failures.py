"""The node service when things go wrong: a daemon killed with SIGKILL, a store that goes away, a
plugin process that is killed and restarted, and secrets that must not show up anywhere."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.mountinfo import mount_at, read_mounts
from csi.v1 import csi_pb2, csi_pb2_grpc
from obsfs.runtime import state_file
from tests.conftest import boto_client
from tests.csi.helpers import rpc_error, store_secrets
from tests.csi.kubelet import Kubelet, NodeEnv, make_root, remove_root, start_plugin, stop, unmount_everything
from tests.mounting import fsync_tree
from tests.s3server import S3Server, start_moto


def daemon_pid(staging: str) -> int:
    return int(state_file(staging, "pid").read_text())


def kill_daemon(staging: str) -> None:
    """The volume's obsfs crashes: SIGKILL its keeper (which would start another daemon) and its
    daemon, and wait until the kernel has finished both off (zombies: nobody reaps them here),
    so that the test sees the state after the crash, not during it."""
    pids = [int(state_file(staging, "keeper").read_text()), daemon_pid(staging)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    for pid in pids:
        while _process_state(pid) not in (None, "Z"):
            assert time.monotonic() < deadline, f"process {pid} survived SIGKILL"
            time.sleep(0.01)


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def condition(kubelet: Kubelet, volume_id: str, path: str, timeout: float = 30) -> csi_pb2.VolumeCondition:
    return kubelet.stats(volume_id, path, timeout=timeout).volume_condition


def test_a_killed_daemon_is_reported_and_mounted_again(node_env: NodeEnv, s3: Any, bucket: str) -> None:
    kubelet = node_env.kubelet
    staging = kubelet.stage(bucket)
    target = kubelet.publish(bucket, "pod")
    gone_pod = kubelet.publish(bucket, "gone-pod")
    Path(target, "uploaded.txt").write_text("fsynced before the crash")
    fsync_tree(Path(target))
    Path(target, "acknowledged.txt").write_text("closed, maybe not uploaded, before the crash")
    kill_daemon(staging)

    for path in (target, staging):
        health = condition(kubelet, bucket, path)
        assert health.abnormal and "daemon is gone" in health.message and "not running" in health.message
    error = rpc_error(kubelet.publish, bucket, "another-pod")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "NodeStageVolume" in error.details()
    kubelet.unpublish(bucket, gone_pod)  # a pod deleted meanwhile: its dead bind goes
    assert not os.path.exists(gone_pod)

    assert kubelet.stage(bucket) == staging  # kubelet repeats NodeStage: the volume comes back
    assert not condition(kubelet, bucket, staging).abnormal
    assert condition(kubelet, bucket, target).abnormal  # the pod's bind still holds the dead mount
    assert kubelet.publish(bucket, "pod") == target  # ... until it is published again
    assert not condition(kubelet, bucket, target).abnormal
    # A keeper's restart gap: the next daemon answers before it has written its pid. A mount that
    # answers is healthy, whatever a pid file says.
    pid_file = state_file(staging, "pid")
    current = pid_file.read_text()
    pid_file.write_text(str(2**22 + 1))  # above the kernel's PID_MAX_LIMIT: nobody's
    try:
        assert not condition(kubelet, bucket, target).abnormal
    finally:
        pid_file.write_text(current)
    assert Path(target, "uploaded.txt").read_text() == "fsynced before the crash"
    assert Path(target, "acknowledged.txt").read_text() == "closed, maybe not uploaded, before the crash"

    kubelet.unpublish(bucket, target)
    kubelet.unstage(bucket)
    body = s3.get_object(Bucket=bucket, Key="acknowledged.txt")["Body"].read()
    assert body == b"closed, maybe not uploaded, before the crash"


def test_unstaging_a_dead_volume_keeps_its_cache(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    staging = kubelet.stage(bucket)
    assert node_env.driver.node is not None
    cache = node_env.driver.node.state.cache_dir(bucket)
    kill_daemon(staging)
    kubelet.unstage(bucket)
    assert mount_at(read_mounts(), staging) is None
    assert cache.is_dir()  # what the daemon acknowledged waits there for the next stage
    assert not node_env.driver.node.state.credentials_path(bucket).exists()


def test_a_hung_daemon_does_not_hang_the_node_service(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    assert node_env.driver.node is not None
    node_env.driver.node.mounter.probe_timeout = 0.5
    staging = kubelet.stage(bucket)
    target = kubelet.publish(bucket)
    pid = daemon_pid(staging)
    os.kill(pid, signal.SIGSTOP)
    try:
        health = condition(kubelet, bucket, target)
        assert health.abnormal and "does not answer" in health.message
        kubelet.unpublish(bucket, target)  # kubelet can still clean up the pod ...
        assert not os.path.exists(target)
        kubelet.unstage(bucket)  # ... and the volume
        assert mount_at(read_mounts(), staging) is None
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def doomed_store() -> Iterator[S3Server]:
    """A moto server of its own, for a test that kills it."""
    server = start_moto()
    yield server
    server.stop()


def test_an_unreachable_store_is_abnormal(node_env: NodeEnv, doomed_store: S3Server) -> None:
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    boto_client(doomed_store).create_bucket(Bucket=bucket)
    kubelet = node_env.kubelet
    kubelet.stage(bucket, secrets=store_secrets(doomed_store))
    target = kubelet.publish(bucket)
    doomed_store.kill()
    health = condition(kubelet, bucket, target, timeout=3)  # the store calls give up before the CO does
    assert health.abnormal and "the store cannot be asked" in health.message
    assert "daemon is gone" not in health.message  # the daemon itself is fine
    kubelet.unpublish(bucket, target)
    kubelet.unstage(bucket)  # nothing was written: nothing to upload


# -- the plugin process ----------------------------------------------------------------------------

def test_mounts_survive_the_plugin_and_are_re_adopted(tmp_path: Path, s3: Any, bucket: str,
                                                      secrets: dict[str, str]) -> None:
    root, state_dir, log = make_root(), tmp_path / "state", tmp_path / "plugin.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        proc, endpoint = start_plugin(root, state_dir, log)
        procs.append(proc)
        with grpc.insecure_channel(endpoint) as channel:
            kubelet = Kubelet(root, csi_pb2_grpc.NodeStub(channel), secrets)
            kubelet.stage(bucket)
            target = kubelet.publish(bucket)
            Path(target, "before.txt").write_text("before")
        proc.kill()  # SIGKILL: no chance to clean up anything
        proc.wait()

        Path(target, "between.txt").write_text("while no plugin runs")
        fsync_tree(Path(target))
        assert Path(target, "before.txt").read_text() == "before"

        proc, endpoint = start_plugin(root, state_dir, log)
        procs.append(proc)
        assert f"re-adopted volume {bucket}" in log.read_text()
        with grpc.insecure_channel(endpoint) as channel:
            kubelet = Kubelet(root, csi_pb2_grpc.NodeStub(channel), secrets)
            assert kubelet.stage(bucket) == kubelet.staging_path(bucket)  # kubelet's repeat after its restart
            assert not condition(kubelet, bucket, target).abnormal
            kubelet.unpublish(bucket, target)
            kubelet.unstage(bucket)
        keys = sorted(obj["Key"] for obj in s3.list_objects(Bucket=bucket)["Contents"])
        assert keys == ["before.txt", "between.txt"]
    finally:
        for proc in procs:
            stop(proc)
        problems = unmount_everything(root)
        remove_root(root)
    assert not problems, problems


# -- secrets ---------------------------------------------------------------------------------------

def _readable(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # processes come and go; kernel threads have no environ
        return b""


def test_secrets_stay_out_of_argv_environments_logs_and_state(
        node_env: NodeEnv, moto: S3Server, bucket: str, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    access, secret = f"AK{uuid.uuid4().hex}", f"SK{uuid.uuid4().hex}"  # moto takes any keys
    secrets = store_secrets(moto, accessKeyID=access, secretAccessKey=secret)
    caplog.set_level(logging.DEBUG)
    kubelet = node_env.kubelet
    staging = kubelet.stage(bucket, context={"dbglevel": "debug"}, secrets=secrets)
    kubelet.stage(bucket, context={"dbglevel": "debug"}, secrets=secrets)
    rpc_error(kubelet.stage, bucket, None, {"dbglevel": "loud"}, secrets)
    target = kubelet.publish(bucket)
    Path(target, "file.txt").write_text("data")
    fsync_tree(Path(target))
    kubelet.stats(bucket, target)
    values = (access.encode(), secret.encode())

    pid = daemon_pid(staging)
    assert b"obsfs" in Path(f"/proc/{pid}/cmdline").read_bytes()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for name in ("cmdline", "environ"):
                seen = _readable(proc / name)
                assert not any(value in seen for value in values), f"{proc}/{name}"

    state = node_env.state_dir
    credentials = list((state / "secrets").iterdir())
    assert len(credentials) == 1 and stat.S_IMODE(credentials[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    assert b"DEBUG" in next((state / "logs").iterdir()).read_bytes()  # the daemon's log has much to say
    for path in state.rglob("*"):
        if path.is_file() and path not in credentials:
            assert not any(value in path.read_bytes() for value in values), path

    kubelet.unpublish(bucket, target)
    kubelet.unstage(bucket)
    assert not (state / "secrets").exists() or not list((state / "secrets").iterdir())
    for path in state.rglob("*"):
        if path.is_file():
            assert not any(value in path.read_bytes() for value in values), path
    out, err = capfd.readouterr()
    assert "secretAccessKey" in caplog.text and f"NodeStageVolume volume={bucket} code=OK" in caplog.text
    for text in (caplog.text, out, err):
        assert access not in text and secret not in text
