"""One run of every workload for one peer, in groups that each use a fresh mount.

A sample is recorded only after the data behind it was verified: a fast wrong answer is no result.

The groups fail independently: a peer whose writes break still gets its reads and listings measured.
Each group deletes what it wrote through the SDK at the end, so the next peer finds the same bucket.

The raw SDK runs the same groups where it has an equivalent; in the many-files workloads it works
with SDK_THREADS threads, one request per file, as the floor a mount is compared with. A FUSE
peer's workloads also take the CPU seconds of its daemon, from before the tool starts until the
store shows the result.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.attrs import LISTED
from bench.errors import BenchError, StoreError, WrongAnswer
from bench.fixture import READ_KEY, Fixture, Sums, plant
from bench.layout import flat_names
from bench.metrics import SDK, Results
from bench.peers import Mount, ObsfsIndexedPeer, ObsfsPeer, Peer
from bench.procs import drop_caches
from bench.workloads import (
    SDK_THREADS,
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
    write_owned,
)
from obsfs.attrindex import INDEX_DIR

log = logging.getLogger(__name__)

IDLE_SETTLE = 2.0  # seconds after mounting before the idle RSS sample: let start-up work finish


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


@dataclass(frozen=True)
class Timing:
    returned: float  # seconds until the tool (or the SDK's last request) returned
    durable: float  # seconds until the store showed the result
    cpu: float | None  # CPU seconds of the mount's processes over that time; None for the SDK


class Session:
    def __init__(self, fx: Fixture, results: Results, run: int, workloads: Collection[str]) -> None:
        self.fx = fx
        self.store = fx.store
        self.results = results
        self.run = run
        self.workloads = workloads  # the groups to run; the others' rows stay "n/a"
        self.peak_kib = 0
        self._indexed: ObsfsIndexedPeer | None = None
        self.owned_prefix = f"lsown-{run}/"
        self._owned: bool | None = None  # the ls_own directory: not tried, being written or failed, written

    def attempt(self, peer: str, group: str, work: Callable[[], None]) -> None:
        """Run one group; a failure of the peer is recorded and the bench goes on with the next group."""
        if group not in self.workloads:
            return
        try:
            work()
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            bad_data = isinstance(exc, WrongAnswer)
            log.error("%s run %d, %s: %s: %s", peer, self.run, group, "DATA MISMATCH" if bad_data else "FAILED",
                      message)
            self.results.fail(peer, self.run, group, message, bad_data)

    def cleanup(self, *prefixes: str) -> None:
        for prefix in prefixes:
            try:
                self.store.delete_prefix(prefix)
            except StoreError as exc:
                log.error("cleanup of %s failed: %s", prefix, exc)

    def prefix(self, workload: str, peer: str) -> str:
        return f"{workload}-{peer}-{self.run}/"

    def measure(self, act: Callable[[], object], durable: Callable[[], bool], what: str,
                mount: Mount | None) -> Timing:
        """Time ``act`` until it returns and until the store shows ``durable``, with the daemon's CPU."""
        before = mount.cpu() if mount else 0.0
        start = time.perf_counter()
        act()
        returned = time.perf_counter() - start
        durable_s = wait_until(durable, what, start)
        cpu = mount.cpu() - before if mount else None
        log.info("%s run %d: %s returned %.2f s, durable %.2f s%s", mount.peer if mount else SDK, self.run, what,
                 returned, durable_s, "" if cpu is None else f", daemon CPU {cpu:.2f} s")
        return Timing(returned, durable_s, cpu)

    def record(self, peer: str, workload: str, timing: Timing) -> None:
        """``workload``_durable always; _returned and _cpu for a mount, where they differ from it."""
        self.results.add(peer, f"{workload}_durable", timing.durable)
        if timing.cpu is not None:
            self.results.add(peer, f"{workload}_returned", timing.returned)
            self.results.add(peer, f"{workload}_cpu", timing.cpu)

    # ---- workloads that mounts and the SDK share

    def copy_in(self, peer: str, workload: str, src: Path, sums: Sums, mount: Mount | None) -> None:
        """``cp -r`` of a local directory onto the mount, or the SDK's upload of the same files."""
        prefix = self.prefix(workload, peer)
        expected = {prefix + name: size for name, (size, _) in sums.items()}
        warm([src / name for name in sums])

        def copy() -> None:
            if mount is None:
                self.store.fan_out(lambda name: self.store.put_file(prefix + name, src / name), sorted(sums),
                                   SDK_THREADS)
            else:
                run_tool(["cp", "-r", str(src), str(mount.path / prefix.rstrip("/"))])

        try:
            timing = self.measure(copy, lambda: files_under(self.store, prefix) == expected, f"cp -r to {prefix}",
                                  mount)
            verify_objects(self.store, prefix, sums)
            self.record(peer, workload, timing)
        finally:
            if mount is None:  # a mount's copy is deleted after its unmount, so it never sees it vanish
                self.cleanup(prefix)

    def remove(self, peer: Peer | None, workload: str, names: list[str]) -> None:
        """``rm -r`` on a fresh mount of a tree the SDK planted, or the SDK deleting the same keys."""
        name = peer.name if peer else SDK
        prefix = self.prefix(workload, name)
        keys = [prefix + n for n in names]
        try:
            plant(self.store, keys)
            if peer is None:
                timing = self.measure(lambda: self.store.fan_out(self.store.delete_key, keys, SDK_THREADS),
                                      lambda: not self.store.any_under(prefix), f"delete of {prefix}", None)
            else:
                with self.mounted(peer) as mount:
                    argv = ["rm", "-r", str(mount.path / prefix.rstrip("/"))]
                    timing = self.measure(lambda: run_tool(argv), lambda: not self.store.any_under(prefix),
                                          f"rm -r of {prefix}", mount)
            self.record(name, workload, timing)
        finally:
            self.cleanup(prefix)

    # ---- FUSE peers

    @contextmanager
    def mounted(self, peer: Peer, cache: Path | None = None) -> Iterator[Mount]:
        """A mount whose start-up time and peak memory are recorded; a remount (``cache``) is not a start."""
        with peer.mounted(cache) as mount:
            if cache is None:
                self.results.add(peer.name, "mount_ready", mount.ready_s)
            try:
                yield mount
            finally:
                mount.memory()
                self.peak_kib = max(self.peak_kib, mount.peak.hwm_kib)

    def fuse(self, peer: Peer) -> None:
        self.peak_kib = 0
        self.attempt(peer.name, "write", lambda: self.fuse_writes(peer))
        self.attempt(peer.name, "read", lambda: self.fuse_reads(peer))
        self.attempt(peer.name, "ls", lambda: self.fuse_ls(peer))
        self.attempt(peer.name, "ls_own", lambda: self.fuse_ls_own(peer))
        self.attempt(peer.name, "rm_flat", lambda: self.remove(peer, "rm_flat", self.fx.rm_flat))
        self.attempt(peer.name, "rm_tree", lambda: self.remove(peer, "rm_tree", self.fx.rm_tree))
        self.attempt(peer.name, "tree", lambda: self.fuse_tree(peer))
        if self.peak_kib:
            self.results.add(peer.name, "rss_peak", self.peak_kib / 1024)

    def fuse_writes(self, peer: Peer) -> None:
        name, fx, size = peer.name, self.fx, self.fx.profile.seq_bytes
        key = f"w-{name}-{self.run}.bin"
        try:
            with self.mounted(peer) as mount:
                time.sleep(IDLE_SETTLE)
                self.results.add(name, "rss_idle", mount.memory().rss_kib / 1024)

                warm([fx.seq_src])
                timing = self.measure(lambda: write_file(fx.seq_src, mount.path / key),
                                      lambda: self.store.head_size(key) == size, f"write of {key}", mount)
                check(f"{name} wrote {key}", self.store.sha256(key), fx.seq_sum)
                self.results.add(name, "write_closed", mb_per_s(size, timing.returned))
                self.results.add(name, "write_durable", mb_per_s(size, timing.durable))
                if timing.cpu is not None:
                    self.results.add(name, "write_cpu", timing.cpu)

                self.copy_in(name, "cp", fx.small_dir, fx.small_sums, mount)
                mount.memory()
                start = time.perf_counter()
                peer.unmount(mount)
                self.results.add(name, "umount_after_write", time.perf_counter() - start)
        finally:
            self.cleanup(key, self.prefix("cp", name))

    def fuse_reads(self, peer: Peer) -> None:
        name, fx, size = peer.name, self.fx, self.fx.profile.seq_bytes
        with self.mounted(peer) as mount:
            path = mount.path / READ_KEY
            drop_caches()
            before = mount.cpu()
            cold = read_file(path, size)
            warm_s = read_file(path, size)
            cpu = mount.cpu() - before
            rss = mount.memory().hwm_kib / 1024  # a fresh mount that did nothing but read: its peak is the read's
            log.info("%s run %d: read cold %.0f MB/s, warm %.0f MB/s, daemon CPU %.2f s, peak RSS %.0f MiB", name,
                     self.run, mb_per_s(size, cold), mb_per_s(size, warm_s), cpu, rss)
            check(f"{name} read {READ_KEY}", sha256_file(path), fx.seq_sum)
            self.results.add(name, "read_cold", mb_per_s(size, cold))
            self.results.add(name, "read_warm", mb_per_s(size, warm_s))
            self.results.add(name, "read_cpu", cpu)
            self.results.add(name, "rss_read", rss)

    def fuse_ls(self, peer: Peer) -> None:
        name, fx = peer.name, self.fx

        def ls(mount: Mount) -> float:
            return ls_long(mount.path / fx.ls_dir, fx.profile.ls_objects, LISTED, peer.honors)

        with self.mounted(peer) as mount:
            drop_caches()
            before = mount.cpu()
            cold = ls(mount)
            warm_s = ls(mount)
            cpu = mount.cpu() - before
            self.results.add(name, "ls_cold", cold)
            self.results.add(name, "ls_warm", warm_s)
            self.results.add(name, "ls_cpu", cpu)
        # A daemon restart, a CSI re-stage: a new process on the same cache dir, the page cache dropped.
        with self.mounted(peer, cache=mount.cache) as again:
            drop_caches()
            remount = ls(again)
            self.results.add(name, "ls_remount", remount)
        log.info("%s run %d: ls -l cold %.2f s, warm %.2f s (daemon CPU %.2f s), after a remount %.2f s", name,
                 self.run, cold, warm_s, cpu, remount)

    def indexed(self, like: Peer) -> ObsfsIndexedPeer:
        """The obsfs with ``-o attr_index`` that writes the ``ls_own`` directory (one for the bench)."""
        if self._indexed is None:
            self._indexed = ObsfsIndexedPeer(like.endpoint, like.bucket, like.workdir, like.hang_guard)
        return self._indexed

    def owned_dir(self, like: Peer) -> str:
        """The ``ls_own`` directory of this run, written through obsfs with ``-o attr_index`` by
        the first peer that needs it. Every peer of the run lists the same one, as they all list the
        same ``ls`` directory: writing 10,000 files anew for each peer cost a minute a peer."""
        prefix = self.owned_prefix
        if self._owned:
            return prefix
        if self._owned is not None:
            raise BenchError(f"writing {prefix} through obsfs failed earlier in this run; see the log")
        count, writer = self.fx.profile.ls_objects, self.indexed(like)
        self._owned = False  # until written: later peers are told, and finish() cleans up
        with writer.mounted() as mount:
            start = time.perf_counter()
            write_owned(mount.path / prefix.rstrip("/"), flat_names(count), LISTED)
            writer.unmount(mount)  # uploads, then writes the index
            log.info("run %d: %d files written through obsfs with attr_index in %.1f s", self.run, count,
                     time.perf_counter() - start)
        self._owned = True
        return prefix

    def finish(self) -> None:
        """Delete what the run's workloads shared."""
        if self._owned is not None:
            self.cleanup(self.owned_prefix, f"{INDEX_DIR}/{self.owned_prefix}")
            self._owned = None

    def fuse_ls_own(self, peer: Peer) -> None:
        """Issue #16.2: cold ``ls -l`` of a directory that obsfs wrote (``-o attr_index``, files
        with LISTED's attributes set before close), by ``peer`` on a fresh mount; obsfs lists it
        with the option too. s3fs and rclone see the same objects as in any tree obsfs wrote."""
        name, count = peer.name, self.fx.profile.ls_objects
        prefix = self.owned_dir(peer)
        lister = self.indexed(peer) if isinstance(peer, ObsfsPeer) else peer
        with lister.mounted() as mount:
            drop_caches()
            before = mount.cpu()
            cold = ls_long(mount.path / prefix.rstrip("/"), count, LISTED, peer.honors)
            cpu = mount.cpu() - before
        self.results.add(name, "ls_own_cold", cold)
        self.results.add(name, "ls_own_cpu", cpu)
        log.info("%s run %d: ls -l of what obsfs wrote, cold %.2f s (daemon CPU %.2f s)", name, self.run, cold, cpu)

    def fuse_tree(self, peer: Peer) -> None:
        try:
            with self.mounted(peer) as mount:
                self.copy_in(peer.name, "tree", self.fx.tree_dir, self.fx.tree_sums, mount)
        finally:
            self.cleanup(self.prefix("tree", peer.name))

    # ---- the raw SDK

    def sdk(self) -> None:
        fx = self.fx
        self.attempt(SDK, "write", self.sdk_write)
        self.attempt(SDK, "write", lambda: self.copy_in(SDK, "cp", fx.small_dir, fx.small_sums, None))
        self.attempt(SDK, "read", self.sdk_read)
        self.attempt(SDK, "ls", self.sdk_ls)
        self.attempt(SDK, "rm_flat", lambda: self.remove(None, "rm_flat", fx.rm_flat))
        self.attempt(SDK, "rm_tree", lambda: self.remove(None, "rm_tree", fx.rm_tree))
        self.attempt(SDK, "tree", lambda: self.copy_in(SDK, "tree", fx.tree_dir, fx.tree_sums, None))

    def sdk_write(self) -> None:
        fx, size, key = self.fx, self.fx.profile.seq_bytes, f"w-{SDK}-{self.run}.bin"
        try:
            warm([fx.seq_src])
            timing = self.measure(lambda: self.store.put_file(key, fx.seq_src),
                                  lambda: self.store.head_size(key) == size, f"putFile of {key}", None)
            check(f"{SDK} wrote {key}", self.store.sha256(key), fx.seq_sum)
            self.results.add(SDK, "write_durable", mb_per_s(size, timing.durable))
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
