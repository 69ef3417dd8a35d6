"""A real obsfs-csi driver on a real unix socket, and stubs that reach it through the socket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi.driver import Driver, DriverConfig
from csi.v1 import csi_pb2_grpc
from tests.csi.helpers import store_secrets
from tests.csi.kubelet import NodeEnv, node_environment
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


@pytest.fixture
def node_env(tmp_path: Path, secrets: dict[str, str]) -> Iterator[NodeEnv]:
    with node_environment(tmp_path, secrets) as env:
        yield env
