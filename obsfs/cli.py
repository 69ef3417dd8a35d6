"""``obsfs mount`` and ``obsfs umount``: the boundary where errors become an exit code and one line.

``obsfs BUCKET[:/PREFIX] MOUNTPOINT -o OPTS`` (no command) is ``obsfs mount``: that is how
mount.fuse3 runs the helper of a ``fuse.obsfs`` fstab line or ``mount -t fuse.obsfs``.

Without ``-f`` the command forks into its own session and returns 0 only once the daemon has
proved the mount answers; any failure before that is printed as one line, with the exit code
below. The forked child becomes the keeper (the default, ``docs/survival.md``), after forking
the first daemon, or, with ``-o nokeeper``, the daemon itself. Either way the filesystem's
modules (pyfuse3, trio and our own: about 0.1 s; the SDK, 0.1 s more, once a call needs it) are
imported once, by the process that serves: this one imports only what deciding needs
(``obsfs/runtime.py``), and not the keeper's module either (``obsfs/keeperlink.py``).
Credentials never reach a daemon through argv or env: a daemon that has to start afresh (one the
keeper starts later, or one whose environment held keys) reads them from an inherited pipe.

``obsfs upgrade`` moves a mount that has a keeper (the default) to the obsfs installed now
(docs/survival.md).

Exit codes: 0 ok; 1 other failure; 2 bad usage, options, credentials file or mount point;
3 credentials refused or access denied; 4 bucket does not exist; 5 endpoint unreachable.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import gc
import json
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from obsfs import __version__, credentials, keeperlink
from obsfs.credentials import SECRET_ENV_NAMES, Credentials
from obsfs.errors import (
    AccessDenied,
    BadCredentials,
    BucketNotFound,
    ConfigError,
    ObsfsError,
    TemporaryFailure,
)
from obsfs.options import join_option, parse_options, parse_source
from obsfs.runtime import (
    MountSpec,
    check_mountpoint,
    keeper_mount_options,
    keeper_wanted,
    remove_state,
    state_file,
    state_path,
    write_state,
)
from obsfs.status import Report, render

log = logging.getLogger("obsfs")

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (ConfigError, 2), (BadCredentials, 3), (AccessDenied, 3), (BucketNotFound, 4), (TemporaryFailure, 5),
]


def exit_code_for(exc: BaseException) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1


COMMANDS = ("mount", "umount", "status", "upgrade")


def with_command(argv: list[str]) -> list[str]:
    """Give the mount.fuse3 form its command: mount.fuse3 runs ``obsfs SOURCE MOUNTPOINT -o OPTS``
    (the type's subtype, found in /bin/sh's default PATH) and knows nothing of subcommands.

    That mount also shows SOURCE as it is written in fstab (``fsname``, before the line's own
    options, which may override it): ``mount -a`` compares the two to skip what is mounted, and
    would otherwise mount the line again, and fail, on every run. A first argument that is a
    command or an option keeps its meaning, so a bucket named ``mount`` is written ``mount:/``.
    """
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return ["mount", *argv[:2], "-o", join_option("fsname", argv[0]), *argv[2:]]
    return argv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obsfs", description="Mount an OBS/S3 bucket as a filesystem.",
        epilog="obsfs BUCKET[:/PREFIX] MOUNTPOINT [-o ...] (no command) is obsfs mount, for mount -t fuse.obsfs.")
    parser.add_argument("--version", action="version", version=f"obsfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    mount = sub.add_parser("mount", help="mount BUCKET[:/PREFIX] at MOUNTPOINT")
    mount.add_argument("source", metavar="BUCKET[:/PREFIX]")
    mount.add_argument("mountpoint")
    mount.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                       help="mount options (s3fs names: url, passwd_file, use_path_request_style, ...)")
    mount.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    mount.add_argument("--credentials-fd", type=int, metavar="FD",
                       help="read AK:SK from this inherited file descriptor")
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    mount.add_argument("--keeper-socket", help=argparse.SUPPRESS)
    umount = sub.add_parser("umount", help="flush, unmount and wait for the daemon to exit")
    umount.add_argument("mountpoint")
    umount.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the flush")
    upgrade = sub.add_parser("upgrade", help="move a mount that has a keeper (the default) to the obsfs installed now, "
                             "without unmounting or failing a call")
    upgrade.add_argument("mountpoint")
    upgrade.add_argument("--timeout", type=float, default=120.0,
                         help="seconds to wait for each step (the old daemon answers what it has read first)")
    status = sub.add_parser("status", help="what a mount has waiting for upload, and its last errors")
    status.add_argument("mountpoint")
    status.add_argument("--json", action="store_true", help="the daemon's report as JSON")
    return parser


def setup_logging(level: str, logfile: str | None, foreground: bool) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    handler: logging.Handler
    if logfile:
        handler = logging.FileHandler(logfile)
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s obsfs[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()
    args = _parser().parse_args(with_command(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "umount":
            return umount(args.mountpoint, args.timeout)
        if args.command == "status":
            return show_status(args.mountpoint, args.json)
        if args.command == "upgrade":
            return upgrade(args.mountpoint, args.timeout)
        return mount(args)
    except ObsfsError as exc:
        print(f"obsfs: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


def mount(args: argparse.Namespace) -> int:
    opts = parse_options(args.options)
    bucket, prefix = parse_source(args.source)
    if args.credentials_fd is not None:
        creds = credentials.read_fd(args.credentials_fd, bucket)
    else:
        creds = credentials.resolve(opts.passwd_file, bucket, os.environ)
    # A keeper's daemon gets the resolved mount point, already mounted: a stat would wait for
    # the very daemon that is starting.
    mountpoint = args.mountpoint if args.keeper_socket else check_mountpoint(args.mountpoint, opts.nonempty)
    spec = MountSpec(bucket=bucket, prefix=prefix, mountpoint=mountpoint, options=opts,
                     keeper_socket=args.keeper_socket)
    if not args.foreground:
        pid, ready_r = fork_daemon(args)
        if pid:
            code = wait_for_daemon(pid, ready_r)
            # This process has nothing to clean up: an interpreter's teardown would only delay
            # the mount command's answer.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return run_daemon(args, spec, creds)


def run_daemon(args: argparse.Namespace, spec: MountSpec, creds: Credentials) -> int:
    if keeper_wanted(spec.options, args.foreground) and not args.keeper_socket:
        return become_keeper(args, spec, creds)
    if not args.foreground and SECRET_ENV_NAMES & os.environ.keys():
        # /proc/PID/environ shows the environment this process was exec'd with, whatever
        # os.environ says now: a daemon that must not show keys there needs an exec of its own.
        exec_daemon(args, spec, creds)
    return run_foreground(spec, creds, args.ready_fd)


def daemon_argv(args: argparse.Namespace, spec: MountSpec, *extra: str) -> list[str]:
    """This mount as a foreground command, for a daemon that starts afresh."""
    argv = [sys.executable, "-m", "obsfs", "mount", args.source, spec.mountpoint, "-f", *extra]
    for option in args.options:
        argv += ["-o", option]
    return argv


def credentials_pipe(creds: Credentials) -> int:
    """An inheritable fd to read the keys from (``--credentials-fd``); they fit in the pipe's buffer."""
    cred_r, cred_w = os.pipe()
    os.write(cred_w, f"{creds.access_key}:{creds.secret_key}\n".encode())
    os.close(cred_w)
    os.set_inheritable(cred_r, True)
    return cred_r


