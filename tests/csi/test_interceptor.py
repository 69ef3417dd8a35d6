"""The interceptor over a real socket: each error type becomes its status, bugs become INTERNAL with
one traceback, every call is logged once, and secrets are redacted from logged bodies."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from csi import errors
from csi.interceptor import REDACTED, redacted, volume_of
from csi.server import CsiServer
from csi.v1 import csi_pb2, csi_pb2_grpc
from obsfs import errors as obsfs_errors


class FailingIdentity(csi_pb2_grpc.IdentityServicer):
    """GetPluginInfo raises whatever the test put in ``exc``."""

    exc: BaseException = RuntimeError()

    def GetPluginInfo(self, request: Any, context: Any) -> Any:
        raise self.exc


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FailingIdentity, Any]]:
    servicer = FailingIdentity()
    endpoint = f"unix://{tmp_path_factory.mktemp('intercept') / 'csi.sock'}"
    server = CsiServer(endpoint, [functools.partial(csi_pb2_grpc.add_IdentityServicer_to_server, servicer)])
    server.start()
    with grpc.insecure_channel(endpoint) as channel:
        yield servicer, csi_pb2_grpc.IdentityStub(channel)
    server.stop(0)


CASES = [
    (errors.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound("gone"), grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists("twice"), grpc.StatusCode.ALREADY_EXISTS),
    (errors.Aborted("busy"), grpc.StatusCode.ABORTED),
    (errors.FailedPrecondition("not now"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (obsfs_errors.BadCredentials("key refused"), grpc.StatusCode.UNAUTHENTICATED),
    (obsfs_errors.AccessDenied("denied"), grpc.StatusCode.PERMISSION_DENIED),
    (obsfs_errors.BucketNotFound("no bucket"), grpc.StatusCode.NOT_FOUND),
    (obsfs_errors.NotFound("no key"), grpc.StatusCode.NOT_FOUND),
    (obsfs_errors.TemporaryFailure("timeout"), grpc.StatusCode.UNAVAILABLE),
    (obsfs_errors.ConfigError("bad option"), grpc.StatusCode.INVALID_ARGUMENT),
    (obsfs_errors.Conflict("not empty"), grpc.StatusCode.FAILED_PRECONDITION),
    (NotImplementedError("Method not implemented!"), grpc.StatusCode.UNIMPLEMENTED),
]


@pytest.mark.parametrize("exc, code", CASES, ids=[type(exc).__name__ for exc, _ in CASES])
def test_known_errors_become_their_status(failing: tuple[FailingIdentity, Any], caplog: pytest.LogCaptureFixture,
                                          exc: Exception, code: grpc.StatusCode) -> None:
    servicer, stub = failing
    servicer.exc = exc
    with pytest.raises(grpc.RpcError) as info:
        stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.value.code() == code
    assert str(exc) in info.value.details()
    lines = [r.getMessage() for r in caplog.records if r.name == "csi.interceptor"]
    assert len(lines) == 1 and lines[0].startswith(f"GetPluginInfo volume=- code={code.name} ")
    assert not any(r.exc_info for r in caplog.records)


def test_credential_errors_name_the_secret_keys(failing: tuple[FailingIdentity, Any]) -> None:
    servicer, stub = failing
    servicer.exc = obsfs_errors.BadCredentials("LIST bucket b: the server does not know this access key")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert "accessKeyID and secretAccessKey" in info.value.details()


def test_a_bug_is_internal_with_one_traceback(failing: tuple[FailingIdentity, Any],
                                              caplog: pytest.LogCaptureFixture) -> None:
    servicer, stub = failing
    servicer.exc = KeyError("private detail")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "private detail" not in info.value.details() and "log" in info.value.details()
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1 and with_traceback[0].levelno == logging.ERROR
    assert "private detail" in caplog.text  # the operator sees it, the CO does not


def test_redacted_copy_keeps_keys_and_other_fields() -> None:
    request = csi_pb2.NodeStageVolumeRequest(volume_id="b/v", secrets={"accessKeyID": "AK", "secretAccessKey": "SK"},
                                             volume_context={"uid": "1000"})
    copy = redacted(request)
    assert dict(copy.secrets) == {"accessKeyID": REDACTED, "secretAccessKey": REDACTED}
    assert copy.volume_id == "b/v" and dict(copy.volume_context) == {"uid": "1000"}
    assert dict(request.secrets) == {"accessKeyID": "AK", "secretAccessKey": "SK"}


def test_volume_of() -> None:
    assert volume_of(csi_pb2.DeleteVolumeRequest(volume_id="b/v")) == "b/v"
    assert volume_of(csi_pb2.CreateVolumeRequest(name="pvc-1")) == "pvc-1"
    assert volume_of(csi_pb2.ProbeRequest()) == "-"
