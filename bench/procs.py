"""Processes and mounts: who serves a mount point, how much memory it holds, and how to get rid of it.

Every peer is found the same way (its argv names the mount point, plus its descendants), so memory is
compared over the same notion of "the mount process" whether the peer daemonizes itself or not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FUSECTL = Path("/sys/fs/fuse/connections")


@dataclass(frozen=True)
class Memory:
    rss_kib: int  # VmRSS summed over the tree
    hwm_kib: int  # VmHWM (peak RSS) summed over the tree


def _mount_fields(path: Path) -> list[str] | None:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as stream:
        for line in stream:
            fields = line.split()
            if fields[4] == real:
                return fields
    return None


def is_mounted(path: Path) -> bool:
    return _mount_fields(path) is not None


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                ppid = int(stream.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return [arg.decode(errors="replace") for arg in stream.read().split(b"\0") if arg]
    except OSError:
        return []


def mount_pids(mountpoint: Path, roots: list[int]) -> list[int]:
    """``roots`` (our own children) plus every process whose argv names the mount point, with descendants."""
    target = str(mountpoint)
    found = set(roots)
    found.update(int(e) for e in os.listdir("/proc") if e.isdigit() and target in _argv(int(e)))
    found.discard(os.getpid())
    tree = _children()
    todo = list(found)
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def memory_of(pids: list[int]) -> Memory:
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as stream:
                for line in stream:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            continue
    return Memory(rss, hwm)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of ``pids`` (all their threads), from /proc/PID/stat.

    A process that exits between two readings takes its share with it; the peers' daemons live as
    long as their mount, so this only misses short-lived helpers.
    """
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of proc(5)
    return ticks / CLOCK_TICKS


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_pids(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``: only for processes of a mount this bench started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        living = [p for p in pids if alive(p)]
        for pid in living:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + grace
        while any(alive(p) for p in living) and time.monotonic() < end:
            time.sleep(0.05)


def fusermount(path: Path, lazy: bool = False) -> bool:
    argv = ["fusermount3", "-u", *(["-z"] if lazy else []), str(path)]
    return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0


def force_unmount(path: Path) -> None:
    """fusermount3 -u, then -u -z: the teardown of last resort for any peer."""
    if is_mounted(path) and not fusermount(path):
        time.sleep(0.5)
        if is_mounted(path) and not fusermount(path):
            fusermount(path, lazy=True)


def abort_connection(path: Path) -> None:
    """Abort a hung FUSE connection through fusectl, so syscalls blocked in it return ENOTCONN."""
    fields = _mount_fields(path)
    if fields is None:
        return
    if not os.path.ismount(FUSECTL):
        subprocess.run(["mount", "-t", "fusectl", "none", str(FUSECTL)], capture_output=True)
    minor = fields[2].split(":")[1]
    with contextlib.suppress(OSError):
        (FUSECTL / minor / "abort").write_text("1")
    log.error("aborted the FUSE connection of %s", path)


class HangGuard:
    """Aborts a mount whose peer stopped answering, instead of leaving the bench stuck in D state.

    This bounds a hang, it does not judge speed: the limit is far above any sane run time.
    """

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        log.error("%s: no progress for too long; aborting its FUSE connection", self.path)
        abort_connection(self.path)

    def cancel(self) -> None:
        self._timer.cancel()


def first_line(argv: list[str]) -> str:
    """The first line a tool prints, e.g. its version; "unknown" if it prints nothing."""
    result = subprocess.run(argv, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


def drop_caches() -> bool:
    """Empty the page cache so that a cold read really goes to the peer; False when not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        log.warning("cannot drop the page cache (%s): cold reads may be warm", exc)
        return False
    return True
