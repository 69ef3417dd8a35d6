"""The daemon's control endpoint: Prometheus metrics and a status report, over HTTP.

Every mount listens on a private unix socket next to its pid file (``obsfs status`` reads it);
``-o metrics=HOST:PORT`` or ``-o metrics=unix:/PATH`` adds a listener for a Prometheus server
(the CSI node plugin uses a unix socket per volume). The server runs in the daemon's trio loop,
so the gauges read the filesystem's state in the thread that owns it, and no thread is started.

Only two paths exist, both GET: ``/metrics`` (Prometheus's text format, made by obsfs.metrics)
and ``/status`` (JSON). A request must arrive within a few seconds and be
small; the answer is sent whole and the connection closed. Nothing here can change the mount.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from obsfs.errors import ConfigError
from obsfs.metrics import CONTENT_TYPE
from obsfs.options import ListenAddress

log = logging.getLogger(__name__)

_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Routes:
    """What the two paths answer, each made when asked."""

    metrics: Callable[[], bytes]
    status: Callable[[], bytes]


async def _listen(address: ListenAddress) -> list[trio.SocketListener]:
    if not address.path:
        try:
            return await trio.open_tcp_listeners(address.port, host=address.host or None)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address} for metrics: {exc.strerror}") from None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address.path)  # left by a daemon that was killed
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(address.path)
        os.chmod(address.path, 0o600)  # the status names files; only the mount's owner may ask
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from None
    return [trio.SocketListener(sock)]


async def serve(addresses: list[ListenAddress], routes: Routes, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on every address (all bound before ``started``) and answer until cancelled."""
    listeners = [listener for address in addresses for listener in await _listen(address)]
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(trio.serve_listeners, lambda stream: _answer(stream, routes), [listener])
            task_status.started()
    finally:
        for address in addresses:
            if address.path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address.path)


async def _answer(stream: trio.abc.Stream, routes: Routes) -> None:
    async with stream:
        with trio.move_on_after(_REQUEST_TIMEOUT):
            head = b""
            while b"\r\n\r\n" not in head and len(head) < _MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            method, _, rest = head.partition(b"\r\n")[0].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if method != "GET":
                status, body, kind = "405 Method Not Allowed", b"only GET\n", "text/plain"
            elif path == "/metrics":
                status, body, kind = "200 OK", routes.metrics(), CONTENT_TYPE
            elif path == "/status":
                status, body, kind = "200 OK", routes.status(), "application/json"
            else:
                status, body, kind = "404 Not Found", b"try /metrics or /status\n", "text/plain"
            header = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(header + body)


def fetch(path: str, what: str, timeout: float = 10.0) -> bytes:
    """GET ``what`` from the control socket at ``path`` (blocking: for ``obsfs status``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f"GET {what} HTTP/1.1\r\nHost: obsfs\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.partition(b"\r\n")[0].decode("latin-1")
    if not status_line.startswith("HTTP/1.1 200"):
        raise OSError(f"the daemon answered {status_line!r}")
    return body