def exec_daemon(args: argparse.Namespace, spec: MountSpec, creds: Credentials) -> None:
    """Become the daemon again, in a new process image whose environment has no keys."""
    assert args.ready_fd is not None
    os.set_inheritable(args.ready_fd, True)
    argv = daemon_argv(args, spec, "--ready-fd", str(args.ready_fd), "--credentials-fd", str(credentials_pipe(creds)))
    os.execve(sys.executable, argv, {k: v for k, v in os.environ.items() if k not in SECRET_ENV_NAMES})


def become_keeper(args: argparse.Namespace, spec: MountSpec, creds: Credentials) -> int:
    """Become the keeper of this mount (``python -m obsfs.keeper``, without pyfuse3 loaded); it
    mounts and supervises the daemon, which serves with ``--keeper-socket``.

    The first daemon is a fork of this command, made before the exec: it needs no interpreter
    start and no second import of this module, and it imports the filesystem while the keeper
    starts and mounts (it connects to the socket made here, and waits there until the keeper has
    the INIT). That is the mount's critical path, so it starts first; the keeper stays a fresh,
    small image. Only the daemons the keeper starts later (after a crash, a handover) run this
    command again, as a program: they must be the obsfs installed then. A fork keeps this
    process's environment, so with keys in it (``SECRET_ENV_NAMES``) the keeper starts the first
    daemon that way too. Returns only in the forked daemon, with its exit code."""
    sock = str(state_path(spec.mountpoint, "sock"))
    os.umask(0o077)
    first: list[str] = []
    if args.ready_fd is not None and not SECRET_ENV_NAMES & os.environ.keys():
        listener = keeperlink.listen(sock)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            listener.close()
            os.close(ready_r)
            os.close(args.ready_fd)  # the keeper tells the command; the daemon tells the keeper
            return run_foreground(dataclasses.replace(spec, keeper_socket=sock), creds, ready_w)
        os.close(ready_w)
        for fd in (listener.fileno(), ready_r):
            os.set_inheritable(fd, True)
        first = ["--listen-fd", str(listener.detach()), "--first-daemon", str(pid),
                 "--first-daemon-ready-fd", str(ready_r)]
    daemon = daemon_argv(args, spec, "--keeper-socket", sock)
    cred_r = credentials_pipe(creds)
    argv = [sys.executable, "-m", "obsfs.keeper", "--mountpoint", spec.mountpoint,
            "--options", "\n".join(keeper_mount_options(spec)), "--socket", sock,
            "--pidfile", str(state_path(spec.mountpoint, "keeper")), "--credentials-fd", str(cred_r), *first]
    if args.ready_fd is not None:
        argv += ["--ready-fd", str(args.ready_fd)]
    if spec.options.logfile:
        argv += ["--logfile", spec.options.logfile]
    if args.ready_fd is not None:
        os.set_inheritable(args.ready_fd, True)
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_NAMES}
    os.execve(sys.executable, [*argv, "--", *daemon], env)


