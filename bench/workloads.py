"""The measured operations, as ordinary syscalls and shell tools on a mount, and their SDK equivalents.

Timed passes do no hashing: sha256 runs at about 700 MB/s here and would cap a warm re-read below the
1 GB/s we want to see. Data is checked in a separate, untimed pass instead.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.attrs import LS_ARGV, Attrs, mismatches, parse_ls
from bench.errors import AttributeMismatch, BenchError, ChecksumMismatch
from bench.store import CHUNK, Store

SDK_THREADS = 8  # the raw SDK's parallelism in the many-files workloads, as issue #16 measured it
POLL = 0.05  # seconds between durability checks, at least
DURABLE_WAIT = 900.0  # give up on "until durable" after this long: a hung peer, not a slow one
TOOL_WAIT = 3600.0  # bound for cp, rm and ls, so a wedged peer cannot stall the bench forever
LC_ENV = dict(os.environ, LC_ALL="C")  # ls sorts; no locale collation cost in the timing


def make_random_file(path: Path, size: int) -> str:
    """Incompressible data, so no layer can shortcut it; returns its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(CHUNK * 8, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def warm(paths: list[Path]) -> None:
    """Pull local source files into the page cache, so a timed write never waits for the local disk."""
    buf = bytearray(CHUNK)
    for path in paths:
        with path.open("rb", buffering=0) as src:
            while src.readinto(buf):
                pass


def sha256_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as src:
        while n := src.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


def check(what: str, got: tuple[int, str], want: tuple[int, str]) -> None:
    if got != want:
        raise ChecksumMismatch(f"{what}: read back {got[0]} bytes sha256 {got[1][:16]}..., "
                               f"wrote {want[0]} bytes sha256 {want[1][:16]}...")


def write_file(src: Path, dst: Path) -> float:
    """Copy ``src`` to ``dst`` in 1 MiB writes, then fsync and close; seconds until close returned."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    with src.open("rb", buffering=0) as source:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while n := source.readinto(buf):
                done = 0
                while done < n:
                    done += os.write(fd, view[done:n])
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - start


def read_file(path: Path, size: int) -> float:
    """Read the whole file in 1 MiB reads into one buffer; seconds. Also checks the length."""
    buf = bytearray(CHUNK)
    total = 0
    start = time.perf_counter()
    with path.open("rb", buffering=0) as src:
        while n := src.readinto(buf):
            total += n
    elapsed = time.perf_counter() - start
    if total != size:
        raise ChecksumMismatch(f"{path}: read {total} bytes, expected {size}")
    return elapsed


def wait_until(ready: Callable[[], bool], what: str, start: float) -> float:
    """Poll until ``ready``; seconds since ``start`` (a perf_counter time) when it first was.

    Between checks it waits as long as the last check took (at least POLL): listing thousands of
    keys takes several requests, and polling back to back would load the server the peer is
    writing to, while the result still comes within one check's time of the truth.
    """
    while True:
        checked = time.perf_counter()
        if ready():
            return time.perf_counter() - start
        now = time.perf_counter()
        if now - start > DURABLE_WAIT:
            raise BenchError(f"{what}: still not durable after {DURABLE_WAIT:.0f} s")
        time.sleep(max(POLL, now - checked))


def run_tool(argv: list[str]) -> tuple[float, str]:
    """Run a shell tool on the mount; seconds and its stdout. A failing tool fails the workload."""
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=LC_ENV, timeout=TOOL_WAIT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited with {result.returncode}: {result.stderr.strip()[-800:]}")
    return elapsed, result.stdout


def write_owned(directory: Path, names: list[str], attrs: Attrs) -> None:
    """Create ``directory`` and files carrying ``attrs`` in it, as a program that sets them on the
    open file before close (cp -p, tar): a mount can then store each file with its attributes at once."""
    directory.mkdir()
    body = b"o" * attrs.size
    for name in names:
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fchmod(fd, stat.S_IMODE(attrs.mode))
            os.fchown(fd, attrs.uid, attrs.gid)
            os.utime(fd, (attrs.mtime, attrs.mtime))
        finally:
            os.close(fd)


def ls_long(path: Path, expected: int, want: Attrs, fields: frozenset[str]) -> float:
    """``ls -l`` of a directory of ``expected`` objects that all carry ``want``; seconds."""
    elapsed, out = run_tool([*LS_ARGV, str(path)])
    entries = parse_ls(out)
    if len(entries) != expected:
        raise BenchError(f"ls -l {path}: {len(entries)} entries, expected {expected}")
    wrong = mismatches(entries, want, fields)
    if wrong:
        raise AttributeMismatch(f"ls -l {path}: {len(wrong)} of {expected} entries show other attributes than "
                                f"stored, e.g. {wrong[0]}")
    return elapsed


def sdk_list(store: Store, prefix: str, expected: int) -> float:
    start = time.perf_counter()
    found = len([k for k in store.list_sizes(prefix) if not k.endswith("/")])
    elapsed = time.perf_counter() - start
    if found != expected:
        raise BenchError(f"list {prefix}: {found} objects, expected {expected}")
    return elapsed


def sdk_read(store: Store, key: str, size: int) -> float:
    start = time.perf_counter()
    total = store.read(key)
    elapsed = time.perf_counter() - start
    if total != size:
        raise ChecksumMismatch(f"get {key}: {total} bytes, expected {size}")
    return elapsed


def files_under(store: Store, prefix: str) -> dict[str, int]:
    """Objects under ``prefix``, without the directory markers some peers write."""
    return {k: v for k, v in store.list_sizes(prefix).items() if not k.endswith("/")}


def verify_objects(store: Store, prefix: str, expected: dict[str, tuple[int, str]]) -> None:
    """Every file under ``prefix`` as the store has it, against the local originals (by name)."""
    def one(name: str) -> None:
        check(f"{prefix}{name}", store.sha256(prefix + name), expected[name])
    store.fan_out(one, sorted(expected))
