"""The node service's hands: ``obsfs mount``/``umount``, bind mounts, unmounts, and a liveness probe.

The node service decides; this class acts, so a test (or another platform) can hand the service
another ``Mounter``. ``Mounter`` runs obsfs itself; ``SocketMounter`` has ``obsfs-mounter`` run
it, so that the daemons outlive this process's container (``csi.mounterd``).

Every command runs as an argv list with ``/`` as working directory, never through a shell,
with an environment from which any store keys are removed (obsfs strips them from its daemon
too; stripping them here as well means no CSI process environment ever leaks into a mount).
Failures become typed CSI errors carrying the command's own one-line message.

``obsfs mount`` is never given a deadline tied to the CO's: if the CO gives up, the mount still
finishes and the CO's retry finds it staged. The per-volume lock turns the retries that arrive
while it runs into ABORTED, so no two mounts of one volume ever race.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from csi import mounterproto
from csi.errors import CsiError, Internal, InvalidArgument, NotFound, PermissionDenied, Unavailable
from csi.mountinfo import MountEntry, read_mounts
from obsfs.credentials import SECRET_ENV_NAMES
from obsfs.runtime import state_file

log = logging.getLogger(__name__)
T = TypeVar("T")

OBSFS = [sys.executable, "-m", "obsfs"]
MOUNT_TIMEOUT = 120.0  # obsfs mount gives up by itself after its deadline (30 s by default)
UMOUNT_TIMEOUT = 960.0  # obsfs umount waits up to 900 s for the flush before it gives up
COMMAND_TIMEOUT = 30.0  # mount --bind, umount, fusermount3
PROBE_TIMEOUT = 5.0
_KEYS_HINT = "check the secret keys accessKeyID and secretAccessKey"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no message)"


def mount_error(code: int, message: str, log_path: str) -> CsiError:
    """The CSI error for an ``obsfs mount`` exit code (see ``obsfs.cli``)."""
    if code == 2:
        return InvalidArgument(f"obsfs mount refused the options or the mount point: {message}")
    if code == 3:
        return PermissionDenied(f"{message} ({_KEYS_HINT})")
    if code == 4:
        return NotFound(message)
    if code == 5:
        return Unavailable(f"{message} (check the secret key endpoint and the network; the CO will retry)")
    return Internal(f"obsfs mount failed with exit code {code}: {message}; the daemon's log is {log_path}")


def mount_args(source: str, mountpoint: str, options: Sequence[str]) -> list[str]:
    """The arguments of ``obsfs mount``; the options are ``-o`` items, already escaped."""
    args = ["mount", source, mountpoint]
    for option in options:
        args += ["-o", option]
    return args


def _in_thread(fn: Callable[[], T], timeout: float) -> tuple[bool, T | OSError | None]:
    """Run ``fn`` in a throw-away thread: whether it finished in time, and its result or OSError.

    For calls that touch a FUSE mount: a hung daemon then costs one parked thread, not a stuck RPC.
    """
    outcome: list[T | OSError] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="fuse probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return (True, outcome[0]) if outcome else (False, None)


def _pid_alive(pid_file: Path) -> bool | None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/stat") as stream:
            state = stream.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # the daemon is nobody's child here: a zombie stays until PID 1 reaps it


class Mounter:
    def __init__(self, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.probe_timeout = probe_timeout
        self._env = {name: value for name, value in os.environ.items() if name not in SECRET_ENV_NAMES}

    def _run(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd="/",
                                  env=self._env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"{' '.join(argv[:4])}... did not finish within {timeout:.0f} s; "
                              "the CO will retry") from None

    def _check(self, argv: Sequence[str], what: str) -> None:
        result = self._run(argv, COMMAND_TIMEOUT)
        if result.returncode != 0:
            raise Internal(f"{what} failed: {_last_line(result.stderr)}")

    # -- what is mounted -------------------------------------------------------------------------
    def mounts(self) -> list[MountEntry]:
        return read_mounts()

    def probe(self, path: str) -> str | None:
        """None if the filesystem at ``path`` answers; otherwise what is wrong with it.

        statfs always goes to the FUSE daemon, unlike stat, which the kernel may answer from its
        attribute cache long after the daemon died.
        """
        finished, outcome = _in_thread(lambda: os.statvfs(path), self.probe_timeout)
        if not finished:
            return f"does not answer within {self.probe_timeout:.0f} s"
        if not isinstance(outcome, OSError):
            return None
        if outcome.errno in (errno.ENOTCONN, errno.ECONNABORTED):  # the latter while the kernel aborts
            return f"its obsfs daemon is gone ({outcome.strerror})"
        return f"{outcome.strerror or outcome}"

    def daemon_alive(self, mountpoint: str) -> bool | None:
        """Whether the daemon of the obsfs mount at ``mountpoint`` runs; None if that is not known
        (no pid file, or the lookup hangs: ``state_file`` resolves the mount point itself)."""
        finished, outcome = _in_thread(lambda: _pid_alive(state_file(mountpoint, "pid")), self.probe_timeout)
        return outcome if finished and isinstance(outcome, bool) else None

    # -- obsfs -----------------------------------------------------------------------------------
    def run_obsfs(self, args: Sequence[str], timeout: float) -> tuple[int, str]:
        """``obsfs ARGS``: its exit status and the last line it wrote to stderr."""
        result = self._run([*OBSFS, *args], timeout)
        return result.returncode, _last_line(result.stderr)

    def mount_obsfs(self, source: str, mountpoint: str, options: Sequence[str], log_path: str) -> None:
        """Run ``obsfs mount``; it returns once the mount answers, and its daemon outlives us."""
        code, message = self.run_obsfs(mount_args(source, mountpoint, options), MOUNT_TIMEOUT)
        if code != 0:
            raise mount_error(code, message, log_path)

    def unmount_obsfs(self, mountpoint: str) -> tuple[int, str]:
        """``obsfs umount``: the daemon uploads what is pending, unmounts and exits.

        Returns its exit status (non-zero: some data was not uploaded, or the flush is still
        running) and its message.
        """
        return self.run_obsfs(["umount", mountpoint], UMOUNT_TIMEOUT)

    def detach_obsfs(self, mountpoint: str) -> None:
        """Lazily unmount an obsfs mount whose daemon is gone."""
        self._check(["fusermount3", "-u", "-z", mountpoint], f"fusermount3 -u -z {mountpoint}")

    # -- bind mounts -----------------------------------------------------------------------------
    def bind(self, source: str, target: str, read_only: bool) -> None:
        self._check(["mount", "--bind", source, target], f"mount --bind {source} {target}")
        if read_only:
            try:
                self._check(["mount", "-o", "remount,bind,ro", target], f"remounting {target} read-only")
            except CsiError:
                # Never leave a writable bind where a read-only one was asked for.
                try:
                    self.unmount(target)
                except CsiError as exc:
                    log.error("%s; %s is left writable", exc, target)
                raise

    def unmount(self, path: str, lazy: bool = False) -> None:
        self._check(["umount", "-l", path] if lazy else ["umount", path], f"umount {path}")


class SocketMounter(Mounter):
    """A ``Mounter`` whose obsfs daemons are started and stopped by ``obsfs-mounter``.

    The daemons then belong to the mounter's container, not to this plugin's, so a restart of
    the plugin leaves them running (see ``csi.mounterd``). Everything that is a kernel call
    stays here: bind mounts, unmounts, the probe and the mount table. Whether a daemon runs is
    asked of the mounter, because its pid file and its pid mean something only there.
    """

    SLACK = 30.0  # on top of the mounter's own deadline for the command

    def __init__(self, socket_path: str, probe_timeout: float = PROBE_TIMEOUT) -> None:
        super().__init__(probe_timeout)
        self.socket_path = socket_path

    def call(self, op: str, timeout: float, **fields: object) -> dict[str, object]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(self.socket_path)
                conn.sendall(mounterproto.encode(mounterproto.request(op, **fields)))
                line = conn.makefile("rb").readline(mounterproto.MAX_LINE + 1)
        except TimeoutError:
            raise Unavailable(f"the obsfs mounter did not answer {op} within {timeout:.0f} s; the CO will "
                              "retry") from None
        except OSError as exc:
            raise Unavailable(f"cannot reach the obsfs mounter at {self.socket_path} "
                              f"({exc.strerror or exc}); check that the obsfs-csi-mounter pod runs on this "
                              "node") from None
        return mounterproto.parse_answer(line)

    def hello(self) -> dict[str, object]:
        return self.call("hello", self.probe_timeout)

    def _command(self, op: str, timeout: float, **fields: object) -> tuple[int, str]:
        result = self.call(op, timeout + self.SLACK, **fields)
        code, message = result.get("exit"), result.get("message")
        if not isinstance(code, int) or not isinstance(message, str):
            raise Internal(f"the obsfs mounter's answer to {op} has no exit code and message")
        return code, message

    def mount_obsfs(self, source: str, mountpoint: str, options: Sequence[str], log_path: str) -> None:
        code, message = self._command("mount", MOUNT_TIMEOUT, source=source, mountpoint=mountpoint,
                                      options=list(options))
        if code != 0:
            raise mount_error(code, message, log_path)

    def unmount_obsfs(self, mountpoint: str) -> tuple[int, str]:
        return self._command("umount", UMOUNT_TIMEOUT, mountpoint=mountpoint)

    def daemon_alive(self, mountpoint: str) -> bool | None:
        try:
            alive = self.call("alive", self.probe_timeout + self.SLACK, mountpoint=mountpoint).get("alive")
        except CsiError as exc:
            log.warning("cannot tell whether the daemon of %s runs: %s", mountpoint, exc)
            return None
        return alive if isinstance(alive, bool) else None
