"""The socket and the process: stale sockets, 0700, refusing to steal a live socket, the command
line, and a clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from csi import main as csi_main
from csi.driver import Driver, DriverConfig
from csi.server import socket_path
from csi.v1 import csi_pb2, csi_pb2_grpc
from obsfs.errors import ConfigError
from tests.csi.helpers import create_request
from tests.s3server import free_port

REPO = Path(__file__).resolve().parents[2]


def probe(endpoint: str) -> bool:
    with grpc.insecure_channel(endpoint) as channel:
        return csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=5).ready.value


def test_socket_is_private(csi_endpoint: str) -> None:
    mode = os.stat(socket_path(csi_endpoint)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o700


@pytest.mark.parametrize("endpoint, path", [("unix:///run/csi/csi.sock", "/run/csi/csi.sock"),
                                            ("unix:/run/csi.sock", "/run/csi.sock")])
def test_endpoints(endpoint: str, path: str) -> None:
    assert socket_path(endpoint) == path


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:10000", "unix://relative/csi.sock", "/csi/csi.sock", ""])
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="expected unix:///absolute/path.sock"):
        socket_path(endpoint)


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "csi.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # the file stays after close, as after a crash
    driver = Driver(DriverConfig(endpoint=f"unix://{path}", mode="controller"))
    driver.start()
    try:
        assert probe(f"unix://{path}")
    finally:
        driver.stop(0)


def test_a_live_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "csi.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(ConfigError, match="another process is serving"):
            Driver(DriverConfig(endpoint=f"unix://{path}", mode="controller")).start()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_file_in_the_way_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "csi.sock"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="is not a socket"):
        Driver(DriverConfig(endpoint=f"unix://{path}", mode="controller")).start()
    assert path.read_text() == "keep me"


@pytest.mark.parametrize("argv, env, message", [
    ([], {}, "no endpoint: set --endpoint or CSI_ENDPOINT"),
    (["--mode", "controller"], {"CSI_ENDPOINT": "tcp://127.0.0.1:1"}, "endpoint 'tcp://127.0.0.1:1'"),
    (["--endpoint", "unix:///tmp/x.sock", "--mode", "node"], {}, "needs the node id: set --nodeid or NODE_ID"),
    (["--endpoint", "unix:///tmp/x.sock", "--mode", "controller", "--driver-name=-bad-"], {}, "driver name"),
    (["--endpoint", "unix:///tmp/x.sock", "--state-dir", "rel"], {"NODE_ID": "n1"}, "must be an absolute path"),
])
def test_unusable_configuration_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capfd: pytest.CaptureFixture[str], argv: list[str],
                                                     env: dict[str, str], message: str) -> None:
    for name in ("CSI_ENDPOINT", "NODE_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert csi_main.main(argv) == 2
    err = capfd.readouterr().err
    assert message in err and err.count("\n") == 1


def test_sigterm_lets_running_calls_finish_then_exits_0(tmp_path: Path) -> None:
    """The real entry point, configured through the environment as in a DaemonSet. A call that is
    still retrying an unreachable store when SIGTERM arrives gets its real answer, not CANCELLED."""
    endpoint = f"unix://{tmp_path / 'csi.sock'}"
    env = dict(os.environ, CSI_ENDPOINT=endpoint, NODE_ID="node-1")
    proc = subprocess.Popen([sys.executable, "-m", "csi.main", "--state-dir", str(tmp_path / "state"),
                             "--grace-period", "10"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "csi.sock").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the socket did not appear"
            time.sleep(0.05)
        assert probe(endpoint)
        assert (tmp_path / "state").is_dir()
        with grpc.insecure_channel(endpoint) as channel:
            secrets = {"accessKeyID": "ak", "secretAccessKey": "sk", "endpoint": f"http://127.0.0.1:{free_port()}"}
            running = csi_pb2_grpc.ControllerStub(channel).CreateVolume.future(
                create_request("pvc-in-flight", secrets), timeout=3)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            answer = running.exception()  # the handler's own answer: a cut connection says UNAVAILABLE too
            assert answer.code() == grpc.StatusCode.UNAVAILABLE
            assert "connection refused by the endpoint" in answer.details()
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err and "Traceback" not in err
