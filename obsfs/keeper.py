"""The keeper: one small process that holds a mount's FUSE connection, so that the daemon serving
it can die (``kill -9``, OOM) or be replaced without the mount going away.

The kernel sends FUSE_INIT once per connection, and libfuse answers everything with EIO until it
has seen one. So the keeper mounts, reads that INIT once, and never reads the device again. To
each daemon that connects on its unix socket it hands the saved INIT bytes and the device fd
(SCM_RIGHTS). The daemon feeds the INIT to its own libfuse over a private socket, sends the answer
back here, and serves from a FUSE_DEV_IOC_CLONE clone of the fd (``obsfs/handover.py``). The
first answer is written to the device and completes the kernel's handshake; every later one must
be byte-identical (the kernel keeps what the first negotiated), or that daemon is refused.

The keeper is off the data path, stdlib only, and never imports pyfuse3: the process that must
not die stays small. The first daemon is forked by ``obsfs mount`` before that command becomes
the keeper (``cli.become_keeper``), so it is the keeper's child from the start; the keeper starts
the next one, as a program of its own, when it dies abnormally or hands over. It exits when the
mount is gone, or when the daemon exits cleanly (``obsfs umount``: the daemon flushes and
unmounts).

Mounting goes through ``fusermount3`` with ``_FUSE_COMMFD``, as root too. That is the path libfuse
itself takes without privileges, so root and non-root mounts are made by one piece of code (no
mount(2) through ctypes), and as root fusermount3 makes the same mount(2) call libfuse would:
same source, type, flags and options (a test compares the two mounts' mountinfo lines).

Protocol on the socket (SOCK_SEQPACKET, peer must have the keeper's uid):
keeper → daemon: INIT bytes + the device fd; daemon → keeper: its INIT reply;
keeper → daemon: ``OK`` or ``DIFFERS``.

Upgrading the keeper itself (SIGUSR2): it ``execv``s ``python -m obsfs.keeper`` of the obsfs
installed now, as the same process. What it holds crosses the exec as inherited fds (the device,
the listening socket, the readiness pipes, a pipe with the credentials) and one ``--adopt``
argument (``Carried``: the fd numbers, the saved INIT and first reply, the daemon's pid). The
daemon stays its child (a pid survives exec), so the new image opens a pidfd on it again and
reaps it as before; the kernel session's name (pid and start time) does not change either.
Signals are blocked across the exec and delivered to the new image once it handles them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import faulthandler
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from obsfs.keeperlink import DIFFERS, EXIT_HANDOVER, OK, READ_SIZE, listen, unmount

log = logging.getLogger(__name__)

FUSE_INIT = 26
# struct fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
IN_HEADER = struct.Struct("<IIQQIIIHH")
# What the keeper handles; blocked across its re-exec, so that none is lost or kills it meanwhile.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# Run by the python the keeper is about to exec, before it does: can it read the state it gets?
PROBE = "import sys; from obsfs.keeper import Carried; Carried.loads(sys.argv[1])"


def escape_option(option: str) -> str:
    """fusermount3 splits ``-o`` on commas; a comma or backslash in a value (an fsname with a
    prefix) is escaped with a backslash, as libfuse escapes it."""
    return option.replace("\\", "\\\\").replace(",", "\\,")


def mount(mountpoint: str, options: Sequence[str]) -> int:
    """Mount a new FUSE connection at ``mountpoint``; returns the device fd (close-on-exec)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        argv = ["fusermount3", "-o", ",".join(escape_option(o) for o in options), "--", mountpoint]
        proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        theirs.close()
        try:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        finally:
            _, stderr = proc.communicate()
    if not fds:
        raise OSError(errno.EIO, f"fusermount3 did not mount {mountpoint}: {stderr.decode().strip()}")
    os.set_inheritable(fds[0], False)
    return fds[0]


def read_init(fd: int) -> bytes:
    """The kernel's first request on a new connection, which must be FUSE_INIT."""
    message = os.read(fd, READ_SIZE)
    length, opcode = IN_HEADER.unpack_from(message)[:2]
    if opcode != FUSE_INIT or length != len(message):
        raise OSError(errno.EPROTO, f"expected FUSE_INIT, got opcode {opcode} ({len(message)} bytes)")
    return message


