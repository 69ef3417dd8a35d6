"""``obsfs-mounter``: the long-lived process whose children the obsfs daemons are.

The node plugin is restarted and upgraded like any container; a FUSE daemon must not be, or
every pod on the node that uses its volume gets ENOTCONN. So the plugin does not start daemons:
it asks this service, over a root-only unix socket, to run ``obsfs mount`` and ``obsfs umount``
(see ``csi.mounterproto`` for the protocol). The service runs in a container of its own that is
never rolled with the plugin, so the daemons live in its PID namespace and survive the plugin.
Bind mounts stay with the plugin: a kernel mount outlives the process that made it.

This process must be small and boring, because restarting it ends every mount on the node: it
keeps no state (the pid files of ``obsfs mount`` and the kernel's mount table are the truth),
knows four ops, and never sees a store key. One thread per connection, because an ``obsfs
umount`` can wait minutes for a flush and must not hold up the mounts of other volumes; a
second call on a mount point that is busy gets ABORTED at once, as in the plugin.

Only root may connect: the socket is 0600 in a 0700 directory, and the peer's uid (SO_PEERCRED)
is checked as well, so a loosened directory mode does not open it to other users.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from typing import Any

from csi.errors import CsiError, PermissionDenied
from csi.locks import VolumeLocks
from csi.mounter import MOUNT_TIMEOUT, UMOUNT_TIMEOUT, Mounter, mount_args
from csi.mounterproto import MAX_LINE, VERSION, Request, answer, encode, parse_request, refusal
from csi.node import kubelet_path
from csi.server import remove_stale_socket, serve_until_signalled
from obsfs import __version__
from obsfs.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/obsfs-csi/mounter.sock"
REQUEST_TIMEOUT = 10.0  # for the request line to arrive; the work itself has obsfs's own deadlines
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(conn: socket.socket) -> int:
    _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


class MounterService:
    def __init__(self, socket_path: str, kubelet_dir: str | None = None, mounter: Mounter | None = None) -> None:
        self.path = socket_path
        self._kubelet_dir = kubelet_dir or None
        self._mounter = mounter or Mounter()
        self.locks = VolumeLocks()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        remove_stale_socket(self.path, "--socket")
        server = _Server(self.path, self)
        old_umask = os.umask(0o077)  # no moment in which the socket is open to others
        try:
            server.server_bind()
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="mounter accept", daemon=True)
        self._thread.start()
        log.info("obsfs mounter %s serving protocol v%d on %s", __version__, VERSION, self.path)

    def stop(self) -> None:
        """Stop accepting. The daemons keep running; calls in progress run to their end."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- one connection --------------------------------------------------------------------------
    def serve(self, conn: socket.socket) -> None:
        try:
            uid = peer_uid(conn)
            conn.settimeout(REQUEST_TIMEOUT)
            # Read the request even from a peer that is refused: closing on unread data would
            # cut the client off before it reads why (EPIPE on its send).
            line = conn.makefile("rb").readline(MAX_LINE + 1)
            if uid != 0:
                raise PermissionDenied(f"only root may use the obsfs mounter; uid {uid} may not")
            request = parse_request(line)
            conn.settimeout(None)
            reply = answer(self.dispatch(request))
        except CsiError as exc:
            log.warning("refused a request: %s", exc)
            reply = refusal(exc)
        except TimeoutError:
            log.warning("a client sent no request within %.0f s", REQUEST_TIMEOUT)
            return
        try:
            conn.sendall(encode(reply))
        except OSError as exc:  # the plugin gave up or was restarted; its retry finds the result
            log.info("the client left before the answer (%s)", exc.strerror)

    def dispatch(self, request: Request) -> dict[str, Any]:
        if request.op == "hello":
            return {"versions": [VERSION], "obsfs": __version__, "pid": os.getpid()}
        mountpoint = kubelet_path(request.mountpoint, "mountpoint", self._kubelet_dir)
        if request.op == "alive":
            return {"alive": self._mounter.daemon_alive(mountpoint)}
        with self.locks.hold(mountpoint):
            started = time.monotonic()
            if request.op == "mount":
                code, message = self._mounter.run_obsfs(
                    mount_args(request.source, mountpoint, request.options), MOUNT_TIMEOUT)
            else:
                code, message = self._mounter.run_obsfs(["umount", mountpoint], UMOUNT_TIMEOUT)
        # The options are not logged: they are the plugin's to log, and name the credentials file.
        log.info("obsfs %s %s: exit %d in %.1f s%s", request.op, mountpoint, code, time.monotonic() - started,
                 f": {message}" if code else "")
        return {"exit": code, "message": message}


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True  # an obsfs umount still flushing must not hold up our exit
    block_on_close = False

    def __init__(self, path: str, service: MounterService) -> None:
        self.service = service
        super().__init__(path, _Handler, bind_and_activate=False)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server
    request: socket.socket

    def handle(self) -> None:
        self.server.service.serve(self.request)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obsfs-mounter",
                                     description="Runs obsfs mount and umount for the obsfs CSI node plugin.")
    parser.add_argument("--version", action="version", version=f"obsfs-mounter {__version__}")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"unix socket to serve on (default: {DEFAULT_SOCKET})")
    parser.add_argument("--kubelet-dir", default="",
                        help="refuse mount points outside this directory, e.g. /var/lib/kubelet (default: any)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s obsfs-mounter[%(process)d] %(levelname)s %(name)s: %(message)s")
    if not os.path.isabs(args.socket) or (args.kubelet_dir and not os.path.isabs(args.kubelet_dir)):
        print("obsfs-mounter: --socket and --kubelet-dir must be absolute paths", file=sys.stderr)
        return 2
    service = MounterService(args.socket, args.kubelet_dir)
    try:
        service.start()
    except ConfigError as exc:
        print(f"obsfs-mounter: {exc}", file=sys.stderr)
        return 2
    serve_until_signalled(lambda grace: service.stop(), 0)
    log.info("stopped; the obsfs daemons end with this container")
    return 0


if __name__ == "__main__":
    sys.exit(main())