def run_foreground(spec: MountSpec, creds: Credentials, ready_fd: int | None) -> int:
    # Imported only by the process that serves: see the module's docstring. They make some
    # 30,000 objects that live as long as the process, and the cyclic collector would walk them
    # again and again while they load (10 ms of CPU of the ~130 these imports take, on the
    # mount's path to answering). So it waits until they are loaded, and then leaves them out
    # of its walks for good (gc.freeze): they are the program, not garbage.
    gc.disable()
    try:
        import trio

        from obsfs.malloc import one_arena
        from obsfs.mount import serve
    finally:
        gc.freeze()
        gc.enable()

    # Everything the daemon creates (cache dir, SQLite files, cached chunks, the log file) holds
    # file contents, keys or paths: private to its user, whatever umask it was started with.
    os.umask(0o077)
    setup_logging(spec.options.dbglevel, spec.options.logfile, foreground=ready_fd is None)
    one_arena()  # before trio starts a thread: see obsfs.malloc

    announced = False

    def ready() -> None:
        nonlocal announced
        write_state(spec.mountpoint, "pid", str(os.getpid()))
        if ready_fd is not None:
            os.write(ready_fd, b"OK\n")
            os.close(ready_fd)
        announced = True

    code = 1
    try:
        code = trio.run(serve, spec, creds, ready)
        return code
    except ObsfsError as exc:
        code = exit_code_for(exc)
        log.error("%s", exc)
        if ready_fd is not None and not announced:
            os.write(ready_fd, f"ERR {code} {exc}\n".encode())
            return code
        raise
    except BaseException:
        # A detached daemon's stderr is /dev/null: the log is the only place this can show.
        log.exception("the daemon failed; pending uploads stay in the cache dir's journal")
        raise
    finally:
        remove_state(spec.mountpoint, "pid")
        write_state(spec.mountpoint, "status", str(code))


def fork_daemon(args: argparse.Namespace) -> tuple[int, int]:
    """Fork the keeper or the daemon, detached in its own session: in the parent, its pid and the
    read end of its readiness pipe; in the child, 0 (``args`` then names the pipe's write end).

    Forking, not starting a program, is what makes a mount quick: its daemon needs no
    interpreter start of its own (``become_keeper`` forks the first daemon of a keeper mount from
    the child). It is safe because nothing has started a thread yet (no trio run, no SDK client):
    a fork copies only the calling thread.
    """
    if threading.active_count() != 1:
        raise RuntimeError(f"obsfs mount cannot fork its daemon: threads are running ({threading.enumerate()})")
    ready_r, ready_w = os.pipe()
    with state_file(args.mountpoint, "status").open("w"):
        pass  # a fresh status for this run
    pid = os.fork()
    if pid:
        os.close(ready_w)
        return pid, ready_r
    os.close(ready_r)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    args.ready_fd = ready_w
    return 0, -1


