"""The driver's own credential (``obsfs-csi --credentials``): read from a mounted Secret or a
key=value file, used only where a request carries no secrets, over the real socket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.defaultsecret import DefaultSecret
from csi.errors import FailedPrecondition
from csi.v0 import csi_pb2 as v0
from csi.v0 import csi_pb2_grpc as v0_grpc
from csi.v1 import csi_pb2
from obsfs.errors import ConfigError
from tests.csi.helpers import bucket_exists, create_request, mount_capability, rpc_error, store_secrets
from tests.csi.kubelet import NodeEnv, node_environment
from tests.csi.test_v0 import capability as v0_capability
from tests.mounting import fsync_tree
from tests.s3server import S3Server


def secret_volume(directory: Path, values: dict[str, str]) -> Path:
    """The layout kubelet gives a Secret volume: each key a symlink into a timestamped directory
    that ``..data`` points at, swapped atomically on an update."""
    directory.mkdir(mode=0o700, exist_ok=True)
    stamp = directory / f"..{len(list(directory.iterdir()))}"
    stamp.mkdir(mode=0o700)
    for key, value in values.items():
        (stamp / key).write_text(value)
        (stamp / key).chmod(0o400)
    (directory / "..data.tmp").symlink_to(stamp.name)
    os.replace(directory / "..data.tmp", directory / "..data")
    for key in values:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")
    return directory


def test_a_secret_volume_and_a_key_value_file_read_alike(tmp_path: Path) -> None:
    values = {"accessKeyID": "AK", "secretAccessKey": "SK", "endpoint": "http://127.0.0.1:1"}
    volume = secret_volume(tmp_path / "secret", values)
    assert DefaultSecret(str(volume)).read() == values
    file = tmp_path / "credentials"
    file.write_text("# the driver's own keys\naccessKeyID=AK\nsecretAccessKey = SK\n\nendpoint=http://127.0.0.1:1\n")
    file.chmod(0o600)
    DefaultSecret(str(file)).check()
    assert DefaultSecret(str(file)).read() == values
    secret_volume(volume, {**values, "accessKeyID": "AK2"})  # rotated: the next read sees it
    assert DefaultSecret(str(volume)).read()["accessKeyID"] == "AK2"


def test_request_secrets_win_and_a_missing_default_is_empty(tmp_path: Path) -> None:
    file = tmp_path / "credentials"
    file.write_text("accessKeyID=AK\n")
    assert DefaultSecret(str(file)).for_request({"accessKeyID": "mine"}) == {"accessKeyID": "mine"}
    assert DefaultSecret(str(file)).for_request({}) == {"accessKeyID": "AK"}
    assert DefaultSecret(str(tmp_path / "not-yet")).for_request({}) == {}
    assert DefaultSecret(None).for_request({}) == {}


def test_a_default_others_can_read_or_a_bad_line_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "credentials"
    file.write_text("accessKeyID=AK\nsecretAccessKey SK-VALUE\n")
    file.chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by other users .mode 0644"):
        DefaultSecret(str(file)).check()
    with pytest.raises(FailedPrecondition, match="not key=value") as caught:
        DefaultSecret(str(file)).read()
    assert "SK-VALUE" not in str(caught.value)


@pytest.fixture
def defaulted(tmp_path: Path, moto: S3Server) -> Iterator[NodeEnv]:
    """A driver in ``all`` mode whose only credential is its own: kubelet sends no secrets."""
    credentials = secret_volume(tmp_path / "secret", store_secrets(moto))
    with node_environment(tmp_path, {}, credentials=str(credentials)) as env:
        yield env


def test_calls_without_secrets_use_the_default(defaulted: NodeEnv, s3: Any, volume_name: str) -> None:
    controller, kubelet = defaulted.controller, defaulted.kubelet
    volume_id = controller.CreateVolume(create_request(volume_name, secrets={})).volume.volume_id
    assert bucket_exists(s3, volume_id)

    # CSI v0.3's ValidateVolumeCapabilities has no secrets field: the default checks the volume.
    with grpc.insecure_channel(defaulted.endpoint) as channel:
        answer = v0_grpc.ControllerStub(channel).ValidateVolumeCapabilities(v0.ValidateVolumeCapabilitiesRequest(
            volume_id=volume_id, volume_capabilities=[v0_capability()]))
    assert answer.supported
    error = rpc_error(controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="no-such-bucket-0123456789", volume_capabilities=[mount_capability()]))
    assert error.code() == grpc.StatusCode.NOT_FOUND

    kubelet.stage(volume_id)
    target = kubelet.publish(volume_id)
    Path(target, "hello.txt").write_text("staged with the driver's credential\n")
    fsync_tree(Path(target))
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id)
    assert s3.get_object(Bucket=volume_id, Key="hello.txt")["Body"].read() == b"staged with the driver's credential\n"
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
    assert not bucket_exists(s3, volume_id)


def test_without_any_credential_validate_answers_from_the_volume_id(channel: grpc.Channel) -> None:
    """The session's controller has no default: a well-formed v0 request is never INVALID_ARGUMENT."""
    controller = v0_grpc.ControllerStub(channel)
    answer = controller.ValidateVolumeCapabilities(v0.ValidateVolumeCapabilitiesRequest(
        volume_id="some-bucket/some/prefix", volume_capabilities=[v0_capability()]))
    assert answer.supported
    error = rpc_error(controller.ValidateVolumeCapabilities, v0.ValidateVolumeCapabilitiesRequest(
        volume_id="Not_A_Bucket", volume_capabilities=[v0_capability()]))
    assert error.code() == grpc.StatusCode.NOT_FOUND
