"""Request builders and assertions shared by the CSI tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import grpc
import pytest
from botocore.exceptions import ClientError

from csi.v1 import csi_pb2
from tests.s3server import S3Server

MODE = csi_pb2.VolumeCapability.AccessMode.Mode
GIB = 1 << 30


def mount_capability(mode: int = MODE.SINGLE_NODE_WRITER) -> csi_pb2.VolumeCapability:
    """``mode`` is a plain int so that tests can send values the enum does not define, as a CO may;
    protoc's stub only admits the enum class, hence the cast."""
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(),
                                    access_mode=csi_pb2.VolumeCapability.AccessMode(mode=cast(Any, mode)))


def block_capability() -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                    access_mode=csi_pb2.VolumeCapability.AccessMode(mode=MODE.SINGLE_NODE_WRITER))


def store_secrets(server: S3Server, **overrides: str) -> dict[str, str]:
    """The Secret a csi-s3 user would have for ``server``."""
    secrets = {"accessKeyID": server.access_key, "secretAccessKey": server.secret_key,
               "endpoint": server.endpoint, "usePathStyle": "true",
               "signature": "v2" if server.kind == "rgw" else "v4"}
    secrets.update(overrides)
    return secrets


def bucket_exists(s3: Any, bucket: str) -> bool:
    """What the store says, through an independent client."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        return False
    return True


def rpc_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The grpc.RpcError that ``call(*args, **kwargs)`` must raise (it has .code() and .details())."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def create_request(name: str, secrets: dict[str, str], capacity: int = GIB,
                   parameters: dict[str, str] | None = None) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=capacity),
        volume_capabilities=[mount_capability()], parameters=parameters or {}, secrets=secrets)
