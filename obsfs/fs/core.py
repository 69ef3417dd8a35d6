"""State shared by every handler: the inode table, the stat caches, and how an entry is found and shown."""

from __future__ import annotations

import contextlib
import errno
import logging
import mimetypes
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pyfuse3
import trio
from cachetools import LRUCache, TTLCache

from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import ObjectInfo
from obsfs.deletes import DeleteQueue
from obsfs.dialects import Kind, folder_key, marker_keys, object_kind
from obsfs.dirtimes import DirTimes
from obsfs.errors import NotFound, ObsfsError, TemporaryFailure, first_error
from obsfs.fs.boundary import FsError, ReadOnly
from obsfs.handletable import HandleTable, StagedRow
from obsfs.indexing import AttrIndex
from obsfs.inodemap import InodeMap
from obsfs.inodes import ROOT_INO, Entry, InodeTable, Node
from obsfs.journal import Journal
from obsfs.layout import Layout, decode_name, is_under, join, name_of, parent_of
from obsfs.links import link_count
from obsfs.meta import Attrs, Defaults, attrs_from_object, implicit_dir_attrs, shown
from obsfs.metacache import MetaCache
from obsfs.metrics import Metrics
from obsfs.reader import ChunkReader, ReadState
from obsfs.staging import StagedFile, StagingArea

log = logging.getLogger(__name__)

NEGATIVE = object()  # stat-cache value for "no such path"
BLOCK = 4096


@dataclass(frozen=True)
class FsConfig:
    """The subset of mount options the handlers use."""

    defaults: Defaults
    root_mode: int = stat.S_IFDIR | 0o755
    read_only: bool = False
    stat_ttl: float = 60.0
    stat_cache_size: int = 100_000
    entry_timeout: float = 60.0
    attr_timeout: float = 60.0
    negative_timeout: float = 5.0
    part_size: int = 16 << 20
    parallel: int = 8  # parts of one upload in flight
    upload_workers: int = 16  # files uploading at once
    upload_delay: float = 0.5
    max_dirty: int = 1 << 30
    hidden: frozenset[str] = frozenset()  # names at the mount root that are not part of the tree


@dataclass(eq=False)
class FileHandle:
    node: Node
    writable: bool
    reading: ReadState = field(default_factory=ReadState)


@dataclass(eq=False)
class DirHandle:
    node: Node
    entries: list[tuple[str, Entry]] | None = None


def now_ns() -> int:
    return time.time_ns()


def content_type_for(path: str) -> str:
    return mimetypes.guess_type(name_of(path))[0] or "application/octet-stream"


def user_metadata(info: ObjectInfo) -> dict[str, str]:
    """The s3fs attribute headers of an object (and our device number), to carry over in a copy."""
    meta = info.metadata or {}
    return {k: meta[k] for k in ("mode", "uid", "gid", "mtime", "ctime", "atime", "rdev") if k in meta}


