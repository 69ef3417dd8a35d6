"""The daemon's side of a keeper mount (the default): take over a FUSE connection that the keeper holds.

libfuse will not serve before it has answered a FUSE_INIT, and the kernel sent that once, to the
keeper. So the session starts on one end (``a``) of a private socket pair, given to libfuse as
the mount point ``/dev/fd/<a>`` (libfuse then mounts nothing and, on close, unmounts nothing).
The keeper's saved INIT goes in at the other end (``b``), libfuse answers it there, and the keeper
writes the first answer to the device or checks a later one against it. Then a FUSE_DEV_IOC_CLONE
clone of the keeper's device fd is ``dup2``-ed onto ``a``: libfuse reads ``se->fd`` afresh on every
call, so from the next read on it serves the device. One byte written into ``b`` wakes the loop,
which is parked in ``trio.lowlevel.wait_readable(a)`` on the socket; trio registers fds with
EPOLLONESHOT, so that stale registration fires once, and trio's next EPOLL_CTL_MOD fails with
ENOENT (same number, another file) and falls back to ADD, which registers the clone. A ``dup`` of
the socket stays open for the session's life, so its epoll entry never dangles.

This rests on internals of libfuse 3.14 and pyfuse3 3.5, not on an API (``tests/test_keeper.py``
fails loudly if an upgrade breaks them): libfuse accepts ``/dev/fd/N``, re-reads ``se->fd`` and
uses read()/writev() (pyfuse3 has no ``write_buf``, so no splice); pyfuse3 replies with
``fuse_reply_buf`` and waits on the fd number it got at init.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading

import pyfuse3
import trio

from obsfs import keeperlink
from obsfs.errors import ConfigError

# _IOR(229, 0, uint32_t) from <linux/fuse.h>
FUSE_DEV_IOC_CLONE = 0x8004E500


def clone_device(device: int) -> int:
    """A new fd on the same FUSE connection, with a request queue of its own: requests it reads
    must be answered on it, and closing it (a crash) aborts only its unanswered ones."""
    clone = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(clone, FUSE_DEV_IOC_CLONE, struct.pack("I", device))
    except OSError:
        os.close(clone)
        raise
    return clone


def _poke(mountpoint: str) -> None:
    with contextlib.suppress(OSError):
        os.statvfs(mountpoint)


def kernel_session() -> str:
    """A name for the FUSE connection this daemon serves, the same for every daemon of one
    keeper: the keeper (our parent) holds it for its whole life, and a pid with its start time
    names one process for good. File handles on disk are valid only within it (handletable.py)."""
    keeper_pid = os.getppid()
    with open(f"/proc/{keeper_pid}/stat") as stream:
        started = stream.read().rsplit(")", 1)[1].split()[19]  # field 22, starttime
    return f"keeper {keeper_pid} {started}"


class Drain:
    """A planned handover's stop: no request the kernel gave this daemon is left unanswered.

    ``pyfuse3.terminate()`` sets libfuse's exit flag, and libfuse 3.14 drops a request it reads
    once that flag is set (``fuse_session_receive_buf_int`` returns 0 after the read): the
    kernel then holds it on our clone unanswered, and closing the clone fails it with
    ECONNABORTED. Called from the signal task, terminate() races a reader of pyfuse3's loop that
    trio has already woken for a readable fd but not yet run: it reads after the flag is set.

    pyfuse3 3.5's loop (internal.pxi) rules that out at one moment: readers wait for the fd only
    while holding ``read_lock``, check the exit flag under it first, and nothing awaits between
    the wait, the read and the start of the handler. So while a handler runs its first
    synchronous steps, the reader that was waiting is this very task, already past its read;
    the next reader takes the lock later and sees the flag. ``at_request`` (the boundary's
    ``on_request``) terminates the loop there. Handlers already running finish and reply on the
    clone, ``pyfuse3.main()`` returns, and requests never read stay in the kernel's queue for
    the next daemon. A request is needed to get there: ``request`` makes one (an idle mount
    would never send one), a statfs, which the filesystem answers without the store; if this
    daemon does not read it, the next one answers it.
    """

    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        self.wanted = False
        self.stopped = False

    def request(self) -> None:
        self.wanted = True
        threading.Thread(target=_poke, args=(self.mountpoint,), name="drain-poke", daemon=True).start()

    def at_request(self) -> None:
        if self.wanted and not self.stopped:
            self.stopped = True
            pyfuse3.terminate()


class KeeperSession:
    """One daemon's attachment to a keeper: ``start`` instead of ``pyfuse3.init``, ``attach`` as a
    task beside ``pyfuse3.main``, ``close`` instead of ``pyfuse3.close``."""

    def __init__(self, socket_path: str) -> None:
        self.link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.link.connect(socket_path)
        except OSError as exc:
            self.link.close()
            raise ConfigError(f"cannot reach the keeper at {socket_path}: {exc.strerror}") from None
        self.init, fds, _, _ = socket.recv_fds(self.link, keeperlink.READ_SIZE, 1)
        if not fds:
            raise ConfigError("the keeper sent no FUSE device")
        self.device = fds[0]
        ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.fd = ours.detach()  # libfuse's session fd; after attach() it is the device clone
        self.socket_kept = os.dup(self.fd)

    def start(self, ops: pyfuse3.Operations, options: set[str]) -> None:
        pyfuse3.init(ops, f"/dev/fd/{self.fd}", options)

    async def attach(self, mountpoint: str) -> None:
        """Complete libfuse's handshake with the saved INIT, then serve the device itself."""
        self.theirs.send(self.init)
        await trio.lowlevel.wait_readable(self.theirs)
        reply = self.theirs.recv(keeperlink.READ_SIZE)
        self.link.send(reply)
        await trio.lowlevel.wait_readable(self.link)
        if self.link.recv(64) != keeperlink.OK:
            raise ConfigError("the keeper refused this daemon: its FUSE_INIT reply differs from the "
                              "first daemon's (another libfuse or pyfuse3 build?)")
        clone = clone_device(self.device)
        os.dup2(clone, self.fd, inheritable=False)
        os.close(clone)
        os.close(self.device)
        self.link.close()
        # Once woken, the loop reads the clone, and that read blocks the whole trio thread until
        # the kernel has a request, which an idle mount may never send. So make one first, from a
        # thread of its own: a statfs, which the kernel never answers from a cache and the
        # filesystem answers without the store. (Not a failed lookup: every mount, the default
        # being one with a keeper, would count an error in its metrics that nobody made.)
        threading.Thread(target=_poke, args=(mountpoint,), name="handover-poke", daemon=True).start()
        self.theirs.send(b"\0")

    def close(self, mountpoint: str, unmount: bool) -> None:
        """libfuse closes the clone and, given ``/dev/fd/N``, unmounts nothing: a daemon that stops
        for good (SIGTERM, ``obsfs umount``) detaches the mount as libfuse would have."""
        pyfuse3.close(unmount=False)
        os.close(self.socket_kept)
        self.theirs.close()
        if unmount:
            keeperlink.unmount(mountpoint)