def wait_for_daemon(pid: int, ready_r: int) -> int:
    """The daemon's verdict: 0 once it answers, or its one-line error and exit code."""
    with os.fdopen(ready_r, "rb") as stream:
        verdict = stream.readline().decode(errors="replace").strip()
    if verdict == "OK":
        return 0
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if verdict.startswith("ERR "):
        _, code_text, message = verdict.split(" ", 2)
        print(f"obsfs: {message}", file=sys.stderr)
        return int(code_text)
    print(f"obsfs: the daemon exited with code {code} before the mount was ready; "
          "run again with -f to see its log", file=sys.stderr)
    return code or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _wait_until(condition: Callable[[], bool], end: float) -> bool:
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _generation(keeper_pid: int) -> int:
    """The keeper's re-executions so far (``keeper.Carried``), -1 once it is gone."""
    # Imported here: the daemon is forked from this module's process (keeperlink.py).
    from obsfs.keeper import generation_of

    try:
        return generation_of(keeper_pid)
    except OSError:
        return -1


def upgrade(mountpoint: str, timeout: float) -> int:
    """The keeper re-executes itself (SIGUSR2), then its daemon drains and hands over to a new
    one (SIGUSR1): both are then the obsfs installed now, and no call on the mount failed. The
    keeper goes first, so that it starts the new daemon with what it is now."""
    keeper_pid = _pid_in(state_file(mountpoint, "keeper"))
    if not keeper_pid or not _alive(keeper_pid):
        raise ConfigError(f"{mountpoint}: no obsfs keeper holds it (mounted with -o nokeeper or -f?), "
                          "so it cannot be upgraded in place: obsfs umount, then mount again")
    generation = _generation(keeper_pid)
    os.kill(keeper_pid, signal.SIGUSR2)
    if not _wait_until(lambda: _generation(keeper_pid) != generation, time.monotonic() + timeout) or \
            _generation(keeper_pid) < 0:
        raise ObsfsError(f"{mountpoint}: the keeper did not re-execute itself within {timeout:.0f} s; "
                         "see the mount's log (a new obsfs that cannot be imported is refused)")
    old = _pid_in(state_file(mountpoint, "pid"))
    os.kill(keeper_pid, signal.SIGUSR1)
    # The next daemon writes its pid file once it has proved the mount answers.
    if not _wait_until(lambda: _pid_in(state_file(mountpoint, "pid")) not in (0, old),
                       time.monotonic() + timeout):
        raise ObsfsError(f"{mountpoint}: no new daemon answered within {timeout:.0f} s; see the mount's log")
    print(f"obsfs: {mountpoint} upgraded: keeper {keeper_pid} re-executed, daemon "
          f"{_pid_in(state_file(mountpoint, 'pid'))} took over from {old}")
    return 0


def show_status(mountpoint: str, as_json: bool) -> int:
    """Ask the mount's daemon for its report over its control socket, and print it."""
    from obsfs import control  # it imports trio, which a mount must not load before it forks

    path = state_file(mountpoint, "control")
    try:
        body = control.fetch(str(path), "/status")
    except OSError as exc:
        raise ConfigError(f"{mountpoint}: no obsfs daemon answers there ({exc.strerror or exc}); is it "
                          "mounted with obsfs?") from None
    if as_json:
        print(body.decode())
    else:
        print(render(Report.from_json(json.loads(body))))
    return 0


def _pid_in(path: Path) -> int:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _wait_gone(pid: int, end: float) -> bool:
    return _wait_until(lambda: not pid or not _alive(pid), end)


def umount(mountpoint: str, timeout: float) -> int:
    """SIGTERM the daemon (it flushes, unmounts, exits) and wait; without a daemon, just unmount.
    A keeper (the default) exits once its daemon has: wait for it too."""
    pid = _pid_in(state_file(mountpoint, "pid"))
    keeper = _pid_in(state_file(mountpoint, "keeper"))
    end = time.monotonic() + timeout
    if not pid or not _alive(pid):
        result = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(f"{mountpoint}: no obsfs daemon found, and fusermount3 -u failed: "
                              f"{result.stderr.strip()}")
        _wait_gone(keeper, end)
        return 0
    os.kill(pid, 15)
    if not _wait_gone(pid, end):
        print(f"obsfs: daemon {pid} still flushing after {timeout:.0f} s; it keeps running",
              file=sys.stderr)
        return 1
    _wait_gone(keeper, end)
    status_path = state_file(mountpoint, "status")
    try:
        status = int(status_path.read_text() or "0")
    except (FileNotFoundError, ValueError):
        status = 0
    status_path.unlink(missing_ok=True)  # told once; the next mount there starts a new one
    if status != 0:
        print(f"obsfs: the daemon exited with code {status}: some data was not uploaded; see its log",
              file=sys.stderr)
    return status
