"""A real obsfs-csi driver on a real unix socket, and stubs that reach it through the socket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi.driver import DRIVER_NAME, Driver, DriverConfig
from csi.v1 import csi_pb2_grpc
from tests.csi.helpers import store_secrets
from tests.csi.kubelet import Kubelet, NodeEnv, make_root, remove_root, unmount_everything
from tests.s3server import S3Server


@pytest.fixture(scope="session")
def csi_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint of one controller-mode driver shared by the whole session."""
    endpoint = f"unix://{tmp_path_factory.mktemp('csi') / 'csi.sock'}"
    driver = Driver(DriverConfig(endpoint=endpoint, mode="controller"))
    driver.start()
    yield endpoint
    driver.stop(0)


@pytest.fixture(scope="session")
def channel(csi_endpoint: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(csi_endpoint) as chan:
        yield chan


@pytest.fixture
def identity(channel: grpc.Channel) -> csi_pb2_grpc.IdentityStub:
    return csi_pb2_grpc.IdentityStub(channel)


@pytest.fixture
def controller(channel: grpc.Channel) -> csi_pb2_grpc.ControllerStub:
    return csi_pb2_grpc.ControllerStub(channel)


@pytest.fixture
def secrets(moto: S3Server) -> dict[str, str]:
    return store_secrets(moto)


@pytest.fixture
def volume_name() -> str:
    """A fresh name in the shape external-provisioner uses (pvc-<uid>)."""
    return f"pvc-{uuid.uuid4()}"


def start_node_driver(root: Path, state_dir: Path) -> tuple[Driver, str]:
    socket_dir = root / "plugins" / DRIVER_NAME
    socket_dir.mkdir(parents=True, exist_ok=True)
    endpoint = f"unix://{socket_dir / 'csi.sock'}"
    driver = Driver(DriverConfig(endpoint=endpoint, mode="all", node_id="node-1", state_dir=str(state_dir),
                                 kubelet_dir=str(root)))
    driver.start()
    return driver, endpoint


@pytest.fixture
def node_env(tmp_path: Path, secrets: dict[str, str]) -> Iterator[NodeEnv]:
    """Everything is unmounted in teardown, also when the test failed halfway."""
    root = make_root()
    state_dir = tmp_path / "state"
    driver, endpoint = start_node_driver(root, state_dir)
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
