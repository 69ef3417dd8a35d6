"""Identity over the socket: name, version, capabilities and a Probe that reflects readiness."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import pytest

import obsfs
from csi.driver import Driver, DriverConfig
from csi.identity import IdentityServicer
from csi.v1 import csi_pb2, csi_pb2_grpc


def test_plugin_info(identity: csi_pb2_grpc.IdentityStub) -> None:
    info = identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert (info.name, info.vendor_version) == ("obs.csi.obsfs.dev", obsfs.__version__)


def test_plugin_capabilities(identity: csi_pb2_grpc.IdentityStub) -> None:
    caps = identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest()).capabilities
    service = csi_pb2.PluginCapability.Service
    expansion = csi_pb2.PluginCapability.VolumeExpansion
    assert {(c.WhichOneof("type"), c.service.type or c.volume_expansion.type) for c in caps} == {
        ("service", service.CONTROLLER_SERVICE), ("volume_expansion", expansion.ONLINE)}


def test_probe_ready(identity: csi_pb2_grpc.IdentityStub) -> None:
    response = identity.Probe(csi_pb2.ProbeRequest())
    assert response.HasField("ready") and response.ready.value is True


def test_probe_not_ready_while_starting() -> None:
    starting = IdentityServicer("obs.csi.obsfs.dev", threading.Event())
    response = starting.Probe(csi_pb2.ProbeRequest(), None)
    assert response.HasField("ready") and response.ready.value is False


def test_probe_fails_when_a_node_dependency_goes_missing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    endpoint = f"unix://{tmp_path / 'csi.sock'}"
    driver = Driver(DriverConfig(endpoint=endpoint, mode="node", node_id="node-1", state_dir=str(state)))
    driver.start()
    try:
        with grpc.insecure_channel(endpoint) as channel:
            stub = csi_pb2_grpc.IdentityStub(channel)
            assert stub.Probe(csi_pb2.ProbeRequest()).ready.value is True
            shutil.rmtree(state)
            with pytest.raises(grpc.RpcError) as info:
                stub.Probe(csi_pb2.ProbeRequest())
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert f"state directory {state} is missing" in info.value.details()
            with pytest.raises(grpc.RpcError) as info:  # node mode serves no Controller
                csi_pb2_grpc.ControllerStub(channel).ControllerGetCapabilities(
                    csi_pb2.ControllerGetCapabilitiesRequest())
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        driver.stop(0)
