"""One driver object: the services a mode needs, behind one server on one socket.

``controller`` serves Identity and Controller, ``node`` Identity and Node, ``all`` everything
(the single-binary deployment of the spec's figure 3). Each service is served as ``csi.v1`` and,
through ``csi.v0adapter``, as ``csi.v0`` for Kubernetes 1.11. A service that a mode does not register
answers UNIMPLEMENTED by itself, which is what the spec asks for.

In node modes, start-up re-adopts the volumes an earlier run staged before the socket opens, so
that the first call kubelet makes already finds them (see ``csi.node`` for what survives what).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from csi import metrics, v0adapter
from csi.controller import ControllerServicer
from csi.defaultsecret import DefaultSecret
from csi.errors import CsiError
from csi.identity import Check, IdentityServicer, char_device_check, command_check, writable_dir_check
from csi.mounter import Mounter, SocketMounter
from csi.node import NodeServicer
from csi.server import CsiServer, Registration
from csi.v1 import csi_pb2_grpc
from obsfs.errors import ConfigError
from obsfs.options import ListenAddress, parse_listen_address

log = logging.getLogger(__name__)

DRIVER_NAME = "obs.csi.obsfs.dev"
MODES = ("controller", "node", "all")
FUSE_DEVICE = "/dev/fuse"
NODE_COMMANDS = ("mount", "umount", "fusermount3")
_DRIVER_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class DriverConfig:
    endpoint: str
    mode: str = "all"
    driver_name: str = DRIVER_NAME
    node_id: str = ""
    state_dir: str = "/var/lib/obsfs-csi"
    # Paths kubelet sends must lie inside it; empty accepts any absolute path (e.g. csi-sanity's).
    kubelet_dir: str = ""
    # The driver's own credential for requests without secrets (csi.defaultsecret); "" for none.
    credentials: str = ""
    # obsfs-mounter's socket: the daemons are then its children, not ours (see csi.mounterd).
    # Empty: run obsfs here, for a standalone plugin and when the daemons may die with it.
    mounter_socket: str = ""
    # HOST:PORT where the node service serves every volume's metrics (csi.metrics); "" for none.
    metrics_address: str = ""

    @property
    def serves_node(self) -> bool:
        return self.mode in ("node", "all")

    def check(self) -> None:
        """Refuse a configuration that cannot work, before anything binds or creates files."""
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if not _DRIVER_NAME.fullmatch(self.driver_name):
            raise ConfigError(f"driver name {self.driver_name!r}: at most 63 letters, digits, '-' and '.', "
                              "starting and ending with a letter or digit")
        if self.serves_node and not self.node_id:
            raise ConfigError(f"mode {self.mode} needs the node id: set --nodeid or NODE_ID")
        if self.node_id and len(self.node_id.encode()) > 256:
            raise ConfigError("the node id is longer than 256 bytes, the CSI limit")
        if self.serves_node and not os.path.isabs(self.state_dir):
            raise ConfigError(f"--state-dir {self.state_dir!r} must be an absolute path")
        if self.kubelet_dir and not os.path.isabs(self.kubelet_dir):
            raise ConfigError(f"--kubelet-dir {self.kubelet_dir!r} must be an absolute path")
        if self.mounter_socket and not os.path.isabs(self.mounter_socket):
            raise ConfigError(f"--mounter-socket {self.mounter_socket!r} must be an absolute path")
        if self.metrics_address:
            self.metrics_listen()

    def metrics_listen(self) -> ListenAddress:
        try:
            address = parse_listen_address(self.metrics_address)
        except ValueError as exc:
            raise ConfigError(f"--metrics-address {exc}") from None
        if address.path or not self.serves_node:
            raise ConfigError(f"--metrics-address {self.metrics_address!r}: a TCP HOST:PORT, in node or all mode")
        return address


def mounter_check(mounter: SocketMounter) -> Check:
    """Probe fails while the mounter does not answer: no volume can be staged or unstaged then."""
    def check() -> str | None:
        try:
            mounter.hello()
        except CsiError as exc:
            return str(exc)
        return None
    return check


class Driver:
    def __init__(self, config: DriverConfig) -> None:
        config.check()
        self.config = config
        self.ready = threading.Event()
        self._stop_metrics: Callable[[], None] | None = None
        checks: list[Check] = []
        default = DefaultSecret(config.credentials or None)
        default.check()
        self.node: NodeServicer | None = None
        if config.serves_node:
            mounter: Mounter
            if config.mounter_socket:  # /dev/fuse is the mounter's business then
                mounter = SocketMounter(config.mounter_socket)
                checks = [mounter_check(mounter)]
            else:
                mounter = Mounter()
                checks = [char_device_check(FUSE_DEVICE)]
            checks += [writable_dir_check(config.state_dir), *(command_check(name) for name in NODE_COMMANDS)]
            self.node = NodeServicer(config.node_id, config.state_dir, config.kubelet_dir or None, mounter,
                                     default_secret=default)
        identity = IdentityServicer(config.driver_name, self.ready, checks)
        controller = ControllerServicer(default) if config.mode in ("controller", "all") else None
        registrations: list[Registration] = [functools.partial(csi_pb2_grpc.add_IdentityServicer_to_server, identity)]
        if controller is not None:
            registrations.append(functools.partial(csi_pb2_grpc.add_ControllerServicer_to_server, controller))
        if self.node is not None:
            registrations.append(functools.partial(csi_pb2_grpc.add_NodeServicer_to_server, self.node))
        # CSI v0.3 for Kubernetes 1.11 on the same socket, relayed to the same servicers.
        registrations += v0adapter.registrations(identity, controller, self.node)
        self.server = CsiServer(config.endpoint, registrations)

    def start(self) -> None:
        if self.node is not None:
            os.makedirs(self.config.state_dir, mode=0o700, exist_ok=True)
            self.node.adopt()
        if self.node is not None and self.config.metrics_address:
            self._stop_metrics = metrics.serve(self.config.metrics_listen(), self.node.metric_sources)
        self.server.start()
        self.ready.set()
        log.info("%s ready in %s mode", self.config.driver_name, self.config.mode)

    def stop(self, grace: float) -> None:
        self.ready.clear()
        self.server.stop(grace)
        if self._stop_metrics is not None:
            self._stop_metrics()
