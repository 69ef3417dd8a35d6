"""The Controller service over the real socket against the moto server: what each call does to
the store (checked with boto3), its idempotent repeats, and the exact code for each bad input."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from csi.naming import label_for
from csi.pathpattern import PV_NAME, PVC_NAME, PVC_NAMESPACE
from csi.v1 import csi_pb2, csi_pb2_grpc
from csi.volumes import RECORD_NAME
from tests.csi.helpers import (
    GIB,
    MODE,
    block_capability,
    bucket_exists,
    create_request,
    mount_capability,
    rpc_error,
    store_secrets,
)
from tests.s3server import S3Server, refusing_port

Controller = csi_pb2_grpc.ControllerStub
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def record(s3: Any, bucket: str, prefix: str = "") -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=prefix + RECORD_NAME)["Body"].read()
    return dict(json.loads(body))


# -- CreateVolume ----------------------------------------------------------------------------------

def test_create_volume_makes_a_bucket(controller: Controller, s3: Any, secrets: dict[str, str],
                                      volume_name: str) -> None:
    request = create_request(volume_name, secrets, parameters={"uid": "1000", "attr_timeout": "5"})
    volume = controller.CreateVolume(request).volume
    assert volume.volume_id == volume_name  # pvc-<uid> is a valid bucket name, used as is
    assert volume.capacity_bytes == GIB
    assert dict(volume.volume_context) == {"uid": "1000", "attr_timeout": "5"}
    assert bucket_exists(s3, volume_name)
    assert record(s3, volume_name) == {"format": 1, "name": volume_name, "capacityBytes": GIB,
                                       "volumeContext": {"uid": "1000", "attr_timeout": "5"}}
    assert controller.CreateVolume(request).volume == volume  # a retry finds the same volume


def test_create_volume_derives_a_valid_bucket_from_an_odd_name(controller: Controller, s3: Any,
                                                               secrets: dict[str, str]) -> None:
    name = f"Data_Volume.{uuid.uuid4().hex}"
    volume = controller.CreateVolume(create_request(name, secrets)).volume
    assert volume.volume_id == label_for(name) != name.lower()
    assert bucket_exists(s3, volume.volume_id)


@pytest.mark.parametrize("change", [{"capacity": 2 * GIB}, {"parameters": {"uid": "1001"}}])
def test_same_name_incompatible_request_already_exists(controller: Controller, secrets: dict[str, str],
                                                       volume_name: str, change: dict[str, Any]) -> None:
    controller.CreateVolume(create_request(volume_name, secrets, parameters={"uid": "1000"}))
    request = create_request(volume_name, secrets, **{"parameters": {"uid": "1000"}, **change})
    error = rpc_error(controller.CreateVolume, request)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert volume_name in error.details()


def test_a_smaller_request_is_satisfied_by_the_existing_volume(controller: Controller, secrets: dict[str, str],
                                                               volume_name: str) -> None:
    controller.CreateVolume(create_request(volume_name, secrets, capacity=2 * GIB))
    again = controller.CreateVolume(create_request(volume_name, secrets, capacity=GIB))
    assert again.volume.capacity_bytes == 2 * GIB


def test_create_volume_will_not_adopt_foreign_data(controller: Controller, s3: Any, secrets: dict[str, str],
                                                   make_bucket: Callable[[], str]) -> None:
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="theirs.txt", Body=b"data")
    error = rpc_error(controller.CreateVolume, create_request(bucket, secrets))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "theirs.txt" in error.details()
    assert keys(s3, bucket) == ["theirs.txt"]


def test_shared_bucket_prefix_volume(controller: Controller, s3: Any, secrets: dict[str, str],
                                     make_bucket: Callable[[], str], volume_name: str) -> None:
    shared = make_bucket()
    s3.put_object(Bucket=shared, Key="other/keep.txt", Body=b"neighbour")
    request = create_request(volume_name, secrets, parameters={"bucket": shared})
    volume = controller.CreateVolume(request).volume
    assert volume.volume_id == f"{shared}/{volume_name}"
    assert dict(volume.volume_context) == {}
    marker = s3.head_object(Bucket=shared, Key=f"{volume_name}/")
    assert marker["ContentType"] == "application/x-directory" and marker["ContentLength"] == 0
    assert record(s3, shared, f"{volume_name}/")["capacityBytes"] == GIB
    assert controller.CreateVolume(request).volume == volume

    s3.put_object(Bucket=shared, Key=f"{volume_name}/dir/file.txt", Body=b"x")
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=secrets))
    assert keys(s3, shared) == ["other/keep.txt"]
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=secrets))


def test_shared_bucket_must_exist(controller: Controller, secrets: dict[str, str], volume_name: str) -> None:
    request = create_request(volume_name, secrets, parameters={"bucket": f"missing-{uuid.uuid4().hex[:12]}"})
    error = rpc_error(controller.CreateVolume, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "does not exist" in error.details()


def _claim(namespace: str, name: str, pv: str) -> dict[str, str]:
    """What external-provisioner adds with --extra-create-metadata."""
    return {PVC_NAMESPACE: namespace, PVC_NAME: name, PV_NAME: pv}


def test_path_pattern_places_volumes_by_claim(controller: Controller, s3: Any, secrets: dict[str, str],
                                              make_bucket: Callable[[], str]) -> None:
    shared = make_bucket()
    by_claim = {"bucket": shared, "prefix": "/teams/a/",
                "pathPattern": "${pvc.metadata.namespace}/${pvc.metadata.name}"}
    s3.put_object(Bucket=shared, Key="teams/a/team-x/other/keep.txt", Body=b"neighbour")
    request = create_request("pvc-1", secrets, parameters={**by_claim, **_claim("team-x", "data", "pvc-1")})
    volume = controller.CreateVolume(request).volume
    assert volume.volume_id == f"{shared}/teams/a/team-x/data"
    assert record(s3, shared, "teams/a/team-x/data/")["claim"] == "team-x/data"
    assert s3.head_object(Bucket=shared, Key="teams/a/team-x/data/")["ContentLength"] == 0
    assert controller.CreateVolume(request).volume == volume  # a retry finds its own volume

    # The claim deleted and made again while the old PV was retained: same prefix, another volume.
    again = create_request("pvc-2", secrets, parameters={**by_claim, **_claim("team-x", "data", "pvc-2")})
    error = rpc_error(controller.CreateVolume, again)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "PVC team-x/data" in error.details() and "already volume pvc-1 (PVC team-x/data)" in error.details()

    # Another StorageClass whose pattern gives a prefix above that volume, or one below another.
    by_namespace = {"bucket": shared, "prefix": "teams/a", "pathPattern": "${pvc.metadata.namespace}"}
    error = rpc_error(controller.CreateVolume, create_request(
        "pvc-3", secrets, parameters={**by_namespace, **_claim("team-x", "all", "pvc-3")}))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "teams/a/team-x/" in error.details()
    outer = controller.CreateVolume(create_request(
        "pvc-4", secrets, parameters={**by_namespace, **_claim("team-y", "all", "pvc-4")})).volume
    error = rpc_error(controller.CreateVolume, create_request(
        "pvc-5", secrets, parameters={**by_claim, **_claim("team-y", "data", "pvc-5")}))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"inside volume pvc-4 (PVC team-y/all) at {shared}/teams/a/team-y" in error.details()

    # Deleting a volume removes its own prefix only.
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=secrets))
    assert keys(s3, shared) == ["teams/a/team-x/other/keep.txt", "teams/a/team-y/",
                                f"teams/a/team-y/{RECORD_NAME}"]
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=outer.volume_id, secrets=secrets))
    assert keys(s3, shared) == ["teams/a/team-x/other/keep.txt"]


def test_path_pattern_without_claim_metadata_is_invalid(controller: Controller, secrets: dict[str, str],
                                                        make_bucket: Callable[[], str], volume_name: str) -> None:
    parameters = {"bucket": make_bucket(), "pathPattern": "${pvc.metadata.namespace}/${pvc.metadata.name}"}
    error = rpc_error(controller.CreateVolume, create_request(volume_name, secrets, parameters=parameters))
    assert error.code() == INVALID and "--extra-create-metadata" in error.details()


def test_a_prefix_volume_is_never_made_inside_a_whole_bucket_volume(
        controller: Controller, secrets: dict[str, str], volume_name: str) -> None:
    bucket = controller.CreateVolume(create_request(volume_name, secrets)).volume.volume_id
    error = rpc_error(controller.CreateVolume, create_request(f"{volume_name}-inner", secrets,
                                                              parameters={"bucket": bucket}))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and f"inside volume {volume_name}" in error.details()
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=bucket, secrets=secrets))


# -- DeleteVolume ----------------------------------------------------------------------------------

def test_delete_volume_removes_every_object_then_the_bucket(controller: Controller, s3: Any,
                                                            secrets: dict[str, str], volume_name: str) -> None:
    volume_id = controller.CreateVolume(create_request(volume_name, secrets)).volume.volume_id
    # More than one listing page and one delete batch (1000 keys each).
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: s3.put_object(Bucket=volume_id, Key=f"d{n % 7}/f{n:05}", Body=b"x"), range(1010)))
    request = csi_pb2.DeleteVolumeRequest(volume_id=volume_id, secrets=secrets)
    controller.DeleteVolume(request)
    assert not bucket_exists(s3, volume_id)
    controller.DeleteVolume(request)  # already gone: OK


@pytest.mark.parametrize("volume_id", ["no-such-bucket-0123456789", "no-such-bucket-0123456789/vol",
                                       "Not_A_Valid_Bucket"])
def test_delete_of_a_volume_that_never_existed_succeeds(controller: Controller, secrets: dict[str, str],
                                                        volume_id: str) -> None:
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id, secrets=secrets))


def test_delete_leaves_data_it_did_not_provision(controller: Controller, s3: Any, secrets: dict[str, str],
                                                 make_bucket: Callable[[], str]) -> None:
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="static/data.bin", Body=b"precious")
    for volume_id in (bucket, f"{bucket}/static"):
        error = rpc_error(controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume_id, secrets=secrets))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "left alone" in error.details()
    assert keys(s3, bucket) == ["static/data.bin"]


# -- ValidateVolumeCapabilities --------------------------------------------------------------------

def test_validate_confirms_mount_in_every_access_mode(controller: Controller, secrets: dict[str, str],
                                                      volume_name: str) -> None:
    volume = controller.CreateVolume(create_request(volume_name, secrets, parameters={"uid": "7"})).volume
    capabilities = [mount_capability(mode) for mode in MODE.values() if mode != MODE.UNKNOWN]
    response = controller.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=volume.volume_id, volume_capabilities=capabilities, volume_context=volume.volume_context,
        parameters={"uid": "7"}, secrets=secrets))
    assert list(response.confirmed.volume_capabilities) == capabilities
    assert dict(response.confirmed.volume_context) == {"uid": "7"}


def test_validate_never_confirms_block(controller: Controller, secrets: dict[str, str], volume_name: str) -> None:
    volume_id = controller.CreateVolume(create_request(volume_name, secrets)).volume.volume_id
    response = controller.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=volume_id, volume_capabilities=[mount_capability(), block_capability()], secrets=secrets))
    assert not response.HasField("confirmed") and "block access is not supported" in response.message


def test_validate_accepts_static_volumes(controller: Controller, s3: Any, secrets: dict[str, str],
                                         make_bucket: Callable[[], str]) -> None:
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="team/a.txt", Body=b"x")
    for volume_id in (bucket, f"{bucket}/team"):
        response = controller.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume_id, volume_capabilities=[mount_capability(MODE.MULTI_NODE_READER_ONLY)],
            secrets=secrets))
        assert response.HasField("confirmed")


@pytest.mark.parametrize("volume_id", ["no-such-bucket-0123456789", "Not_A_Valid_Bucket"])
def test_validate_unknown_volume_is_not_found(controller: Controller, secrets: dict[str, str], volume_id: str,
                                              make_bucket: Callable[[], str]) -> None:
    for vid in (volume_id, f"{make_bucket()}/empty-prefix"):
        error = rpc_error(controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=vid, volume_capabilities=[mount_capability()], secrets=secrets))
        assert error.code() == grpc.StatusCode.NOT_FOUND


# -- ControllerExpandVolume and capabilities -------------------------------------------------------

def test_expand_updates_the_recorded_capacity(controller: Controller, s3: Any, secrets: dict[str, str],
                                              volume_name: str) -> None:
    volume_id = controller.CreateVolume(create_request(volume_name, secrets)).volume.volume_id

    def expand(capacity: int) -> csi_pb2.ControllerExpandVolumeResponse:
        return controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=capacity), secrets=secrets,
            volume_capability=mount_capability()))

    grown = expand(3 * GIB)
    assert (grown.capacity_bytes, grown.node_expansion_required) == (3 * GIB, False)
    assert record(s3, volume_id)["capacityBytes"] == 3 * GIB
    assert expand(3 * GIB).capacity_bytes == 3 * GIB  # repeat
    assert expand(2 * GIB).capacity_bytes == 3 * GIB  # never shrinks
    assert controller.CreateVolume(create_request(volume_name, secrets)).volume.capacity_bytes == 3 * GIB


def test_expand_unknown_and_static_volumes(controller: Controller, s3: Any, secrets: dict[str, str],
                                           make_bucket: Callable[[], str]) -> None:
    static = make_bucket()
    s3.put_object(Bucket=static, Key="a.txt", Body=b"x")
    for volume_id, code in (("no-such-bucket-0123456789", grpc.StatusCode.NOT_FOUND),
                            ("Not_A_Valid_Bucket", grpc.StatusCode.NOT_FOUND),
                            (static, grpc.StatusCode.FAILED_PRECONDITION)):
        error = rpc_error(controller.ControllerExpandVolume, csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=GIB), secrets=secrets))
        assert error.code() == code, volume_id


def test_controller_capabilities(controller: Controller) -> None:
    caps = controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest()).capabilities
    rpc = csi_pb2.ControllerServiceCapability.RPC
    assert sorted(c.rpc.type for c in caps) == sorted([rpc.CREATE_DELETE_VOLUME, rpc.EXPAND_VOLUME])


# -- bad input -------------------------------------------------------------------------------------

def _create(secrets: dict[str, str], overrides: dict[str, Any]) -> csi_pb2.CreateVolumeRequest:
    """A good CreateVolume request with some fields replaced, or removed where the override is None."""
    fields: dict[str, Any] = {"name": "pvc-bad-input", "volume_capabilities": [mount_capability()],
                              "capacity_range": csi_pb2.CapacityRange(required_bytes=GIB), "secrets": secrets}
    fields.update(overrides)
    return csi_pb2.CreateVolumeRequest(**{name: value for name, value in fields.items() if value is not None})


BAD_CREATES: list[tuple[str, dict[str, Any], str]] = [
    ("no name", {"name": None}, "name is missing"),
    ("no capabilities", {"volume_capabilities": None}, "volume_capabilities is missing"),
    ("block", {"volume_capabilities": [block_capability()]}, "block access is not supported"),
    ("unknown mode", {"volume_capabilities": [mount_capability(MODE.UNKNOWN)]}, "access mode 0"),
    ("unknown parameter", {"parameters": {"colour": "blue"}}, "unknown StorageClass parameter 'colour'"),
    ("bad option value", {"parameters": {"uid": "root"}}, "StorageClass parameter 'uid'"),
    ("invalid bucket", {"parameters": {"bucket": "My_Bucket"}}, "'My_Bucket' is not a valid bucket name"),
    ("no secrets", {"secrets": None}, "csi.storage.k8s.io/provisioner-secret-name"),
    ("negative capacity", {"capacity_range": csi_pb2.CapacityRange(required_bytes=-1)}, "must not be negative"),
    ("from snapshot", {"volume_content_source": csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id="s"))}, "remove dataSource"),
]


@pytest.mark.parametrize("overrides, message", [c[1:] for c in BAD_CREATES], ids=[c[0] for c in BAD_CREATES])
def test_bad_create_requests(controller: Controller, secrets: dict[str, str], overrides: dict[str, Any],
                             message: str) -> None:
    error = rpc_error(controller.CreateVolume, _create(secrets, overrides))
    assert (error.code(), message in error.details()) == (INVALID, True), error.details()


@pytest.mark.parametrize("key, value", [("secretAccessKey", ""), ("signature", "v3"), ("usePathStyle", "maybe"),
                                        ("endpoint", "obs.example.com")])
def test_bad_secrets_name_the_key(controller: Controller, moto: S3Server, volume_name: str, key: str,
                                  value: str) -> None:
    error = rpc_error(controller.CreateVolume, create_request(volume_name, store_secrets(moto, **{key: value})))
    assert error.code() == INVALID and key in error.details()


def test_other_bad_requests(controller: Controller, secrets: dict[str, str]) -> None:
    cases: list[tuple[Callable[..., Any], Any, str]] = [
        (controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(secrets=secrets), "volume_id is missing"),
        (controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_capabilities=[mount_capability()], secrets=secrets), "volume_id is missing"),
        (controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id="some-bucket", secrets=secrets), "volume_capabilities is missing"),
        (controller.ControllerExpandVolume, csi_pb2.ControllerExpandVolumeRequest(
            volume_id="some-bucket", secrets=secrets), "capacity_range is missing"),
        (controller.ControllerExpandVolume, csi_pb2.ControllerExpandVolumeRequest(
            volume_id="some-bucket", capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
            volume_capability=block_capability(), secrets=secrets), "block access"),
    ]
    for call, request, message in cases:
        error = rpc_error(call, request)
        assert (error.code(), message in error.details()) == (INVALID, True), error.details()


def test_unreachable_store_is_unavailable_before_the_deadline(controller: Controller, moto: S3Server,
                                                              volume_name: str) -> None:
    with refusing_port() as port:
        secrets = store_secrets(moto, endpoint=f"http://127.0.0.1:{port}")
        start = time.monotonic()
        error = rpc_error(controller.CreateVolume, create_request(volume_name, secrets), timeout=2.5)
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "endpoint" in error.details()
    assert time.monotonic() - start < 2.5


def test_calls_we_do_not_offer_are_unimplemented(controller: Controller, channel: grpc.Channel) -> None:
    error = rpc_error(controller.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(volume_id="b"))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    error = rpc_error(csi_pb2_grpc.NodeStub(channel).NodeGetInfo, csi_pb2.NodeGetInfoRequest())
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # controller mode serves no Node service


# -- secrets in logs -------------------------------------------------------------------------------

def test_secret_values_never_appear_in_logs_or_errors(controller: Controller, moto: S3Server, volume_name: str,
                                                      caplog: pytest.LogCaptureFixture,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    access, secret = f"AK{uuid.uuid4().hex}", f"SK{uuid.uuid4().hex}"
    secrets = store_secrets(moto, accessKeyID=access, secretAccessKey=secret)  # moto takes any keys
    caplog.set_level(logging.DEBUG)
    volume = controller.CreateVolume(create_request(volume_name, secrets)).volume
    errors = [rpc_error(controller.CreateVolume, request, timeout=2.5) for request in (
        create_request(volume_name, secrets, capacity=5 * GIB),
        create_request(volume_name, {**secrets, "signature": "v9"}),
        create_request(volume_name, {**secrets, "endpoint": f"http://{secret}.invalid"}))]
    assert [e.code() for e in errors] == [grpc.StatusCode.ALREADY_EXISTS, INVALID, grpc.StatusCode.UNAVAILABLE]
    details = [e.details() for e in errors]
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=secrets))
    out, err = capfd.readouterr()
    assert "secretAccessKey" in caplog.text and f"CreateVolume volume={volume_name} code=OK" in caplog.text
    for text in (caplog.text, out, err, *details):
        assert access not in text and secret not in text