def connected(fd: int) -> bool:
    """Whether the connection still exists. Polled for no events, so requests waiting to be read
    do not count; the kernel reports POLLERR once the mount is gone or aborted."""
    poller = select.poll()
    poller.register(fd, 0)
    return not poller.poll(0)


@dataclass
class InitRecord:
    """The saved INIT and the first daemon's answer to it, which every later answer must equal."""

    request: bytes
    reply: bytes | None = None

    def settle(self, device: int, reply: bytes) -> bool:
        """Accept one daemon's INIT reply; the first one goes to the kernel."""
        if self.reply is None:
            os.write(device, reply)
            self.reply = reply
            return True
        return reply == self.reply


def serve_one(listener: socket.socket, device: int, record: InitRecord) -> None:
    """Hand the connection to the daemon that connected; a bad peer is logged and dropped."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(30)
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            log.warning("refused a connection from uid %d", uid)
            return
        try:
            socket.send_fds(conn, [record.request], [device])
            reply = conn.recv(READ_SIZE)
            accepted = bool(reply) and record.settle(device, reply)
            conn.send(OK if accepted else DIFFERS)
        except OSError as exc:
            log.warning("handing the connection over failed: %s", exc)
            return
        if not accepted:
            log.error("refused a daemon whose FUSE_INIT reply differs from the first one "
                      "(another libfuse or pyfuse3 build?)")


@dataclass
class Backoff:
    """Delay before restarting a daemon that died: doubles while it keeps dying young."""

    first: float = 0.2
    limit: float = 10.0
    settled_after: float = 60.0
    delay: float = field(init=False, default=0.0)

    def next(self, lived: float) -> float:
        self.delay = self.first if lived >= self.settled_after or not self.delay else min(self.limit, 2 * self.delay)
        return self.delay


def restart_wanted(returncode: int, still_mounted: bool) -> bool:
    """0 is a clean stop (the daemon unmounted); a handover asks for the next daemon at once;
    anything else (a signal, a crash) restarts only while the mount is still there."""
    if returncode == EXIT_HANDOVER:
        return True
    return returncode != 0 and still_mounted


def tell(fd: int, verdict: bytes) -> None:
    """Pass the first daemon's verdict on; whoever waited for it may be gone (and the keeper
    must not die of a broken pipe)."""
    with contextlib.suppress(OSError):
        os.write(fd, verdict)
    os.close(fd)


@dataclass
class Daemon:
    """One running daemon (our child) and the pipe its readiness verdict comes on. It is known by
    pid and pidfd, not by a ``Popen``: a keeper that re-executed itself adopts its daemon by pid."""

    pid: int
    ready: int
    started: float
    pidfd: int

    def send(self, signum: int) -> None:
        signal.pidfd_send_signal(self.pidfd, signum)

    def reap(self) -> int:
        """Its exit code, as ``Popen.returncode`` gives it (``-N`` for signal N)."""
        os.close(self.pidfd)
        if self.ready >= 0:
            os.close(self.ready)
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


@dataclass(frozen=True)
class Carried:
    """What a keeper hands to its own next image (``--adopt``): fd numbers it leaves open across
    the exec, the INIT record, the daemon's pid (0: none runs) and the supervision state. The
    credentials go in a pipe, never here: argv is readable in /proc."""

    device: int
    listener: int
    init: bytes
    reply: bytes | None
    daemon: int
    ready: int
    started: float  # time.monotonic(): one clock for the whole system, so it survives the exec
    announce: int  # -1: no one waits for the first daemon's verdict any more
    restart_at: float | None
    delay: float
    generation: int  # how many times this keeper has re-executed itself, this time included
    handover_wanted: bool

    def dumps(self) -> str:
        fields = {**self.__dict__, "init": self.init.hex(), "reply": None if self.reply is None else self.reply.hex()}
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> Carried:
        fields = json.loads(text)
        reply = fields.pop("reply")
        return cls(**{**fields, "init": bytes.fromhex(fields.pop("init")),
                      "reply": None if reply is None else bytes.fromhex(reply)})

    def fds(self) -> list[int]:
        return [fd for fd in (self.device, self.listener, self.ready, self.announce) if fd >= 0]


def credentials_pipe(secret: bytes) -> int:
    """A pipe's read end holding ``secret`` (it fits in the pipe's buffer), for a child or the next
    image of this process (close-on-exec until a caller makes it inheritable)."""
    cred_r, cred_w = os.pipe2(os.O_CLOEXEC)
    tell(cred_w, secret)
    return cred_r


class Keeper:
    def __init__(self, device: int, record: InitRecord, listener: socket.socket, argv: list[str],
                 secret: bytes, keeper_args: list[str]) -> None:
        self.device = device
        self.record = record
        self.listener = listener
        self.argv = argv  # the daemon's
        self.secret = secret
        self.keeper_args = keeper_args  # this keeper's own, for its next image
        self.backoff = Backoff()
        self.stopping = False
        self.reexec_wanted = False
        self.handover_wanted = False  # SIGUSR1 came; sent on once the daemon is ready
        self.generation = 0  # re-executions so far (Carried)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def start(self) -> Daemon:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        cred_r = credentials_pipe(self.secret)
        argv = [*self.argv, "--ready-fd", str(ready_w), "--credentials-fd", str(cred_r)]
        for fd in (ready_w, cred_r):
            os.set_inheritable(fd, True)  # the only fds the daemon inherits: the rest are close-on-exec
        try:
            devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=devnull,
                                 setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        finally:
            os.close(ready_w)
            os.close(cred_r)
        log.info("started daemon %d", pid)
        return Daemon(pid, ready_r, time.monotonic(), os.pidfd_open(pid))

    def run(self, announce: int | None, daemon: Daemon | None, restart_at: float | None = None) -> int:
        """Supervise daemons until the mount is gone; returns the last daemon's exit code.

        ``announce`` gets the first daemon's readiness verdict (``obsfs mount`` waits on it). If
        the first daemon fails before it is ready, the mount is taken down again. ``daemon`` and
        ``restart_at`` are the state to go on from: a first daemon just started, or what the
        previous image of this keeper handed over."""
        code = 0
        while True:
            poller = select.poll()
            poller.register(self.device, 0)
            poller.register(self.listener, select.POLLIN)
            poller.register(self.wake_r, select.POLLIN)
            if daemon is not None:
                poller.register(daemon.pidfd, select.POLLIN)
                if daemon.ready >= 0:
                    poller.register(daemon.ready, select.POLLIN)
            timeout = None if restart_at is None else max(0, int(1000 * (restart_at - time.monotonic())))
            events = dict(poller.poll(timeout))
            if self.wake_r in events:
                self._signals(daemon)
                if self.reexec_wanted:
                    self.reexec_wanted = False
                    self.reexec(daemon, announce, restart_at)  # returns only if it could not
            if self.listener.fileno() in events:
                serve_one(self.listener, self.device, self.record)
            if daemon is not None and daemon.ready in events:
                verdict = os.read(daemon.ready, 4096)
                os.close(daemon.ready)
                daemon.ready = -1
                log.info("daemon %d: %s", daemon.pid, verdict.decode(errors="replace").strip() or "no verdict")
                if announce is not None:
                    tell(announce, verdict or b"ERR 1 the daemon exited before the mount was ready\n")
                    announce = None
                    if not verdict.startswith(b"OK"):
                        self.stopping = True
            if self.handover_wanted and daemon is not None and daemon.ready < 0:
                # Only a daemon that is ready: before that, it may not handle SIGUSR1 yet (its
                # default action kills), and the first one's death would end the mount.
                self.handover_wanted = False
                log.info("planned handover: draining daemon %d", daemon.pid)
                daemon.send(signal.SIGUSR1)
            if daemon is not None and daemon.pidfd in events:
                code = daemon.reap()
                lived = time.monotonic() - daemon.started
                log.info("daemon %d exited with %d after %.1f s", daemon.pid, code, lived)
                daemon = None
                if announce is not None:
                    tell(announce, b"ERR 1 the daemon exited before the mount was ready\n")
                    announce = None
                    self.stopping = True
                if self.stopping or not restart_wanted(code, connected(self.device)):
                    return code
                delay = 0.0 if code == EXIT_HANDOVER else self.backoff.next(lived)
                restart_at = time.monotonic() + delay
            if daemon is None and (self.stopping or not connected(self.device)):
                return code
            if daemon is None and restart_at is not None and time.monotonic() >= restart_at:
                restart_at = None
                daemon = self.start()

    def _signals(self, daemon: Daemon | None) -> None:
        """SIGUSR1 asks the daemon to drain and hand over; SIGUSR2 re-executes the keeper;
        SIGTERM, SIGINT and SIGHUP stop the daemon (it flushes and unmounts), and the keeper
        with it."""
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(self.wake_r, 64):
                if signum == signal.SIGUSR1:
                    # A daemon that is starting anyway is already the one installed now.
                    self.handover_wanted = daemon is not None and not self.stopping
                elif signum == signal.SIGUSR2:
                    self.reexec_wanted = not self.stopping
                else:
                    self.stopping = True
                    self.reexec_wanted = False
                    if daemon is not None:
                        daemon.send(signal.SIGTERM)

    def reexec(self, daemon: Daemon | None, announce: int | None, restart_at: float | None) -> None:
        """Become the keeper of the obsfs installed now, as the same process (see the module's
        docstring); returns only if that cannot be done, and this image goes on."""
        carried = Carried(self.device, self.listener.fileno(), self.record.request, self.record.reply,
                          daemon.pid if daemon else 0, daemon.ready if daemon else -1,
                          daemon.started if daemon else 0.0, -1 if announce is None else announce,
                          restart_at, self.backoff.delay, self.generation + 1, self.handover_wanted)
        # A new image that cannot import, or cannot read what it is handed, would leave the
        # mount to die with the daemon: try that in a child first.
        probe = subprocess.run([sys.executable, "-c", PROBE, carried.dumps()], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if probe.returncode != 0:
            log.error("not re-executing: the obsfs installed now cannot take this keeper over: %s",
                      (probe.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1])
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        # Signals whose handler already ran but that were not read yet: raised again, they stay
        # pending (blocked) and reach the next image.
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(self.wake_r, 64):
                signal.raise_signal(signum)
        cred_r = credentials_pipe(self.secret)
        for fd in (*carried.fds(), cred_r):
            os.set_inheritable(fd, True)
        argv = [sys.executable, "-m", "obsfs.keeper", *self.keeper_args, "--credentials-fd", str(cred_r),
                "--adopt", carried.dumps(), "--", *self.argv]
        log.info("re-executing the keeper (daemon %s stays)", carried.daemon or "-")
        for handler in logging.getLogger().handlers:
            handler.flush()
        try:
            os.execv(sys.executable, argv)
        except OSError as exc:
            log.error("could not re-execute the keeper: %s", exc)
            for fd in carried.fds():
                os.set_inheritable(fd, False)
            os.close(cred_r)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m obsfs.keeper")
    parser.add_argument("--mountpoint", required=True)
    parser.add_argument("--options", required=True, help="FUSE mount options, one per -o word, joined by newlines")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--credentials-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--logfile")
    parser.add_argument("--adopt", help="JSON state from this keeper's previous image (SIGUSR2)")
    parser.add_argument("--listen-fd", type=int, help="the socket, already listening (else made at --socket)")
    parser.add_argument("--first-daemon", type=int, metavar="PID",
                        help="the first daemon, already started as this process's child (obsfs mount forked it)")
    parser.add_argument("--first-daemon-ready-fd", type=int, metavar="FD", help="where that daemon's verdict comes")
    parser.add_argument("daemon", nargs=argparse.REMAINDER, help="-- the daemon's argv")
    return parser


def adopt(carried: Carried, argv: list[str], secret: bytes, own: list[str]) -> tuple[Keeper, Daemon | None]:
    """Take over from the previous image of this keeper (``Keeper.reexec``)."""
    for fd in carried.fds():
        os.set_inheritable(fd, False)
    listener = socket.socket(fileno=carried.listener)
    keeper = Keeper(carried.device, InitRecord(carried.init, carried.reply), listener, argv, secret, own)
    keeper.backoff.delay = carried.delay
    keeper.generation = carried.generation
    keeper.handover_wanted = carried.handover_wanted
    daemon = None
    if carried.daemon:
        # Still our child, alive or a zombie: nobody else can reap it, so the pid is its own.
        daemon = Daemon(carried.daemon, carried.ready, carried.started, os.pidfd_open(carried.daemon))
    log.info("keeper re-executed (%d); supervising daemon %s", carried.generation, carried.daemon or "-")
    return keeper, daemon


def generation_of(pid: int) -> int:
    """How many times the keeper ``pid`` has re-executed itself, from its command line: what
    ``obsfs upgrade`` waits on."""
    with open(f"/proc/{pid}/cmdline", "rb") as stream:
        argv = stream.read().decode(errors="replace").split("\0")
    return Carried.loads(argv[argv.index("--adopt") + 1]).generation if "--adopt" in argv else 0


def first_daemon(pid: int, ready: int) -> Daemon:
    """The daemon ``obsfs mount`` forked before it became this keeper: a fork of the command
    needs no interpreter start or imports of its own, and it imports the filesystem while this
    keeper starts and mounts. It is already this process's child (a pid survives exec)."""
    os.set_inheritable(ready, False)
    return Daemon(pid, ready, time.monotonic(), os.pidfd_open(pid))


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()
    args = _parser().parse_args(argv)
    daemon_argv = args.daemon[1:] if args.daemon[:1] == ["--"] else args.daemon
    handler = logging.FileHandler(args.logfile) if args.logfile else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s obsfs-keeper[%(process)d] %(levelname)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    with os.fdopen(args.credentials_fd, "rb") as stream:
        secret = stream.read()
    own = ["--mountpoint", args.mountpoint, "--options", args.options, "--socket", args.socket,
           "--pidfile", args.pidfile, *(["--logfile", args.logfile] if args.logfile else [])]
    carried = Carried.loads(args.adopt) if args.adopt else None
    daemon: Daemon | None = None
    if carried is not None:
        keeper, daemon = adopt(carried, daemon_argv, secret, own)
        announce = None if carried.announce < 0 else carried.announce
    else:
        announce = args.ready_fd
        if announce is not None:
            os.set_inheritable(announce, False)  # for the keeper only, not for its daemons
        if args.first_daemon:
            daemon = first_daemon(args.first_daemon, args.first_daemon_ready_fd)
        try:
            device = mount(args.mountpoint, args.options.split("\n"))
            record = InitRecord(read_init(device))
        except OSError as exc:
            log.error("%s", exc)
            if announce is not None:
                tell(announce, f"ERR 2 {exc}\n".encode())
            if daemon is not None:  # it has nothing to serve; nothing it did before attaching needs a flush
                daemon.send(signal.SIGKILL)
                daemon.reap()
            return 2
        if args.listen_fd is not None:
            os.set_inheritable(args.listen_fd, False)
            listener = socket.socket(fileno=args.listen_fd)
        else:
            listener = listen(args.socket)
        keeper = Keeper(device, record, listener, daemon_argv, secret, own)
    signal.set_wakeup_fd(keeper.wake_w)
    for signum in SIGNALS:
        signal.signal(signum, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # blocked across a re-exec
    with open(args.pidfile, "w") as stream:
        stream.write(str(os.getpid()))
    try:
        if daemon is None and carried is None:
            daemon = keeper.start()
        code = keeper.run(announce, daemon, None if carried is None else carried.restart_at)
        if keeper.stopping and connected(keeper.device):
            unmount(args.mountpoint)  # the first daemon failed, or a stop found no daemon to do it
        return code
    finally:
        for path in (args.socket, args.pidfile):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        log.info("keeper of %s exits", args.mountpoint)


if __name__ == "__main__":
    sys.exit(main())
