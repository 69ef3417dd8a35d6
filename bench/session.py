"""One run of every workload for one peer, in three groups that each use a fresh mount.

A sample is recorded only after the data behind it was verified: a fast wrong answer is no result.

The groups fail independently: a peer whose writes break still gets its reads and listings measured.
Each group deletes what it wrote through the SDK at the end, so the next peer finds the same bucket.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.errors import BenchError, ChecksumMismatch, StoreError
from bench.fixture import READ_KEY, Fixture
from bench.metrics import SDK, Results
from bench.peers import Peer
from bench.procs import drop_caches
from bench.workloads import (
    check,
    files_under,
    ls_long,
    read_file,
    run_tool,
    sdk_list,
    sdk_read,
    sha256_file,
    verify_objects,
    wait_until,
    warm,
    write_file,
)

log = logging.getLogger(__name__)

IDLE_SETTLE = 2.0  # seconds after mounting before the idle RSS sample: let start-up work finish


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


class Session:
    def __init__(self, fx: Fixture, results: Results, run: int) -> None:
        self.fx = fx
        self.store = fx.store
        self.results = results
        self.run = run
        self.peak_kib = 0

    def attempt(self, peer: str, group: str, work: Callable[[], None]) -> None:
        """Run one group; a failure of the peer is recorded and the bench goes on with the next group."""
        try:
            work()
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            bad_data = isinstance(exc, ChecksumMismatch)
            log.error("%s run %d, %s: %s: %s", peer, self.run, group, "DATA MISMATCH" if bad_data else "FAILED",
                      message)
            self.results.fail(peer, self.run, group, message, bad_data)

    def cleanup(self, *prefixes: str) -> None:
        for prefix in prefixes:
            try:
                self.store.delete_prefix(prefix)
            except StoreError as exc:
                log.error("cleanup of %s failed: %s", prefix, exc)

    # ---- FUSE peers

    def fuse(self, peer: Peer) -> None:
        self.peak_kib = 0
        self.attempt(peer.name, "write", lambda: self.fuse_writes(peer))
        self.attempt(peer.name, "read", lambda: self.fuse_reads(peer))
        self.attempt(peer.name, "ls", lambda: self.fuse_ls(peer))
        if self.peak_kib:
            self.results.add(peer.name, "rss_peak", self.peak_kib / 1024)

    def fuse_writes(self, peer: Peer) -> None:
        name, fx, size = peer.name, self.fx, self.fx.profile.seq_bytes
        key, small = f"w-{name}-{self.run}.bin", f"small-{name}-{self.run}"
        try:
            with peer.mounted() as mount:
                time.sleep(IDLE_SETTLE)
                self.results.add(name, "rss_idle", mount.memory().rss_kib / 1024)

                warm([fx.seq_src])
                start = time.perf_counter()
                closed = write_file(fx.seq_src, mount.path / key)
                durable = wait_until(lambda: self.store.head_size(key) == size, key, start)
                log.info("%s run %d: write: fsync+close %.2f s, durable %.2f s (%.0f MB/s)", name, self.run,
                         closed, durable, mb_per_s(size, durable))
                check(f"{name} wrote {key}", self.store.sha256(key), fx.seq_sum)
                self.results.add(name, "write_closed", mb_per_s(size, closed))
                self.results.add(name, "write_durable", mb_per_s(size, durable))

                self.copy_and_remove(name, mount.path / small, f"{small}/")
                self.peak_kib = max(self.peak_kib, mount.memory().hwm_kib)
                start = time.perf_counter()
                peer.unmount(mount)
                self.results.add(name, "umount_after_write", time.perf_counter() - start)
        finally:
            self.cleanup(key, f"{small}/")

    def copy_and_remove(self, name: str, target: Path, prefix: str) -> None:
        fx = self.fx
        expected = {prefix + n: s for n, (s, _) in fx.small_sums.items()}
        warm(sorted(fx.small_dir.iterdir()))
        start = time.perf_counter()
        copied, _ = run_tool(["cp", "-r", str(fx.small_dir), str(target)])
        durable = wait_until(lambda: files_under(self.store, prefix) == expected, f"cp -r to {prefix}", start)
        verify_objects(self.store, prefix, fx.small_sums)
        self.results.add(name, "cp_returned", copied)
        self.results.add(name, "cp_durable", durable)

        start = time.perf_counter()
        removed, _ = run_tool(["rm", "-r", str(target)])
        gone = wait_until(lambda: not self.store.list_sizes(prefix), f"rm -r of {prefix}", start)
        self.results.add(name, "rm_returned", removed)
        self.results.add(name, "rm_durable", gone)
        log.info("%s run %d: cp -r %.2f s (durable %.2f s), rm -r %.2f s (durable %.2f s)", name, self.run,
                 copied, durable, removed, gone)

    def fuse_reads(self, peer: Peer) -> None:
        name, fx, size = peer.name, self.fx, self.fx.profile.seq_bytes
        with peer.mounted() as mount:
            path = mount.path / READ_KEY
            drop_caches()
            cold = read_file(path, size)
            warm_s = read_file(path, size)
            log.info("%s run %d: read cold %.0f MB/s, warm %.0f MB/s", name, self.run, mb_per_s(size, cold),
                     mb_per_s(size, warm_s))
            check(f"{name} read {READ_KEY}", sha256_file(path), fx.seq_sum)
            self.results.add(name, "read_cold", mb_per_s(size, cold))
            self.results.add(name, "read_warm", mb_per_s(size, warm_s))
            self.peak_kib = max(self.peak_kib, mount.memory().hwm_kib)

    def fuse_ls(self, peer: Peer) -> None:
        name, fx = peer.name, self.fx
        with peer.mounted() as mount:
            drop_caches()
            cold = ls_long(mount.path / fx.ls_dir, fx.profile.ls_objects)
            warm_s = ls_long(mount.path / fx.ls_dir, fx.profile.ls_objects)
            self.results.add(name, "ls_cold", cold)
            self.results.add(name, "ls_warm", warm_s)
            self.peak_kib = max(self.peak_kib, mount.memory().hwm_kib)
        # A daemon restart, a CSI re-stage: a new process on the same cache dir, the page cache dropped.
        with peer.mounted(cache=mount.cache) as again:
            drop_caches()
            remount = ls_long(again.path / fx.ls_dir, fx.profile.ls_objects)
            self.results.add(name, "ls_remount", remount)
            self.peak_kib = max(self.peak_kib, again.memory().hwm_kib)
        log.info("%s run %d: ls -l cold %.2f s, warm %.2f s, after a remount %.2f s", name, self.run, cold, warm_s,
                 remount)

    # ---- the raw SDK

    def sdk(self) -> None:
        self.attempt(SDK, "write", self.sdk_write)
        self.attempt(SDK, "read", self.sdk_read)
        self.attempt(SDK, "ls", self.sdk_ls)

    def sdk_write(self) -> None:
        fx, size, key = self.fx, self.fx.profile.seq_bytes, f"w-{SDK}-{self.run}.bin"
        try:
            warm([fx.seq_src])
            start = time.perf_counter()
            self.store.put_file(key, fx.seq_src)
            durable = wait_until(lambda: self.store.head_size(key) == size, key, start)
            log.info("%s run %d: putFile %.2f s (%.0f MB/s)", SDK, self.run, durable, mb_per_s(size, durable))
            check(f"{SDK} wrote {key}", self.store.sha256(key), fx.seq_sum)
            self.results.add(SDK, "write_durable", mb_per_s(size, durable))
        finally:
            self.cleanup(key)

    def sdk_read(self) -> None:
        size = self.fx.profile.seq_bytes
        drop_caches()
        cold = sdk_read(self.store, READ_KEY, size)
        log.info("%s run %d: streamed GET %.0f MB/s", SDK, self.run, mb_per_s(size, cold))
        check(f"{SDK} read {READ_KEY}", self.store.sha256(READ_KEY), self.fx.seq_sum)
        self.results.add(SDK, "read_cold", mb_per_s(size, cold))

    def sdk_ls(self) -> None:
        elapsed = sdk_list(self.store, f"{self.fx.ls_dir}/", self.fx.profile.ls_objects)
        self.results.add(SDK, "ls_cold", elapsed)
        log.info("%s run %d: list %.2f s", SDK, self.run, elapsed)
