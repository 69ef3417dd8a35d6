"""CSI v0.3 (``csi.v0``) on the same socket as v1, as Kubernetes 1.11 and the v0.4 sidecars call it:
the life of a volume over real FUSE mounts, the v0-only NodeGetId, the capabilities v0 can
express, errors, and secrets kept out of the debug log."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import obsfs
from csi.interceptor import REDACTED, redacted
from csi.v0 import csi_pb2 as v0
from csi.v0 import csi_pb2_grpc as v0_grpc
from csi.v0adapter import DEPRECATED_SECRET_PARAMETERS
from tests.csi.helpers import GIB, bucket_exists, rpc_error
from tests.csi.kubelet import RPC_TIMEOUT, NodeEnv
from tests.csi.test_proto import GENERATED, REPO
from tests.mounting import fsync_tree

MODE = v0.VolumeCapability.AccessMode.Mode


def capability(mode: int = MODE.MULTI_NODE_MULTI_WRITER) -> v0.VolumeCapability:
    return v0.VolumeCapability(mount=v0.VolumeCapability.MountVolume(),
                               access_mode=v0.VolumeCapability.AccessMode(mode=mode))  # type: ignore[arg-type]


@pytest.fixture
def v0_channel(node_env: NodeEnv) -> Iterator[grpc.Channel]:
    """A second channel to the ``all``-mode driver of ``node_env``, for the v0 stubs."""
    with grpc.insecure_channel(node_env.endpoint) as channel:
        yield channel


@pytest.mark.parametrize("name", GENERATED)
def test_regenerating_gives_identical_v0_stubs(tmp_path: Path, name: str) -> None:
    subprocess.run([str(REPO / "scripts" / "gen-proto.sh"), str(tmp_path)], check=True, capture_output=True)
    fresh = (tmp_path / "csi" / "v0" / name).read_bytes()
    assert fresh == (REPO / "csi" / "v0" / name).read_bytes(), f"csi/v0/{name} is stale: run scripts/gen-proto.sh"


def test_identity(channel: grpc.Channel) -> None:
    identity = v0_grpc.IdentityStub(channel)
    info = identity.GetPluginInfo(v0.GetPluginInfoRequest())
    assert (info.name, info.vendor_version) == ("obs.csi.obsfs.dev", obsfs.__version__)
    probe = identity.Probe(v0.ProbeRequest())
    assert probe.HasField("ready") and probe.ready.value is True
    # v0 has no VolumeExpansion capability: only the controller service is announced.
    caps = identity.GetPluginCapabilities(v0.GetPluginCapabilitiesRequest()).capabilities
    assert [c.service.type for c in caps] == [v0.PluginCapability.Service.CONTROLLER_SERVICE]
    controller = v0_grpc.ControllerStub(channel).ControllerGetCapabilities(v0.ControllerGetCapabilitiesRequest())
    assert [c.rpc.type for c in controller.capabilities] == [v0.ControllerServiceCapability.RPC.CREATE_DELETE_VOLUME]


def test_a_volume_from_create_to_delete(node_env: NodeEnv, v0_channel: grpc.Channel, s3: Any,
                                        volume_name: str) -> None:
    controller, node, kubelet = v0_grpc.ControllerStub(v0_channel), v0_grpc.NodeStub(v0_channel), node_env.kubelet
    secrets = dict(kubelet.secrets)
    # csi-provisioner v0.4 passes the keys naming its Secrets on with the parameters.
    parameters = {key: "obsfs-secret" for key in DEPRECATED_SECRET_PARAMETERS} | {"uid": "0"}
    volume = controller.CreateVolume(v0.CreateVolumeRequest(
        name=volume_name, capacity_range=v0.CapacityRange(required_bytes=GIB), volume_capabilities=[capability()],
        parameters=parameters, controller_create_secrets=secrets), timeout=30).volume
    vid = volume.id
    assert (vid, volume.capacity_bytes, dict(volume.attributes)) == (volume_name, GIB, {"uid": "0"})

    staging = kubelet.staging_path(vid)
    os.makedirs(staging, mode=0o755)
    stage = v0.NodeStageVolumeRequest(volume_id=vid, staging_target_path=staging, volume_capability=capability(),
                                      node_stage_secrets=secrets, volume_attributes=volume.attributes)
    node.NodeStageVolume(stage, timeout=RPC_TIMEOUT)
    node.NodeStageVolume(stage, timeout=RPC_TIMEOUT)  # repeat: OK
    targets = [kubelet.target_path(pod, f"pv-{vid}") for pod in ("pod-a", "pod-b")]
    for target in targets:
        os.makedirs(os.path.dirname(target), mode=0o755)
        node.NodePublishVolume(v0.NodePublishVolumeRequest(
            volume_id=vid, staging_target_path=staging, target_path=target, volume_capability=capability(),
            node_publish_secrets=secrets, volume_attributes=volume.attributes), timeout=RPC_TIMEOUT)
        kubelet.published[target] = vid
    Path(targets[0], "hello.txt").write_text("written through v0\n")
    fsync_tree(Path(targets[0]))
    assert Path(targets[1], "hello.txt").read_text() == "written through v0\n"

    for target in targets:
        node.NodeUnpublishVolume(v0.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target),
                                 timeout=RPC_TIMEOUT)
        assert not os.path.exists(target)
    node.NodeUnstageVolume(v0.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=staging),
                           timeout=RPC_TIMEOUT)
    assert s3.get_object(Bucket=vid, Key="hello.txt")["Body"].read() == b"written through v0\n"
    controller.DeleteVolume(v0.DeleteVolumeRequest(volume_id=vid, controller_delete_secrets=secrets), timeout=30)
    assert not bucket_exists(s3, vid)


def test_node_identity_and_capabilities(v0_channel: grpc.Channel) -> None:
    node = v0_grpc.NodeStub(v0_channel)
    assert node.NodeGetId(v0.NodeGetIdRequest()).node_id == "node-1"
    assert node.NodeGetInfo(v0.NodeGetInfoRequest()).node_id == "node-1"
    # Stats, VOLUME_CONDITION and VOLUME_MOUNT_GROUP do not exist in v0.
    caps = node.NodeGetCapabilities(v0.NodeGetCapabilitiesRequest()).capabilities
    assert [c.rpc.type for c in caps] == [v0.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME]


def test_errors_keep_their_codes(node_env: NodeEnv, v0_channel: grpc.Channel) -> None:
    node, controller = v0_grpc.NodeStub(v0_channel), v0_grpc.ControllerStub(v0_channel)
    error = rpc_error(node.NodeStageVolume, v0.NodeStageVolumeRequest(
        staging_target_path=node_env.kubelet.staging_path("x"), volume_capability=capability(),
        node_stage_secrets=dict(node_env.kubelet.secrets)))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "volume_id is missing")
    error = rpc_error(controller.DeleteVolume, v0.DeleteVolumeRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A field v1 has no counterpart for is refused, not ignored (topology was never announced).
    error = rpc_error(controller.ValidateVolumeCapabilities, v0.ValidateVolumeCapabilitiesRequest(
        volume_id="b", volume_capabilities=[capability()], accessible_topology=[v0.Topology(segments={"z": "a"})]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "accessible_topology" in error.details()
    error = rpc_error(controller.CreateVolume, v0.CreateVolumeRequest(
        name="pvc-x", volume_capabilities=[capability(99)], controller_create_secrets=dict(node_env.kubelet.secrets)))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "access mode 99 is missing or unknown")
    error = rpc_error(controller.ListVolumes, v0.ListVolumesRequest())
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_v0_secrets_are_redacted_in_the_debug_log() -> None:
    request = v0.NodePublishVolumeRequest(volume_id="b", node_publish_secrets={"secretAccessKey": "s3cr3t"},
                                          volume_attributes={"uid": "0"})
    copy = redacted(request)
    assert dict(copy.node_publish_secrets) == {"secretAccessKey": REDACTED}
    assert dict(copy.volume_attributes) == {"uid": "0"}
