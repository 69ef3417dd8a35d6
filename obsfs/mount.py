"""Build one mount and run it: store, filesystem, FUSE session, signals and readiness.

Owns the process's root nursery. Teardown runs in reverse order of setup: stop serving, upload
what is still dirty (under a shielded deadline), unmount, close the store. SIGTERM and SIGINT are
the normal way to stop (kubelet sends SIGTERM), so they flush and exit 0, unlike a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pyfuse3
import trio

from obsfs import control
from obsfs.attrindex import INDEX_DIR
from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import StoreConfig
from obsfs.backend.obs import ObsStore
from obsfs.credentials import Credentials
from obsfs.errors import ConfigError
from obsfs.fs import Filesystem, FsConfig
from obsfs.handover import Drain, KeeperSession, kernel_session
from obsfs.indexing import AttrIndex
from obsfs.inodemap import InodeMap
from obsfs.journal import Journal
from obsfs.keeperlink import EXIT_HANDOVER
from obsfs.layout import Layout
from obsfs.meta import Defaults
from obsfs.metacache import MetaCache
from obsfs.metrics import Metrics
from obsfs.options import METRICS_OFF, ListenAddress, MountOptions, default_owner
from obsfs.readcache import ReadCache
from obsfs.reader import CHUNK, ChunkReader
from obsfs.runtime import MountSpec, fuse_options, state_path
from obsfs.staging import StagingArea
from obsfs.status import SHOWN_FILES, Report

log = logging.getLogger(__name__)


def default_cache_dir(spec: MountSpec) -> str:
    """One cache dir per endpoint, bucket and prefix, so a remount finds what a crash left behind."""
    ident = f"{spec.options.url}|{spec.bucket}|{spec.prefix}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    base = "/var/cache/obsfs" if os.geteuid() == 0 else os.path.expanduser("~/.cache/obsfs")
    return os.path.join(base, f"{spec.bucket}-{digest}")


def make_private(directory: Path) -> None:
    """Give a cache dir left by an earlier version (or made by hand) the modes the daemon's umask
    gives new files: 0700 directories, 0600 files. The umask alone is not enough: SQLite creates
    ``-wal`` and ``-shm`` with the mode of their existing database, whatever the umask."""
    directory.chmod(0o700)
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                make_private(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                os.chmod(entry.path, 0o600)


@contextlib.contextmanager
def lock_cache_dir(cache_dir: Path) -> Iterator[None]:
    """Two daemons must never share a cache dir: each would upload the other's journal.

    It holds file contents, keys and attributes, so it is made private before anything is
    opened in it (the daemon's umask, set in ``cli``, keeps what it creates so)."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(cache_dir)
    with open(cache_dir / "lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise ConfigError(f"cache dir {cache_dir} is in use by another obsfs mount (pid "
                              f"{lock.read().strip() or '?'}); give this one its own -o cache_dir=") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def store_config(opts: MountOptions, creds: Credentials) -> StoreConfig:
    return StoreConfig(endpoint=opts.url, access_key=creds.access_key, secret_key=creds.secret_key,
                       region=opts.region, signature=opts.signature, path_style=opts.use_path_request_style,
                       ssl_verify=opts.ssl_verify, socket_timeout=opts.readwrite_timeout,
                       read_deadline=opts.deadline, write_deadline=opts.write_deadline)


def fs_config(opts: MountOptions) -> FsConfig:
    uid, gid = default_owner(opts)
    root_perm = 0o777 & ~opts.mp_umask if opts.mp_umask is not None else 0o755
    return FsConfig(
        defaults=Defaults(uid=uid, gid=gid, umask=opts.umask, force_uid=opts.uid is not None,
                          force_gid=opts.gid is not None, fsgroup=opts.fsgroup),
        root_mode=stat.S_IFDIR | root_perm, read_only=opts.ro, stat_ttl=opts.stat_cache_expire,
        stat_cache_size=opts.max_stat_cache_size, entry_timeout=opts.entry_timeout,
        attr_timeout=opts.attr_timeout, negative_timeout=opts.negative_timeout,
        part_size=opts.multipart_size, parallel=opts.parallel_count, upload_workers=opts.upload_workers,
        upload_delay=opts.upload_delay, max_dirty=opts.max_dirty,
        hidden=frozenset(opts.hide) | {INDEX_DIR})  # the index's place is reserved with or without attr_index


async def _signals(stop: Callable[[], None], hand_over: Callable[[], None] | None) -> None:
    """Stay subscribed until exit: a second SIGTERM during the final upload must not kill us.
    With a keeper, SIGUSR1 (sent by the keeper) asks for a planned handover."""
    watched = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP] + ([signal.SIGUSR1] if hand_over else [])
    with trio.open_signal_receiver(*watched) as signals:
        stopping = False
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGUSR1 and hand_over is not None and not stopping:
                log.info("received SIGUSR1: draining for the next daemon")
                stopping = True
                hand_over()
                continue
            if stopping:
                log.warning("received %s again: still uploading what is pending, then exiting", name)
                continue
            log.info("received %s: flushing and unmounting", name)
            stopping = True
            stop()


async def _verify_mounted(mountpoint: str, ready: Callable[[], None], session: KeeperSession | None) -> None:
    """Prove the mount answers (a stat served by our own loop) before telling anyone it is up."""
    if session is not None:
        await session.attach(mountpoint)
    info = await trio.to_thread.run_sync(os.stat, mountpoint)
    parent = os.stat(os.path.dirname(mountpoint) or "/")
    if info.st_dev == parent.st_dev or not await trio.to_thread.run_sync(os.path.ismount, mountpoint):
        raise ConfigError(f"{mountpoint} did not become a mount point")
    log.info("mounted at %s", mountpoint)
    raise_readahead(info.st_dev)
    ready()


def raise_readahead(dev: int, kib: int = 1024) -> None:
    """The kernel sends buffered reads of read_ahead_kb (128 KiB by default); 1 MiB requests
    (the FUSE maximum) halve the per-request overhead of sequential reads."""
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as stream:
            stream.write(str(kib))
    except OSError as exc:
        log.info("could not raise %s: %s", path, exc)


def watch(metrics: Metrics, fs: Filesystem, read_cache: ReadCache) -> None:
    """The gauges, read from the live state at each scrape."""
    metrics.watch(metrics.dirty_bytes, lambda: fs.writeback.queued_bytes)
    metrics.watch(metrics.dirty_files, lambda: len(fs.writeback.pending()))
    metrics.watch(metrics.uploading_files, lambda: fs.writeback.active)
    metrics.watch(metrics.oldest_dirty, fs.writeback.oldest_age)
    metrics.watch(metrics.deletes_queued, lambda: len(fs.deletes))
    metrics.watch(metrics.dirs_owed, lambda: len(fs.dirs_owed()))
    metrics.watch(metrics.cache_bytes, lambda: read_cache.used)
    metrics.cache_limit.set(read_cache.capacity)
    metrics.dirty_limit.set(fs.config.max_dirty)


def status_json(spec: MountSpec, metrics: Metrics, fs: Filesystem, read_cache: ReadCache) -> bytes:
    """The daemon's side of ``obsfs status``."""
    waiting = fs.writeback.waiting()
    report = Report(
        mountpoint=spec.mountpoint, source=spec.bucket + (f":/{spec.prefix}" if spec.prefix else ""),
        dirty_files=len(waiting), dirty_bytes=fs.writeback.queued_bytes, uploading=fs.writeback.active,
        oldest_dirty_seconds=fs.writeback.oldest_age(), store_silence_seconds=metrics.store_silence_seconds(),
        cache_bytes=read_cache.used, cache_limit=read_cache.capacity,
        dirs_waiting=len(fs.dirs_owed()), deletes_waiting=len(fs.deletes),
        pending=[(node.path or "(deleted)", size) for node, size in waiting[:SHOWN_FILES]],
        recent_errors=list(metrics.recent_errors.entries))
    return json.dumps(dataclasses.asdict(report)).encode()


async def serve(spec: MountSpec, creds: Credentials, ready: Callable[[], None]) -> int:
    """Mount and serve until unmounted or signalled; returns the process exit code."""
    opts = spec.options
    metrics = Metrics(counting=opts.metrics != METRICS_OFF)
    store = ObsStore(store_config(opts, creds), spec.bucket)
    astore = AsyncStore(store, read_deadline=opts.deadline, write_deadline=opts.write_deadline,
                        data_threads=max(4, opts.parallel_count), metrics=metrics)
    layout = Layout.for_prefix(spec.prefix)
    await astore.check_access(layout.prefix)
    with contextlib.ExitStack() as stack:
        logging.getLogger("obsfs").addHandler(metrics.recent_errors)
        stack.callback(logging.getLogger("obsfs").removeHandler, metrics.recent_errors)
        cache_dir = Path(opts.cache_dir or default_cache_dir(spec))
        stack.enter_context(lock_cache_dir(cache_dir))
        journal = Journal(cache_dir / "journal.db")
        stack.callback(journal.close)
        stack.callback(store.close)
        staging = StagingArea(str(cache_dir / "staging"))
        read_cache = ReadCache(str(cache_dir / "data"), opts.cache_size, CHUNK)
        meta_cache = MetaCache(cache_dir / "meta.db")
        stack.callback(meta_cache.close)
        inode_map = InodeMap(cache_dir / "inodes.db")
        stack.callback(inode_map.close)
        reader = ChunkReader(astore, read_cache, opts.read_memory)
        fs = Filesystem(astore, layout, staging, journal, reader, meta_cache, inode_map, fs_config(opts),
                        metrics, session=kernel_session() if spec.keeper_socket else "")
        if opts.attr_index:
            fs.attr_index = AttrIndex(astore, layout.prefix, defaults=fs.config.defaults, meta_cache=meta_cache,
                                      delay=opts.upload_delay, hidden=fs.config.hidden)
        watch(metrics, fs, read_cache)
        routes = control.Routes(metrics=metrics.exposition,
                                status=lambda: status_json(spec, metrics, fs, read_cache))
        listen = [ListenAddress(path=str(state_path(spec.mountpoint, "control")))]
        listen += [opts.metrics] if isinstance(opts.metrics, ListenAddress) else []
        await fs.recover()
        session = KeeperSession(spec.keeper_socket) if spec.keeper_socket else None
        if session is not None:
            session.start(fs, fuse_options(spec))
        else:
            pyfuse3.init(fs, spec.mountpoint, fuse_options(spec))

        def close(unmount: bool) -> None:
            if session is not None:
                session.close(spec.mountpoint, unmount)
            else:
                pyfuse3.close(unmount=unmount)

        failed: list[str] = []
        closed = False
        handing_over = False
        # drain_deadline counts from the stop request: a request still being served then (a read
        # waiting on a store that does not answer) is cut off at it too.
        serving = trio.CancelScope()

        def stop() -> None:
            serving.deadline = trio.current_time() + opts.drain_deadline
            pyfuse3.terminate()

        drain = Drain(spec.mountpoint)
        fs.on_request = drain.at_request

        def hand_over() -> None:
            nonlocal handing_over
            handing_over = True
            drain.request()

        try:
            async with trio.open_nursery() as nursery:
                fs.nursery = reader.nursery = nursery
                if fs.attr_index is not None:
                    await nursery.start(fs.attr_index.run)
                await nursery.start(fs.writeback.run)
                await nursery.start(fs.deletes.run)
                fs.write_owed_markers()
                await nursery.start(control.serve, listen, routes)
                nursery.start_soon(_signals, stop, hand_over if session else None)
                nursery.start_soon(_verify_mounted, spec.mountpoint, ready, session)
                with serving:
                    await pyfuse3.main()
                closed = True
                if handing_over:
                    # pyfuse3.main() returned once every request read was answered (Drain); the
                    # kernel queues the rest for the next daemon, which uploads the journal.
                    close(unmount=False)
                    astore.stop_writing()
                    nursery.cancel_scope.cancel()
                    return EXIT_HANDOVER
                # Detach first: a mount that is no longer served would hang every process that
                # touches it for as long as the drain takes. The uploads need no FUSE.
                close(unmount=True)
                if serving.deadline == math.inf:  # unmounted from outside: the clock starts now
                    serving.deadline = trio.current_time() + opts.drain_deadline
                # Still inside the nursery: the upload workers must run for the drain.
                with trio.CancelScope(shield=True):
                    failed = await fs.flush_all(max(0.0, serving.deadline - trio.current_time()))
                    if fs.attr_index is not None:  # after the deletes, which change indexes too
                        await fs.attr_index.flush_all(max(0.0, serving.deadline - trio.current_time()))
                # Past the deadline: uploads still in flight are let go of, so that cancelling
                # the workers does not wait for their socket timeouts. The journal has the data.
                astore.stop_writing()
                nursery.cancel_scope.cancel()
        finally:
            if not closed:  # a keeper's mount outlives a failed daemon: the keeper decides
                close(unmount=session is None)
    if failed:
        log.error("unmounted with %d file(s) not uploaded or key(s) not deleted: %s", len(failed), ", ".join(failed))
        return 1
    log.info("unmounted %s cleanly", spec.mountpoint)
    return 0