class FsCore(pyfuse3.Operations):
    """The state all handlers share, and the lookups they build on. Code between two awaits is atomic."""

    # No FUSE writeback cache (enable_writeback_cache): with it the kernel stops taking size and
    # mtime from us for any regular file it has cached, so changes other clients make to a shared
    # bucket would show with a stale size, and a listing's provisional mtime would stick.

    def __init__(self, store: AsyncStore, layout: Layout, staging: StagingArea, journal: Journal,
                 reader: ChunkReader, meta_cache: MetaCache, inode_map: InodeMap, config: FsConfig,
                 metrics: Metrics | None = None, *, session: str = "") -> None:
        super().__init__()
        self.metrics = metrics or Metrics()
        self.store = store
        self.layout = layout
        self.staging = staging
        self.journal = journal
        self.reader = reader
        self.meta_cache = meta_cache
        self.config = config
        # ``session`` names the kernel session (handletable.py); without one, no fh survives us.
        self.handle_table = HandleTable(inode_map, session or uuid.uuid4().hex, now_ns())
        self.started_ns = self.handle_table.started_ns
        self.inodes = InodeTable(self._root_entry(), inode_map)
        self.stat_cache: TTLCache[str, Any] = TTLCache(config.stat_cache_size, config.stat_ttl,
                                                       timer=time.monotonic)
        # Complete listings: directory path -> name in it -> is a directory. A name missing here
        # is ENOENT without asking the store, which makes creating many files one request each;
        # the directories among them give the directory's st_nlink (links.py).
        self.dir_cache: TTLCache[str, dict[str, bool]] = TTLCache(4096, config.stat_ttl, timer=time.monotonic)
        self.local_only: dict[str, Node] = {}
        self._handles: dict[int, FileHandle | DirHandle] = {}
        self._inflight: dict[str, trio.Event] = {}
        self._stale: set[str] = set()
        # Directory path -> one set per listing of it in progress: the names this mount changed
        # (created, uploaded, renamed, removed) while its LIST pages were being fetched.
        self._listings: dict[str, list[set[str]]] = {}
        # Directory path -> how many entries its last listing found: which directories are small
        # enough to list again for a lookup (listing.py, ``_names_for_lookup``).
        self._listed_sizes: LRUCache[str, int] = LRUCache(4096)
        self._relisting: dict[str, trio.Event] = {}  # listings made for lookups, running now
        self.dir_times = DirTimes()  # directory times not yet in their markers
        # Keys removed here whose DELETE is queued: the store still lists them, we must not.
        self.deletes = DeleteQueue(store.delete_many, journal, delay=config.upload_delay, metrics=self.metrics)
        self.nursery: trio.Nursery | None = None  # set by mount.py; background prefetches run here
        self.attr_index: AttrIndex | None = None  # set by mount.py with -o attr_index
        # Called by the boundary as a request's handler starts, before its first await: the one
        # moment at which no other task of pyfuse3's loop can be about to read a request (a
        # planned handover stops the loop there, handover.Drain).
        self.on_request: Callable[[], None] = lambda: None
        self._spare_limiter = trio.CapacityLimiter(1)  # one refill of spare staged files at a time

    def _root_entry(self) -> Entry:
        d = self.config.defaults
        return Entry(Attrs(mode=self.config.root_mode, uid=d.uid, gid=d.gid, size=0, atime_ns=self.started_ns,
                           mtime_ns=self.started_ns, ctime_ns=self.started_ns), has_marker=True)

    def _implicit_dir(self, path: str) -> Attrs:
        """A directory that exists only as a key prefix: the defaults, with the times this mount
        gave it (dirtimes.py)."""
        return self.dir_times.implicit.get(path) or implicit_dir_attrs(self.config.defaults, self.started_ns)

    def _object_entry(self, info: ObjectInfo, *, is_dir: bool, has_marker: bool | None = None,
                      object_marker: bool = False) -> Entry:
        """The entry an object gives; a directory's attributes come from its marker, which is a
        ``dir/`` object unless ``has_marker`` says otherwise (another tool's marker)."""
        attrs = attrs_from_object(info, is_dir=is_dir, defaults=self.config.defaults)
        return Entry(attrs=attrs, etag=info.etag or None, content_type=info.content_type,
                     exact=info.metadata is not None, has_marker=is_dir if has_marker is None else has_marker,
                     object_marker=object_marker)

    def _file_entry(self, info: ObjectInfo) -> Entry:
        """The entry a file's HEAD gives; its exact attributes also go to the metadata cache."""
        entry = self._object_entry(info, is_dir=False)
        self._stored(info.key, entry)
        return entry

    def _stored(self, key: str, entry: Entry) -> None:
        """``entry`` is what the file object at ``key`` holds, as a HEAD or our own write of it
        showed. Every such object needs its row: a listing (the next one after ``stat_ttl``, or
        after a remount or a directory rename) that finds none shows the defaults a LIST
        allows, and a symlink, FIFO or device as the regular file its key looks like, which
        gives it another inode number (the kernel keeps an inode's type) until a HEAD."""
        if entry.etag:
            self.meta_cache.put(key, entry.etag, entry.attrs, entry.content_type)

    def _remember(self, path: str, entry: Entry | None) -> None:
        """Record what a path is now, in the cache and in its node (unless the node has local truth)."""
        if path in self._inflight:
            self._stale.add(path)  # a HEAD that started before this change must not overwrite it
        if path:
            for changed in self._listings.get(parent_of(path), ()):
                changed.add(name_of(path))  # a page already fetched may say otherwise
        self.stat_cache[path] = NEGATIVE if entry is None else entry
        node = self.inodes.by_path(path)
        if node is not None and entry is not None:
            if node.entry.attrs.kind == entry.attrs.kind:
                node.entry = entry
            elif not self._has_local_truth(node):
                # Another kind of object has the name now (often: a listing showed a FIFO as the
                # regular file its key looks like, until its HEAD). The kernel takes an inode's
                # type for good, so the next lookup hands out a new inode, as InodeTable.add does.
                self.inodes.detach(node)
        parent = self.dir_cache.get(parent_of(path)) if path else None
        if parent is not None:
            if entry is None:
                parent.pop(name_of(path), None)
            else:
                parent[name_of(path)] = entry.attrs.is_dir

    def _forget_subtree(self, path: str) -> None:
        for cached in [p for p in self.stat_cache if is_under(p, path)]:
            self.stat_cache.pop(cached, None)
        for cached in [p for p in self.dir_cache if is_under(p, path)]:
            self.dir_cache.pop(cached, None)

    def _marker_keys(self, path: str, entry: Entry) -> list[str]:
        """The keys that may mark the directory at ``path``, its own and other tools' ones: what
        removing it deletes, in one batch."""
        return marker_keys(self.layout.file_key(path), self.layout.dir_key(path),
                           object_marker=entry.object_marker)

    def _has_local_truth(self, node: Node | None) -> bool:
        return node is not None and (node.local_only or node.staged is not None)

    async def _fetch(self, path: str) -> Entry | None:
        """Ask the store what ``path`` is: a file, a directory (with its marker, another tool's
        marker, or implicit), or nothing. A file costs one HEAD, as before directories of other
        tools were read; what is not one costs the same time (obsfs/dialects.py)."""
        if not path:
            return self._root_entry()
        key = self.layout.file_key(path)
        if key in self.deletes:  # removed here; the store has not been told yet
            return await self._fetch_dir(path)
        try:
            info = await self.store.head(key)
        except NotFound:
            return await self._fetch_dir(path)
        kind = object_kind(info, has_children=None)
        if kind is Kind.FILE:
            return self._file_entry(info)
        # A zero-byte object that may mark a directory: keys below and a "dir/" marker decide.
        first = await self._first_live(key + "/")
        if kind is Kind.ASK and first is None:
            return self._file_entry(info)
        if first is not None and first.key == key + "/":
            with contextlib.suppress(NotFound):
                return self._object_entry(await self.store.head(key + "/"), is_dir=True, object_marker=True)
        return self._object_entry(info, is_dir=True, has_marker=False, object_marker=True)

    async def _fetch_dir(self, path: str) -> Entry | None:
        """``path`` where no object has its name: a directory if keys exist below it or its
        ``_$folder$`` marker does. The HEAD of that marker runs alongside the LIST, so this costs
        one request more than the LIST alone, but no more time."""
        key = self.layout.file_key(path)
        folder: ObjectInfo | None = None

        async def head_folder() -> None:
            nonlocal folder
            marker = folder_key(key)
            if marker is not None and marker not in self.deletes:
                with contextlib.suppress(NotFound):
                    folder = await self.store.head(marker)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(head_folder)
                first = await self._first_live(key + "/")
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if first is not None and first.key == key + "/":
            with contextlib.suppress(NotFound):
                return self._object_entry(await self.store.head(key + "/"), is_dir=True)
        if folder is not None:
            return self._object_entry(folder, is_dir=True, has_marker=False)
        if first is not None:
            return Entry(self._implicit_dir(path))
        return None

    async def _first_live(self, prefix: str) -> ObjectInfo | None:
        """The first key under ``prefix`` not removed here: one LIST of one key, or more pages
        when the store still lists keys whose deletes are queued."""
        marker: str | None = None
        max_keys = 1000 if len(self.deletes) else 1
        with self.deletes.listing() as removed:
            while True:
                page = await self.store.list(prefix=prefix, delimiter=None, marker=marker, max_keys=max_keys)
                for info in page.objects:
                    if not removed(info.key):
                        return info
                if page.next_marker is None:
                    return None
                marker, max_keys = page.next_marker, 1000

    async def _stat(self, path: str, *, need_exact: bool = True, quick: bool = False) -> Entry | None:
        """The current entry for ``path``: local truth, then the cache, then one fetch at a time.

        ``quick``: while the store is known to be down, raise TemporaryFailure at once instead of
        waiting a deadline for it; a fetch in the background finds out when it is back.
        """
        node = self.inodes.by_path(path)
        if node is not None and (self._has_local_truth(node) or not path):
            return node.entry
        cached = self.stat_cache.get(path)
        if cached is NEGATIVE:
            return None
        if cached is not None and (cached.exact or not need_exact):
            return cast(Entry, cached)
        if cached is None:
            parent_names = self.dir_cache.get(parent_of(path))
            if parent_names is not None and name_of(path) not in parent_names:
                return None
        if quick and self.store.reachability.down:
            if path not in self._inflight and self.nursery is not None:
                self.nursery.start_soon(self._stat_quietly, path)
            raise TemporaryFailure(f"{path}: the store is not answering", key=path)
        while (event := self._inflight.get(path)) is not None:
            await event.wait()
            cached = self.stat_cache.get(path)
            if cached is NEGATIVE:
                return None
            if cached is not None and cached.exact:
                return cast(Entry, cached)
        event = trio.Event()
        self._inflight[path] = event
        try:
            entry = await self._fetch(path)
            if path in self._stale:
                # Changed locally while we asked; the local change wins.
                cached = self.stat_cache.get(path)
                return None if cached is NEGATIVE or cached is None else cast(Entry, cached)
            self._remember(path, entry)
            return entry
        finally:
            self._stale.discard(path)
            del self._inflight[path]
            event.set()

    async def _stat_quietly(self, path: str) -> None:
        """``_stat`` in the background during an outage: its answer fills the cache, and ends the
        outage for the quick lookups once the store is back."""
        try:
            await self._stat(path)
        except ObsfsError as exc:
            log.debug("background lookup of %s: %s", path, exc)

    async def _require(self, path: str) -> Entry:
        entry = await self._stat(path)
        if entry is None:
            raise FsError(errno.ENOENT, f"{path}: no such file or directory")
        return entry

    def _node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise FsError(errno.ESTALE, f"unknown inode {ino}")
        return node

    def _path(self, node: Node) -> str:
        if node.path is None:
            raise FsError(errno.ENOENT, f"inode {node.ino} was deleted")
        return node.path

    def _child(self, parent_ino: int, name: bytes, *, creating: bool = False) -> str:
        parent = self._node(parent_ino)
        text = decode_name(name)
        if parent_ino == ROOT_INO and text in self.config.hidden:
            # e.g. the CSI controller's volume record: neither visible nor replaceable from inside
            raise FsError(errno.EPERM if creating else errno.ENOENT, f"{text} is reserved")
        return join(self._path(parent), text)

    def _writable(self) -> None:
        if self.config.read_only:
            raise ReadOnly("read-only mount")

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = node.entry
        attrs = shown(entry.attrs, self.config.defaults, is_root=node.ino == ROOT_INO)
        out = pyfuse3.EntryAttributes()
        out.st_ino = node.ino
        out.generation = 0
        if entry.exact:
            out.entry_timeout = self.config.entry_timeout
            out.attr_timeout = self.config.attr_timeout
        else:
            out.entry_timeout = 0
            out.attr_timeout = 0
        out.st_mode = attrs.mode
        listing = self.dir_cache.get(node.path) if attrs.is_dir and node.path is not None else None
        out.st_nlink = link_count(is_dir=attrs.is_dir, unlinked=node.path is None, children=listing)
        out.st_uid = attrs.uid
        out.st_gid = attrs.gid
        out.st_rdev = attrs.rdev
        size = attrs.size
        if node.staged is not None:
            size = node.staged.size()
        elif attrs.is_link and entry.link_target is not None:
            size = len(entry.link_target)
        elif attrs.is_dir:
            size = BLOCK
        out.st_size = size
        out.st_blksize = BLOCK
        out.st_blocks = (size + 511) // 512
        out.st_atime_ns = attrs.atime_ns
        out.st_mtime_ns = attrs.mtime_ns
        out.st_ctime_ns = attrs.ctime_ns
        return out

    def _hand_out(self, path: str, entry: Entry) -> pyfuse3.EntryAttributes:
        """Reply with an inode for ``path``: the kernel now holds one more reference."""
        node = self.inodes.by_path(path)
        if node is None or not self._has_local_truth(node):
            node = self.inodes.add(path, entry)
        node.lookups += 1
        return self._attributes(node)

    def _add_handle(self, handle: FileHandle | DirHandle) -> int:
        is_file = isinstance(handle, FileHandle)
        fh = self.handle_table.open(handle.node.ino, writable=is_file and cast(FileHandle, handle).writable,
                                    is_dir=not is_file)
        self._handles[fh] = handle
        return fh

    def _drop_handle(self, fh: int) -> None:
        self._handles.pop(fh, None)
        self.handle_table.close(fh)

    async def revive_inode(self, ino: int) -> None:
        """Make the node of an inode number the kernel names and this daemon does not hold: one
        an earlier daemon of this kernel session handed out (``-o keeper``), or one this daemon
        forgot. The inode table knows its path; its entry is fetched as a lookup would.

        Lookup counts: the kernel's count for a node made here is unknown (the FORGETs it sent
        to a dead daemon are lost too). The node starts at 0 and any FORGET drops it; that is
        safe because the number stays in the inode table for as long as its path names the same
        entry, so the next request that names it makes the node again. Open handles and staged
        data keep a node regardless (``InodeTable.drop_if_unused``).

        A number the table does not know (its file was deleted or replaced by another kind)
        gets ESTALE, not ENOENT: the VFS then walks the path again with a fresh LOOKUP.
        """
        if self.inodes.get(ino) is not None:
            return
        known = self.inodes.numbers.path_of(ino)
        if known is None:
            raise FsError(errno.ESTALE, f"inode {ino} is unknown")
        path, kind = known
        entry = await self._stat(path)
        if self.inodes.get(ino) is not None:
            return  # made by a request that ran while we fetched
        if entry is None or entry.attrs.kind != kind:
            raise FsError(errno.ESTALE, f"inode {ino} ({path}) no longer exists")
        if self.inodes.add(path, entry).ino != ino:
            raise FsError(errno.ESTALE, f"inode {ino} ({path}) was replaced")
        log.debug("inode %d (%s) taken over from an earlier daemon", ino, path)

    async def revive_handle(self, fh: int) -> None:
        """Make the handle of an fh number an earlier daemon of this kernel session handed out
        (handletable.py); an fh the table does not know stays unknown (EBADF)."""
        if fh in self._handles or (row := self.handle_table.get(fh)) is None:
            return
        try:
            await self.revive_inode(row.ino)
            node = self._node(row.ino)
        except FsError as exc:
            if exc.errno != errno.ESTALE:
                raise
            # Its file is gone (deleted while no daemon served): the fd can still be closed. A
            # node of no path, outside the table, answers ENOENT for I/O until then.
            kind = stat.S_IFDIR if row.is_dir else stat.S_IFREG
            node = Node(row.ino, None, Entry(Attrs(mode=kind, uid=0, gid=0, size=0, atime_ns=0, mtime_ns=0,
                                                   ctime_ns=0)))
        if fh in self._handles:
            return
        if row.is_dir:
            self._handles[fh] = DirHandle(node)
        else:
            node.opens += 1
            self._handles[fh] = FileHandle(node, writable=row.writable)
        log.info("fh %d (%s) taken over from an earlier daemon", fh, node.path)

    def _note_staged(self, node: Node) -> None:
        """Keep on disk what the next daemon needs to go on with an open file's staged data."""
        staged = node.staged
        if staged is None:
            return
        attrs, path = node.entry.attrs, node.path or ""
        self.handle_table.stage(StagedRow(node.ino, staged.name, staged.base_etag, attrs.mode, attrs.uid,
                                          attrs.gid, attrs.atime_ns,
                                          node.entry.content_type or content_type_for(path)))

    def _new_staged(self) -> StagedFile:
        """A new empty staged file, taken from the spares a thread made ahead (staging.py)."""
        staged = self.staging.new()
        if self.nursery is not None and (count := self.staging.spares_wanted()):
            self.nursery.start_soon(self._refill_spares, count, name="staging spares")
        return staged

    async def _refill_spares(self, count: int) -> None:
        made: list[StagedFile] = []
        try:
            made = await trio.to_thread.run_sync(self.staging.make_spares, count, limiter=self._spare_limiter)
        finally:
            self.staging.add_spares(made)

    def _file_handle(self, fh: int) -> FileHandle:
        handle = self._handles.get(fh)
        if not isinstance(handle, FileHandle):
            raise FsError(errno.EBADF)
        return handle

    @staticmethod
    def _drop_stream(node: Node, why: str) -> None:
        if node.stream is not None:
            node.stream.abandon(why)
            node.stream = None
