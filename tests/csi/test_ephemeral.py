"""CSI ephemeral inline volumes over the real socket, as kubelet drives them: NodePublishVolume
with the pod spec's volumeAttributes and nodePublishSecretRef's keys, no NodeStage, a real obsfs
mount at the pod's target path, and NodeUnpublishVolume that drains it."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.mountinfo import mount_at, read_mounts
from csi.node import EPHEMERAL
from csi.v1 import csi_pb2
from tests.csi.helpers import MODE, rpc_error
from tests.csi.kubelet import NodeEnv, capability
from tests.mounting import fsync_tree


class InlineVolume:
    """One inline volume of one pod, with the ids and paths kubelet gives it."""

    def __init__(self, env: NodeEnv, attributes: dict[str, str], *, readonly: bool = False,
                 cap: csi_pb2.VolumeCapability | None = None) -> None:
        self.env = env
        pod_uid = str(uuid.uuid4())
        # kubelet names an inline volume "csi-" + sha256 of the pod uid, driver and volume name.
        self.volume_id = "csi-" + hashlib.sha256(f"{pod_uid}obs.csi.obsfs.dev data".encode()).hexdigest()
        self.target = env.kubelet.target_path(pod_uid, "data")
        self.request = csi_pb2.NodePublishVolumeRequest(
            volume_id=self.volume_id, target_path=self.target, volume_capability=cap or capability(),
            readonly=readonly, secrets=dict(env.kubelet.secrets),
            volume_context={**attributes, EPHEMERAL: "true", "csi.storage.k8s.io/pod.name": "app",
                            "csi.storage.k8s.io/pod.namespace": "default", "csi.storage.k8s.io/pod.uid": pod_uid})

    def publish(self) -> Path:
        os.makedirs(os.path.dirname(self.target), mode=0o750, exist_ok=True)
        self.env.node.NodePublishVolume(self.request, timeout=60)
        self.env.kubelet.published[self.target] = self.volume_id
        return Path(self.target)

    def unpublish(self) -> None:
        self.env.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=self.volume_id, target_path=self.target), timeout=60)
        self.env.kubelet.published.pop(self.target, None)


def test_an_inline_volume_from_publish_to_unpublish(node_env: NodeEnv, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="team/input.txt", Body=b"from the bucket\n")
    volume = InlineVolume(node_env, {"bucket": bucket, "prefix": "team", "uid": "1000"})
    target = volume.publish()
    assert volume.publish() == target  # repeat: OK
    entry = mount_at(read_mounts(), str(target))
    assert entry is not None and (entry.fstype, entry.source) == ("fuse.obsfs", f"obsfs:{bucket}:/team")
    assert (target / "input.txt").read_text() == "from the bucket\n"
    assert os.stat(target / "input.txt").st_uid == 1000
    (target / "output.txt").write_text("written by the pod\n")
    fsync_tree(target)

    stats = node_env.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=volume.volume_id, volume_path=str(target)), timeout=30)
    assert not stats.volume_condition.abnormal, stats.volume_condition.message
    assert next(u for u in stats.usage if u.unit == csi_pb2.VolumeUsage.INODES).used == 2

    (target / "late.txt").write_text("closed just before the pod ends\n")  # not fsynced: the unpublish drains it
    volume.unpublish()
    volume.unpublish()  # repeat: OK
    assert not os.path.exists(target) and mount_at(read_mounts(), str(target)) is None
    assert s3.get_object(Bucket=bucket, Key="team/late.txt")["Body"].read() == b"closed just before the pod ends\n"
    assert not (node_env.state_dir / "volumes").exists() or not list((node_env.state_dir / "volumes").iterdir())


def test_an_inline_volume_read_only_and_with_the_pods_fsgroup(node_env: NodeEnv, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"x")
    volume = InlineVolume(node_env, {"bucket": bucket}, readonly=True, cap=capability(MODE.SINGLE_NODE_WRITER,
                                                                                        group="4321"))
    target = volume.publish()
    assert os.stat(target / "a.txt").st_gid == 4321
    with pytest.raises(OSError) as caught:
        (target / "b.txt").write_text("no")
    assert caught.value.errno == errno.EROFS
    other = InlineVolume(node_env, {"bucket": bucket})
    other.request.volume_id = volume.volume_id  # the same volume asked for read-write: refused, not remounted
    other.request.target_path = volume.target
    error = rpc_error(node_env.node.NodePublishVolume, other.request)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    volume.unpublish()


@pytest.mark.parametrize("attributes, message", [
    ({}, "needs volumeAttributes 'bucket'"),
    ({"bucket": "Not_A_Bucket"}, "'Not_A_Bucket' is not a valid bucket name"),
    ({"bucket": "b-1234", "pathPattern": "${pvc.metadata.name}"}, "'pathPattern' is for StorageClasses"),
    ({"bucket": "b-1234", "colour": "blue"}, "unknown volumeAttributes key 'colour'"),
])
def test_bad_inline_volumes_are_invalid(node_env: NodeEnv, attributes: dict[str, str], message: str) -> None:
    volume = InlineVolume(node_env, attributes)
    os.makedirs(os.path.dirname(volume.target), exist_ok=True)
    error = rpc_error(node_env.node.NodePublishVolume, volume.request)
    assert (error.code(), message in error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, True), error.details()
    assert not os.path.exists(volume.target)


def test_an_inline_volume_without_secrets_names_the_pod_spec_field(node_env: NodeEnv, bucket: str) -> None:
    volume = InlineVolume(node_env, {"bucket": bucket})
    volume.request.secrets.clear()
    error = rpc_error(node_env.node.NodePublishVolume, volume.request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "nodePublishSecretRef" in error.details()
