"""Against Ceph RGW, the one local server that checks signatures: a volume's life on a real S3
implementation, and wrong keys rejected as UNAUTHENTICATED with a message naming the secret keys."""

from __future__ import annotations

import grpc
import pytest

from csi.v1 import csi_pb2, csi_pb2_grpc
from tests.csi.helpers import create_request, rpc_error, store_secrets
from tests.s3server import S3Server


def test_volume_lifecycle_on_rgw(controller: csi_pb2_grpc.ControllerStub, rgw: S3Server, volume_name: str) -> None:
    secrets = store_secrets(rgw)
    volume = controller.CreateVolume(create_request(volume_name, secrets), timeout=30).volume
    assert controller.CreateVolume(create_request(volume_name, secrets), timeout=30).volume == volume
    request = csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=secrets)
    controller.DeleteVolume(request, timeout=30)
    controller.DeleteVolume(request, timeout=30)
    error = rpc_error(controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=volume.volume_id, volume_capabilities=create_request(volume_name, secrets).volume_capabilities,
        secrets=secrets), timeout=30)
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("key", ["accessKeyID", "secretAccessKey"])
def test_wrong_keys_are_unauthenticated(controller: csi_pb2_grpc.ControllerStub, rgw: S3Server, volume_name: str,
                                        key: str) -> None:
    wrong = "Wrong0123456789abcdef"
    error = rpc_error(controller.CreateVolume, create_request(volume_name, store_secrets(rgw, **{key: wrong})),
                      timeout=30)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "accessKeyID and secretAccessKey" in error.details() and wrong not in error.details()
