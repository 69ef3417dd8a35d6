"""The grpcio server on the CSI unix socket, and how it starts and stops.

kubelet and the sidecars reach the plugin only through ``unix:///…/csi.sock``. A plugin that
crashed leaves its socket file behind, so start-up removes it, but only after checking that it
is a socket and that nobody answers on it: deleting another running plugin's socket would
silently cut that plugin off. The socket is created under umask 077 and then chmod-ed to 0700:
the chmod alone would leave a moment in which any local user could connect and call
CreateVolume with the CO's secrets in hand.

SIGTERM (kubelet stopping the pod) and SIGINT stop the server with a grace period in which
running calls may finish; new calls are refused at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from csi.interceptor import CsiInterceptor
from obsfs.errors import ConfigError

log = logging.getLogger(__name__)

# Adds one servicer to a server, e.g. functools.partial(add_IdentityServicer_to_server, servicer).
Registration = Callable[[Any], None]


def socket_path(endpoint: str) -> str:
    """The filesystem path in ``unix:///abs/path.sock`` (``unix:/abs/path.sock`` works too)."""
    scheme, colon, rest = endpoint.partition(":")
    path = rest[2:] if rest.startswith("//") else rest
    if scheme != "unix" or not colon or not path.startswith("/"):
        raise ConfigError(f"endpoint {endpoint!r}: expected unix:///absolute/path.sock; CSI serves only "
                          "on unix sockets")
    return path


def remove_stale_socket(path: str, flag: str = "--endpoint") -> None:
    """Delete a socket file that nobody listens on; refuse anything else at ``path``."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket; remove it or choose another {flag}")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError:
            log.info("removing stale socket %s", path)
            os.unlink(path)
            return
    raise ConfigError(f"another process is serving on {path}; stop it first")


class CsiServer:
    """One grpcio server with the CSI interceptor, bound to one unix socket."""

    def __init__(self, endpoint: str, registrations: Sequence[Registration], max_workers: int = 8) -> None:
        self.path = socket_path(endpoint)
        self._registrations = registrations
        self._max_workers = max_workers
        self._server: Any = None

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        remove_stale_socket(self.path)
        server = grpc.server(ThreadPoolExecutor(self._max_workers, thread_name_prefix="csi"),
                             interceptors=[CsiInterceptor()])
        for register in self._registrations:
            register(server)
        old_umask = os.umask(0o077)
        try:
            server.add_insecure_port(f"unix:{self.path}")
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o700)
        server.start()
        self._server = server
        log.info("serving CSI on unix://%s", self.path)

    def stop(self, grace: float) -> None:
        """Refuse new calls, give running ones ``grace`` seconds, then cancel them."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None


def serve_until_signalled(stop_server: Callable[[float], None], grace: float) -> int:
    """Block until SIGTERM or SIGINT, then call ``stop_server(grace)``; returns the signal number."""
    received: list[int] = []
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("%s received; stopping, running calls get %.0f s", signal.Signals(received[0]).name, grace)
    stop_server(grace)
    return received[0]
