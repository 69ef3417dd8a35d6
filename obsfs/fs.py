"""The FUSE request handlers: a bucket (or prefix) as a POSIX directory tree.

Every handler runs in the one trio thread and owns all mutable state; code between two awaits
is atomic. Each handler sits behind ``@boundary``, the single place where our exceptions become
errno values, so no exception can kill the mount.

Objects map 1:1 to keys in s3fs's format (see ``meta.py`` and ``layout.py``). What the kernel
sees comes from ``Entry`` values, cached per path; a listing fills that cache without a HEAD per
entry, and entries whose mode is still a default are handed to the kernel with zero timeouts
(and refreshed by a background HEAD), so a guessed mode is never cached as if it were stored.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import mimetypes
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import pyfuse3
import trio
from cachetools import TTLCache

from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import ObjectInfo
from obsfs.errors import (
    AccessDenied,
    BadCredentials,
    NotFound,
    ObsfsError,
    PreconditionFailed,
    TemporaryFailure,
    first_error,
)
from obsfs.inodes import ROOT_INO, Entry, InodeTable, Node
from obsfs.journal import DirtyRecord, Journal
from obsfs.layout import InvalidName, Layout, decode_name, is_under, join, listed_name, name_of, parent_of, rebase
from obsfs.links import link_count
from obsfs.meta import (
    DIR_CONTENT_TYPE,
    Attrs,
    Defaults,
    attrs_from_object,
    implicit_dir_attrs,
    shown,
    to_metadata,
)
from obsfs.metacache import MetaCache
from obsfs.partstream import PartStream
from obsfs.reader import ChunkReader, ReadState
from obsfs.staging import StagedFile, StagingArea
from obsfs.upload import local_etags, upload_file
from obsfs.writeback import WriteBack

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

NEGATIVE = object()  # stat-cache value for "no such path"
HEAD_WORKERS = 16  # threads HEADing a listing's entries (32 measured slower: GIL contention)
BLOCK = 4096


class ReadOnly(ObsfsError):
    """A write on a read-only mount."""


class FsError(ObsfsError):
    """A POSIX condition found by the filesystem logic itself (ENOTEMPTY, EISDIR, ...)."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or os.strerror(err))
        self.errno = err


def errno_for(exc: ObsfsError) -> int:
    """The one mapping from our exception types to errno."""
    if isinstance(exc, FsError):
        return exc.errno
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, AccessDenied | BadCredentials):
        return errno.EACCES
    if isinstance(exc, ReadOnly):
        return errno.EROFS
    if isinstance(exc, InvalidName):
        return errno.ENAMETOOLONG if exc.too_long else errno.EINVAL
    return errno.EIO


def boundary(fn: F) -> F:
    """Translate every exception of a handler into a FUSEError, logging unexpected ones once."""

    @functools.wraps(fn)
    async def wrapper(self: Filesystem, *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:  # the cache disk: ENOSPC, EIO, ...
            log.warning("%s: local cache: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except ObsfsError as exc:
            err = errno_for(exc)
            level = logging.DEBUG if err in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY) else logging.WARNING
            log.log(level, "%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(err) from None
        except Exception:
            log.exception("%s: unexpected error, answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return cast(F, wrapper)


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


def _now_ns() -> int:
    return time.time_ns()


def content_type_for(path: str) -> str:
    return mimetypes.guess_type(name_of(path))[0] or "application/octet-stream"


class Filesystem(pyfuse3.Operations):
    """pyfuse3 handlers over one bucket or prefix."""

    # No FUSE writeback cache (enable_writeback_cache): with it the kernel stops taking size and
    # mtime from us for any regular file it has cached, so changes other clients make to a shared
    # bucket would show with a stale size, and a listing's provisional mtime would stick.

    def __init__(self, store: AsyncStore, layout: Layout, staging: StagingArea, journal: Journal,
                 reader: ChunkReader, meta_cache: MetaCache, config: FsConfig) -> None:
        super().__init__()
        self.store = store
        self.layout = layout
        self.staging = staging
        self.journal = journal
        self.reader = reader
        self.meta_cache = meta_cache
        self.config = config
        self.writeback = WriteBack(self._upload, workers=config.upload_workers, delay=config.upload_delay,
                                   max_dirty=config.max_dirty)
        self.started_ns = _now_ns()
        self.inodes = InodeTable(self._root_entry())
        self.stat_cache: TTLCache[str, Any] = TTLCache(config.stat_cache_size, config.stat_ttl,
                                                       timer=time.monotonic)
        # Complete listings: directory path -> name in it -> is a directory. A name missing here
        # is ENOENT without asking the store, which makes creating many files one request each;
        # the directories among them give the directory's st_nlink (links.py).
        self.dir_cache: TTLCache[str, dict[str, bool]] = TTLCache(4096, config.stat_ttl, timer=time.monotonic)
        self.local_only: dict[str, Node] = {}
        self._handles: dict[int, FileHandle | DirHandle] = {}
        self._next_fh = 1
        self._inflight: dict[str, trio.Event] = {}
        self._stale: set[str] = set()
        # Directory path -> one set per listing of it in progress: the names this mount changed
        # (created, uploaded, renamed, removed) while its LIST pages were being fetched.
        self._listings: dict[str, list[set[str]]] = {}
        self.nursery: trio.Nursery | None = None  # set by mount.py; background prefetches run here

    # ------------------------------------------------------------------ entries and caches
    def _root_entry(self) -> Entry:
        d = self.config.defaults
        return Entry(Attrs(mode=self.config.root_mode, uid=d.uid, gid=d.gid, size=0,
                           mtime_ns=self.started_ns, ctime_ns=self.started_ns), has_marker=True)

    def _object_entry(self, info: ObjectInfo, *, is_dir: bool) -> Entry:
        attrs = attrs_from_object(info, is_dir=is_dir, defaults=self.config.defaults)
        return Entry(attrs=attrs, etag=info.etag or None, content_type=info.content_type,
                     exact=info.metadata is not None, has_marker=is_dir)

    def _file_entry(self, info: ObjectInfo) -> Entry:
        """The entry a file's HEAD gives; its exact attributes also go to the metadata cache."""
        entry = self._object_entry(info, is_dir=False)
        if info.etag:
            self.meta_cache.put(info.key, info.etag, entry.attrs, info.content_type)
        return entry

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
            node.entry = entry
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

    def _has_local_truth(self, node: Node | None) -> bool:
        return node is not None and (node.local_only or node.staged is not None)

    async def _fetch(self, path: str) -> Entry | None:
        """Ask the store what ``path`` is: a file, a directory (marker or implicit), or nothing."""
        if not path:
            return self._root_entry()
        key = self.layout.file_key(path)
        try:
            info = await self.store.head(key)
        except NotFound:
            pass
        else:
            return self._file_entry(info)
        page = await self.store.list(prefix=key + "/", delimiter=None, max_keys=1)
        if not page.objects and not page.prefixes:
            return None
        if page.objects and page.objects[0].key == key + "/":
            try:
                return self._object_entry(await self.store.head(key + "/"), is_dir=True)
            except NotFound:
                pass
        return Entry(implicit_dir_attrs(self.config.defaults, self.started_ns))

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
            raise FsError(errno.ENOENT, f"unknown inode {ino}")
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
        out.st_rdev = 0
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
        out.st_atime_ns = attrs.mtime_ns
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

    # ------------------------------------------------------------------ lookups and attributes
    @boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name == b".":
            node = self._node(parent_inode)
            node.lookups += 1
            return self._attributes(node)
        if name == b"..":
            parent_path = self._path(self._node(parent_inode))
            path = parent_of(parent_path)
            return self._hand_out(path, await self._require(path))
        try:
            path = self._child(parent_inode, name)
        except InvalidName as exc:
            if exc.too_long:
                raise
            raise FsError(errno.ENOENT) from None
        try:
            entry = await self._stat(path, quick=True)
        except TemporaryFailure as exc:
            # Not known to exist, nor known not to: an error here would fail open(O_CREAT) before
            # create() is asked, so answer "no entry" uncached (see docs/write-back.md, Outages).
            log.info("lookup of %s answered without the store: %s", path, exc)
            return self._negative(0)
        if entry is None:
            return self._negative(self.config.negative_timeout)
        return self._hand_out(path, entry)

    @staticmethod
    def _negative(timeout: float) -> pyfuse3.EntryAttributes:
        negative = pyfuse3.EntryAttributes()
        negative.st_ino = 0
        negative.entry_timeout = timeout
        return negative

    @boundary
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.inodes.forget(ino, count)

    @boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if node.path is not None and not self._has_local_truth(node) and inode != ROOT_INO:
            cached = self.stat_cache.get(node.path)
            if cached is None or cached is NEGATIVE or not cached.exact:
                entry = await self._stat(node.path)
                if entry is None:
                    raise FsError(errno.ENOENT, f"{node.path} was removed from the bucket")
                if entry.attrs.kind == node.entry.attrs.kind:
                    node.entry = entry
        return self._attributes(node)

    @boundary
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        node = self._node(inode)
        async with node.lock:
            path = node.path  # None once unlinked: still open, the change stays local
            entry = await self._require(path) if path else node.entry
            attrs = entry.attrs
            now = _now_ns()
            changes: dict[str, int] = {"ctime_ns": now}
            if fields.update_mode:
                changes["mode"] = stat.S_IFMT(attrs.mode) | stat.S_IMODE(attr.st_mode)
            if fields.update_uid:
                changes["uid"] = attr.st_uid
            if fields.update_gid:
                changes["gid"] = attr.st_gid
            if fields.update_mtime:
                changes["mtime_ns"] = attr.st_mtime_ns
            if fields.update_size:
                if attrs.is_dir:
                    raise FsError(errno.EISDIR)
                staged = await self._stage(node, truncate=attr.st_size == 0)
                staged.truncate(attr.st_size)
                self._drop_stream(node, "truncated")
                changes["size"] = attr.st_size
                changes.setdefault("mtime_ns", now)
            node.entry = replace(entry, attrs=attrs.with_changes(**changes))
            if path:
                self._remember(path, node.entry)
            if node.staged is not None:
                # Written with the data: at flush if the file is open and nothing was acknowledged
                # yet (cp -p, tar: fchmod before close), else now. The kernel sends RELEASE after
                # close() has returned, so "closed, then chmod" can still find the file open here.
                node.staged.mark_dirty()
                if node.opens == 0 or node.staged.journaled:
                    await self._commit(node)
            elif path:
                await self._store_attrs(node, path)
            return self._attributes(node)

    async def _store_attrs(self, node: Node, path: str) -> None:
        """Persist new attributes of an object that has no pending data."""
        entry = node.entry
        metadata = to_metadata(entry.attrs)
        if entry.attrs.is_dir:
            etag = await self.store.put_bytes(self.layout.dir_key(path), b"", metadata=metadata,
                                              content_type=DIR_CONTENT_TYPE)
            node.entry = replace(entry, etag=etag or None, has_marker=True)
        else:
            key = self.layout.file_key(path)
            await self.store.copy(key, key, metadata=metadata,
                                  content_type=entry.content_type or content_type_for(path), size=entry.attrs.size)
            # A copy may change the ETag (multipart objects); later conditional uploads need the new one.
            etag = (await self.store.head(key)).etag
            node.entry = replace(entry, etag=etag or None)
            if etag:
                self.meta_cache.put(key, etag, entry.attrs, entry.content_type)
        self._remember(path, node.entry)

    @boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if node.entry.link_target is not None:
            return node.entry.link_target
        path = self._path(node)
        entry = await self._require(path)
        if not entry.attrs.is_link:
            raise FsError(errno.EINVAL, f"{path} is not a symbolic link")
        target = bytes(await self.store.get_range(self.layout.file_key(path), 0, max(entry.attrs.size, 1)))
        node.entry = replace(entry, link_target=target)
        self._remember(path, node.entry)
        return target

    # ------------------------------------------------------------------ directories
    @boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if not node.entry.attrs.is_dir:
            raise FsError(errno.ENOTDIR)
        return self._add_handle(DirHandle(node))

    async def _list_pages(self, path: str) -> dict[str, Entry]:
        """The children the store lists, by name, with what the caches know of them."""
        prefix = self.layout.dir_key(path)
        found: dict[str, Entry] = {}
        marker: str | None = None
        while True:
            page = await self.store.list(prefix=prefix, delimiter="/", marker=marker)
            # Attributes HEADed before (this mount or an earlier one) for the same ETag.
            known = self.meta_cache.lookup((o.key, o.etag) for o in page.objects if o.etag)
            for info in page.objects:
                name = listed_name(prefix, info.key)
                if name is None or (not path and name in self.config.hidden):
                    continue  # the directory's own marker, a key we cannot show, or a reserved name
                child = join(path, name)
                cached = self.stat_cache.get(child)
                if isinstance(cached, Entry) and cached.exact and cached.etag == info.etag:
                    found[name] = cached
                elif info.key in known:
                    attrs, content_type = known[info.key]
                    found[name] = Entry(attrs.with_changes(size=info.size), etag=info.etag,
                                        content_type=content_type)
                else:
                    found[name] = self._object_entry(info, is_dir=False)
            for sub in page.prefixes:
                name = listed_name(prefix, sub)
                if name is None or name in found:
                    continue
                cached = self.stat_cache.get(join(path, name))
                if isinstance(cached, Entry) and cached.attrs.is_dir:
                    found[name] = cached
                else:
                    found[name] = Entry(implicit_dir_attrs(self.config.defaults, self.started_ns), exact=False)
            if page.next_marker is None:
                break
            marker = page.next_marker
        return found

    async def _list(self, path: str) -> list[tuple[str, Entry]]:
        """All children of ``path``: one LIST per 1000 keys, no HEAD; fills the caches."""
        changed: set[str] = set()
        self._listings.setdefault(path, []).append(changed)
        try:
            found = await self._list_pages(path)
        finally:
            running = [c for c in self._listings[path] if c is not changed]  # by identity: sets compare equal
            if running:
                self._listings[path] = running
            else:
                del self._listings[path]
        # What this mount did meanwhile is newer than the pages: an upload that ended after its
        # page was fetched, a file removed or renamed after its page listed it.
        for name in changed:
            now = self.stat_cache.get(join(path, name))
            if now is NEGATIVE:
                found.pop(name, None)
            elif isinstance(now, Entry):
                found[name] = now
        for local_path, node in self.local_only.items():
            if parent_of(local_path) == path and node.path == local_path:
                found[name_of(local_path)] = node.entry
        for name, entry in found.items():
            child = join(path, name)
            local = self.inodes.by_path(child)
            if local is not None and self._has_local_truth(local):
                found[name] = local.entry
            elif entry.exact or not isinstance(self.stat_cache.get(child), Entry):
                self.stat_cache[child] = entry
        self.dir_cache[path] = {name: entry.attrs.is_dir for name, entry in found.items()}
        self._prefetch([join(path, n) for n, e in found.items() if not e.exact])
        return sorted(found.items())

    def _prefetch(self, paths: list[str]) -> None:
        """HEAD entries whose mode is still a default, in the background and in parallel."""
        if self.nursery is None or not paths:
            return
        self.nursery.start_soon(self._prefetch_all, paths)

    async def _prefetch_all(self, paths: list[str]) -> None:
        by_key: dict[str, str] = {}
        for path in paths:
            with contextlib.suppress(InvalidName):  # a listed key is valid; a lookup would say if not
                if path not in self._inflight:
                    by_key[self.layout.file_key(path)] = path
        waiting = {path: trio.Event() for path in by_key.values()}
        self._inflight.update(waiting)  # a lookup of any of them now waits for its HEAD
        try:
            await self.store.head_many(list(by_key), lambda key, result: self._headed(by_key[key], result),
                                       workers=HEAD_WORKERS)
        finally:
            for path, event in waiting.items():  # cancelled: release whoever waits
                if self._inflight.get(path) is event:
                    del self._inflight[path]
                    event.set()

    def _headed(self, path: str, result: ObjectInfo | ObsfsError) -> None:
        """One answer of ``_prefetch_all``: the same bookkeeping as ``_stat`` after its fetch. A
        key that is gone (or a directory) or an error leaves the path to the next lookup."""
        event = self._inflight.pop(path, None)
        stale = path in self._stale  # changed locally while we asked: the local change wins
        self._stale.discard(path)
        try:
            if isinstance(result, ObjectInfo) and not stale:
                self._remember(path, self._file_entry(result))
            elif isinstance(result, ObsfsError) and not isinstance(result, NotFound):
                log.debug("prefetch of %s failed: %s", path, result)
        finally:
            if event is not None:
                event.set()

    @boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._handles.get(fh)
        if not isinstance(handle, DirHandle):
            raise FsError(errno.EBADF)
        if handle.entries is None or start_id == 0:
            handle.entries = await self._list(self._path(handle.node))
        path = self._path(handle.node)
        # "." and ".." come first; the kernel takes no inode reference for them.
        dots = [(b".", handle.node), (b"..", self.inodes.by_path(parent_of(path)) or handle.node)]
        for index in range(start_id, len(dots)):
            name_bytes, dot_node = dots[index]
            if not pyfuse3.readdir_reply(token, name_bytes, self._attributes(dot_node), index + 1):
                return
        for index in range(max(0, start_id - len(dots)), len(handle.entries)):
            name, entry = handle.entries[index]
            child = join(path, name)
            node = self.inodes.by_path(child)
            if node is None or not self._has_local_truth(node):
                node = self.inodes.add(child, entry)
            if not pyfuse3.readdir_reply(token, name.encode(), self._attributes(node), index + len(dots) + 1):
                break
            node.lookups += 1

    @boundary
    async def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    @boundary
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None  # directory changes are written through at once

    @boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path, attrs = await self._new_entry(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), 0, ctx)
        etag = await self.store.put_bytes(self.layout.dir_key(path), b"", metadata=to_metadata(attrs),
                                          content_type=DIR_CONTENT_TYPE)
        entry = Entry(attrs, etag=etag or None, content_type=DIR_CONTENT_TYPE, has_marker=True)
        self._remember(path, entry)
        self.dir_cache[path] = {}
        return self._hand_out(path, entry)

    async def _new_entry(self, parent_inode: int, name: bytes, mode: int, size: int,
                         ctx: pyfuse3.RequestContext, *, blind: bool = False) -> tuple[str, Attrs]:
        """Path and attributes for an entry about to be created, owned by the caller; EEXIST if
        the name is taken (the kernel asked, but another client may have been faster).

        ``blind``: the entry replaces whatever the name holds (O_CREAT|O_TRUNC), so while the
        store is not answering it is created without knowing; its conditional upload settles it.
        """
        self._writable()
        path = self._child(parent_inode, name, creating=True)
        self.layout.entry_key(path, is_dir=stat.S_ISDIR(mode))  # one the store cannot hold: refused now, not at upload
        try:
            await self._check_parent(path, quick=True)
            exists = await self._stat(path, need_exact=False, quick=True) is not None
        except TemporaryFailure as exc:
            if not blind:
                raise
            log.info("%s: created while the store is not answering (%s); its upload is conditional", path, exc)
            exists = False
        if exists:
            raise FsError(errno.EEXIST)
        now = _now_ns()
        return path, Attrs(mode=mode, uid=ctx.uid, gid=ctx.gid, size=size, mtime_ns=now, ctime_ns=now)

    async def _check_parent(self, path: str, *, quick: bool = False) -> None:
        parent = await self._stat(parent_of(path), quick=quick)
        if parent is None:
            raise FsError(errno.ENOENT)
        if not parent.attrs.is_dir:
            raise FsError(errno.ENOTDIR)

    async def _is_empty_dir(self, path: str) -> bool:
        if any(parent_of(p) == path for p, n in self.local_only.items() if n.path == p):
            return False
        prefix = self.layout.dir_key(path)
        page = await self.store.list(prefix=prefix, delimiter="/", max_keys=2)
        return not page.prefixes and all(o.key == prefix for o in page.objects)

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        path = self._child(parent_inode, name)
        entry = await self._require(path)
        if not entry.attrs.is_dir:
            raise FsError(errno.ENOTDIR)
        if not await self._is_empty_dir(path):
            raise FsError(errno.ENOTEMPTY, f"{path} is not empty")
        await self.store.delete(self.layout.dir_key(path))
        self._forget_subtree(path)  # scans the caches: for directories only, not every unlink
        self._unlinked(path)

    def _unlinked(self, path: str) -> None:
        node = self.inodes.by_path(path)
        if node is not None:
            self._discard_staged(node)
            self.inodes.detach(node)
        self.meta_cache.forget(self.layout.file_key(path))
        self.local_only.pop(path, None)
        self._remember(path, None)

    # ------------------------------------------------------------------ files
    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        path = self._child(parent_inode, name)
        entry = await self._require(path)
        if entry.attrs.is_dir:
            raise FsError(errno.EISDIR)
        node = self.inodes.by_path(path)
        if node is None:
            await self.store.delete(self.layout.file_key(path))
            self._unlinked(path)
            return
        async with node.lock:  # an upload in flight finishes first, then we delete what it wrote
            if node.path != path:
                raise FsError(errno.ENOENT)
            if not node.local_only:
                await self.store.delete(self.layout.file_key(path))
            self._unlinked(path)

    @boundary
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path, attrs = await self._new_entry(parent_inode, name, stat.S_IFLNK | 0o777, len(target), ctx)
        content_type = "application/octet-stream"
        etag = await self.store.put_bytes(self.layout.file_key(path), target, metadata=to_metadata(attrs),
                                          content_type=content_type)
        entry = Entry(attrs, etag=etag or None, content_type=content_type, link_target=target)
        self._remember(path, entry)
        return self._hand_out(path, entry)

    @boundary
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise FsError(errno.EPERM, "hard links cannot be stored in an object store")

    @boundary
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM, "only regular files, directories and symlinks can be stored")
        info, attrs = await self.create(parent_inode, name, mode, os.O_WRONLY, ctx)
        await self.release(info.fh)
        return attrs

    @boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        # O_CREAT|O_TRUNC without O_EXCL replaces whatever is there: only the others need to know.
        blind = flags & (os.O_TRUNC | os.O_EXCL) == os.O_TRUNC
        path, attrs = await self._new_entry(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), 0, ctx,
                                            blind=blind)
        entry = Entry(attrs, content_type=content_type_for(path))
        node = self.inodes.add(path, entry)
        node.local_only = True
        node.staged = self.staging.new()
        node.staged.mark_dirty()
        self.local_only[path] = node
        self._remember(path, entry)
        attributes = self._hand_out(path, entry)
        node.opens += 1
        fh = self._add_handle(FileHandle(node, writable=True))
        return pyfuse3.FileInfo(fh=fh), attributes

    def _add_handle(self, handle: FileHandle | DirHandle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def _file_handle(self, fh: int) -> FileHandle:
        handle = self._handles.get(fh)
        if not isinstance(handle, FileHandle):
            raise FsError(errno.EBADF)
        return handle

    @boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.entry.attrs.is_dir:
            raise FsError(errno.EISDIR)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        truncate = bool(flags & os.O_TRUNC)
        if writable or truncate:
            self._writable()
            async with node.lock:
                staged = await self._stage(node, truncate=truncate)
                if truncate and staged.size():
                    staged.truncate(0)
                    self._drop_stream(node, "truncated")
                if truncate:
                    now = _now_ns()
                    node.entry = replace(node.entry, attrs=node.entry.attrs.with_changes(
                        size=0, mtime_ns=now, ctime_ns=now))
        node.opens += 1
        # The kernel's page cache still holds this version if the ETag is the one it last saw.
        keep = node.staged is not None or (node.entry.etag is not None and node.entry.etag == node.kernel_etag)
        node.kernel_etag = node.entry.etag
        return pyfuse3.FileInfo(fh=self._add_handle(FileHandle(node, writable=writable)), keep_cache=keep)

    async def _stage(self, node: Node, *, truncate: bool) -> StagedFile:
        """A local copy of the file's contents (downloaded unless it is about to be truncated)."""
        if node.staged is not None:
            return node.staged
        staged = self.staging.new()
        try:
            entry = node.entry
            if not truncate and entry.etag is not None and entry.attrs.size > 0:
                await self.store.get_to_file(self.layout.file_key(self._path(node)), staged.path,
                                             etag=entry.etag)
                staged.adopt_contents()
            staged.base_etag = entry.etag
            if truncate:
                staged.mark_dirty()
        except BaseException:
            staged.remove()
            raise
        node.staged = staged
        return staged

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        # pyfuse3 replies from any contiguous buffer (PyObject_GetBuffer), its stub says bytes.
        handle = self._file_handle(fh)
        node = handle.node
        if node.staged is not None:
            return node.staged.read(off, size)
        entry = node.entry
        return await self.reader.read(handle.reading, self.layout.file_key(self._path(node)), entry.etag or "",
                                      entry.attrs.size, off, size)

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._file_handle(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        node = handle.node
        await self.writeback.wait_for_room()
        if node.staged is None:  # opened for writing, then the staged copy was dropped after an upload
            async with node.lock:
                await self._stage(node, truncate=False)
        assert node.staged is not None
        written = node.staged.write(off, buf)
        now = _now_ns()
        node.entry = replace(node.entry, attrs=node.entry.attrs.with_changes(
            size=node.staged.size(), mtime_ns=now, ctime_ns=now))
        self._feed_stream(node)
        return written

    def _feed_stream(self, node: Node) -> None:
        """After a write or truncate: start, feed or abandon the upload of a file that is still
        being written (see partstream.py)."""
        staged = node.staged
        stream = node.stream
        if stream is not None:
            if staged is not None and staged.appending:
                stream.grew(staged.size())
            else:
                self._drop_stream(node, "written before its end")
        elif (staged is not None and staged.appending and staged.size() > self.config.part_size
              and node.path is not None and self.nursery is not None):
            entry = node.entry
            node.stream = PartStream(self.store, self.journal, self.layout.file_key(node.path), staged.path,
                                     part_size=self.config.part_size, parallel=self.config.parallel,
                                     metadata=to_metadata(entry.attrs),
                                     content_type=entry.content_type or content_type_for(node.path))
            node.stream.grew(staged.size())
            self.nursery.start_soon(node.stream.run)

    @staticmethod
    def _drop_stream(node: Node, why: str) -> None:
        if node.stream is not None:
            node.stream.abandon(why)
            node.stream = None

    @boundary
    async def flush(self, fh: int) -> None:
        handle = self._file_handle(fh)
        if handle.writable:
            await self._commit(handle.node)

    @boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        node = self._file_handle(fh).node
        # The store is the durable copy fsync promises, so the upload goes first. The local fsync
        # and journal row of _commit (0.45 s for 1 GiB here) matter only when the upload fails;
        # then they run before the error is returned, as close() would run them anyway.
        try:
            await self.writeback.wait_uploaded(node)
        except (ObsfsError, OSError):
            await self._commit(node)
            raise

    async def _commit(self, node: Node) -> None:
        """Make the written data durable in the cache, journal it, and queue its upload.

        When this returns (close, fsync), a crash can no longer lose the data: the next mount of
        the same cache dir finds it in the journal.
        """
        staged = node.staged
        if staged is None or not staged.dirty or node.path is None:
            return
        # On a duplicate descriptor: an upload that ends meanwhile may close the staged file's own.
        fd = os.dup(staged.fd)
        try:
            await trio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)
        if node.path is None or node.staged is not staged:
            return  # unlinked during the fsync: nothing to keep (a rename just changes the key below)
        entry = node.entry
        try:
            self.journal.record(DirtyRecord(
                data_file=staged.name, key=self.layout.file_key(node.path), base_etag=staged.base_etag,
                attrs=entry.attrs, content_type=entry.content_type or content_type_for(node.path)))
            staged.journaled = True
        finally:
            # Also when the row found no room (close() then answers ENOSPC, so nothing more was
            # acknowledged; an earlier row stays as it was): the upload is what frees the disk.
            self.writeback.schedule(node)

    async def _upload(self, node: Node) -> None:
        """Upload worker body: send the staged file's current version, conditionally."""
        async with node.lock:
            staged = node.staged
            if staged is None or node.path is None or not staged.dirty:
                return
            path = node.path
            key = self.layout.file_key(path)
            version = staged.version
            size = staged.size()
            entry = node.entry
            attrs = entry.attrs.with_changes(size=size)
            content_type = entry.content_type or content_type_for(path)
            stream, node.stream = node.stream, None
            base = staged.base_etag
            try:
                etag = None
                if stream is not None:
                    if stream.key != key:
                        stream.abandon("renamed")
                    etag = await stream.finish(size, to_metadata(attrs), content_type, if_match=base,
                                               if_none_match=base is None)
                if etag is None:
                    etag = await upload_file(
                        self.store, key, staged.path, size, metadata=to_metadata(attrs), content_type=content_type,
                        part_size=self.config.part_size, parallel=self.config.parallel, if_match=base,
                        if_none_match=base is None)
            except PreconditionFailed:
                own = await self._own_earlier_upload(key, staged.path, size, to_metadata(attrs), content_type)
                if own is None:
                    await self._keep_both(node, key, size, attrs, content_type)
                    return
                etag = own
            staged.synced_version = max(staged.synced_version, version)
            staged.base_etag = etag
            node.kernel_etag = etag
            node.local_only = False
            self.local_only.pop(path, None)
            node.entry = replace(node.entry, attrs=node.entry.attrs.with_changes(size=size), etag=etag,
                                 content_type=content_type, exact=True)
            self.meta_cache.put(key, etag, attrs, content_type)
            self._remember(path, node.entry)
            if not staged.dirty:
                self._release_staged(node)

    async def _own_earlier_upload(self, key: str, path: str, size: int, metadata: dict[str, str],
                                  content_type: str) -> str | None:
        """The stored ETag if the object already holds exactly our data: an earlier attempt that
        timed out (or a crash before the journal row was deleted) did reach the store. Not a
        conflict. If only the attributes differ (a chmod after that attempt, or a streamed upload
        whose final copy failed), they are brought up to date by a copy onto itself."""
        try:
            info = await self.store.head(key)
        except NotFound:
            return None
        ours = await trio.to_thread.run_sync(local_etags, path, size, self.config.part_size)
        if info.etag not in ours:
            return None
        stored = _user_metadata(info)
        if any(stored.get(name) != value for name, value in metadata.items()) or info.content_type != content_type:
            await self.store.copy(key, key, metadata=metadata, content_type=content_type, size=size)
            return (await self.store.head(key)).etag
        return info.etag

    async def _keep_both(self, node: Node, key: str, size: int, attrs: Attrs, content_type: str) -> None:
        """Another writer changed the object since our version was based on it: never overwrite
        theirs. Ours goes to a clearly named conflict key next to it; the path shows theirs."""
        assert node.staged is not None and node.path is not None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        conflict_key = f"{key}.obsfs-conflict-{stamp}"
        await upload_file(self.store, conflict_key, node.staged.path, size, metadata=to_metadata(attrs),
                          content_type=content_type, part_size=self.config.part_size,
                          parallel=self.config.parallel)
        log.warning("%s was changed by another client while ours was waiting to upload; kept both: "
                    "theirs at %s, ours at %s", node.path, key, conflict_key)
        path = node.path
        node.staged.synced_version = node.staged.version
        node.local_only = False
        self.local_only.pop(path, None)
        self._release_staged(node)
        self.stat_cache.pop(path, None)

    def _release_staged(self, node: Node) -> None:
        """The store has this version (or the file is gone): drop the copy unless it is open, and
        the journal row. The copy goes first: on a full cache disk its space is what the row's
        delete needs (a crash in between leaves a row without a data file; the next mount drops
        it). The delete cannot fail for lack of space (journal.py), so the node is always left
        clean."""
        staged = node.staged
        if staged is None:
            return
        journaled, staged.journaled = staged.journaled, False
        if node.opens == 0:
            staged.remove()
            node.staged = None
            self.inodes.drop_if_unused(node)
        if journaled:
            self.journal.remove(staged.name)

    def _discard_staged(self, node: Node) -> None:
        """The file is gone: drop its pending upload and its cached data."""
        self.writeback.cancel(node)
        self._drop_stream(node, "deleted")
        if node.staged is not None:
            node.staged.synced_version = node.staged.version
        node.local_only = False
        self._release_staged(node)

    @boundary
    async def release(self, fh: int) -> None:
        handle = self._file_handle(fh)
        del self._handles[fh]
        node = handle.node
        try:
            if node.staged is not None and node.staged.dirty:
                await self._commit(node)
        finally:
            node.opens -= 1
            if node.opens == 0 and handle.reading.key is not None:
                self.reader.forget(handle.reading.key)
            if node.opens == 0 and node.path is None:
                self._discard_staged(node)  # unlinked while open, written after: nothing to keep
            elif node.staged is not None and not node.staged.dirty and not self.writeback.busy(node):
                self._release_staged(node)
            self.inodes.drop_if_unused(node)

    # ------------------------------------------------------------------ rename
    @boundary
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        if flags & getattr(pyfuse3, "RENAME_EXCHANGE", 2):
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new, creating=True)
        if old == new:
            return
        if is_under(new, old):
            raise FsError(errno.EINVAL, "cannot move a directory into itself")
        source = await self._require(old)
        self.layout.entry_key(new, is_dir=source.attrs.is_dir)
        await self._check_parent(new)
        target = await self._stat(new, need_exact=False)
        if target is not None:
            if flags & getattr(pyfuse3, "RENAME_NOREPLACE", 1):
                raise FsError(errno.EEXIST)
            if target.attrs.is_dir and not source.attrs.is_dir:
                raise FsError(errno.EISDIR)
            if source.attrs.is_dir and not target.attrs.is_dir:
                raise FsError(errno.ENOTDIR)
            if target.attrs.is_dir and not await self._is_empty_dir(new):
                raise FsError(errno.ENOTEMPTY)
        if source.attrs.is_dir:
            await self._rename_dir(old, new, source, target)
        else:
            await self._rename_file(old, new)

    async def _rename_file(self, old: str, new: str) -> None:
        node = self.inodes.by_path(old)
        replaced = self.inodes.by_path(new)
        async with contextlib.AsyncExitStack() as stack:
            # No upload of either name may be in flight while names change: the source's would
            # land under the old key, and the target's, ending after us, would overwrite the new
            # contents or be taken for another client's change. Inode order: no lock cycles.
            for locked in sorted({n for n in (node, replaced) if n is not None and n.staged is not None},
                                 key=lambda n: n.ino):
                await stack.enter_async_context(locked.lock)
            # Asked again: an upload that ended while we waited changed what both names are.
            source = await self._require(old)
            target = await self._stat(new, need_exact=False)
            if node is not None and node.path != old:
                raise FsError(errno.ENOENT, f"{old} was renamed or removed meanwhile")
            if node is not None and node.staged is not None and (node.local_only or node.staged.dirty):
                await self._rename_unsent(node, old, new, self._stored_etag(replaced, new, target))
                return
            old_key, new_key = self.layout.file_key(old), self.layout.file_key(new)
            await self.store.copy(old_key, new_key, metadata=to_metadata(source.attrs),
                                  content_type=source.content_type or content_type_for(new), size=source.attrs.size)
            await self.store.delete(old_key)
            # A copy may give the object another ETag (multipart objects); reads and later
            # conditional uploads need the one it has now.
            etag = (await self.store.head(new_key)).etag or None
            self._moved(old, new, replace(source, etag=etag))
            if node is not None and node.staged is not None:
                node.staged.base_etag = etag

    @staticmethod
    def _stored_etag(node: Node | None, path: str, entry: Entry | None) -> str | None:
        """The ETag of what the store holds at ``path`` (with ``node`` and ``entry`` what this
        mount knows of it): with pending data, the version that data replaces. None: the store
        has no object there."""
        if node is not None and node.path == path and node.staged is not None:
            return node.staged.base_etag
        return entry.etag if entry is not None else None

    async def _rename_unsent(self, node: Node, old: str, new: str, base: str | None) -> None:
        """Data not yet in the store moves locally and is uploaded once, under the new name,
        conditional on ``base``, the object it replaces there."""
        assert node.staged is not None
        old_stored = node.staged.base_etag is not None  # the old key holds an object to remove
        self._moved(old, new, node.entry)
        node.staged.base_etag = base
        node.local_only = base is None
        if node.local_only:
            self.local_only[new] = node
        node.staged.mark_dirty()
        await self._commit(node)
        if old_stored:
            await self.store.delete(self.layout.file_key(old))

    def _moved(self, old: str, new: str, entry: Entry) -> None:
        replaced = self.inodes.by_path(new)
        if replaced is not None and replaced is not self.inodes.by_path(old):
            self._discard_staged(replaced)
        self.local_only.pop(new, None)
        self.inodes.move(old, new)
        self.local_only.pop(old, None)
        self._remember(old, None)
        self._remember(new, entry)

    async def _rename_dir(self, old: str, new: str, source: Entry, target: Entry | None) -> None:
        """Copy every key under the old prefix, then delete the old keys: not atomic, as in s3fs."""
        async with contextlib.AsyncExitStack() as stack:
            # No upload of a file below may run while its key changes under it.
            pending = [n for n in self.inodes.under(old) if n.staged is not None]
            for node in pending:
                await stack.enter_async_context(node.lock)
            await self._rename_tree(old, new, source, target, pending)

    async def _rename_tree(self, old: str, new: str, source: Entry, target: Entry | None,
                           pending: list[Node]) -> None:
        old_prefix, new_prefix = self.layout.dir_key(old), self.layout.dir_key(new)
        unsent = {self.layout.file_key(n.path) for n in pending
                  if n.path is not None and n.staged is not None and n.staged.dirty}
        keys: list[ObjectInfo] = []
        marker: str | None = None
        while True:
            page = await self.store.list(prefix=old_prefix, delimiter=None, marker=marker)
            keys.extend(page.objects)
            if page.next_marker is None:
                break
            marker = page.next_marker
        # Every key below must fit under the new name (ENAMETOOLONG) before the first one moves.
        new_keys = {info.key: self.layout.moved_key(info.key, old, new) for info in keys}
        for node in pending:
            if node.path is not None:
                self.layout.file_key(rebase(node.path, old, new))  # data not in the store yet
        if target is not None and target.has_marker:
            await self.store.delete(new_prefix)

        async def copy_one(info: ObjectInfo) -> None:
            head = await self.store.head(info.key)
            await self.store.copy(info.key, new_keys[info.key],
                                  metadata=dict(_user_metadata(head)),
                                  content_type=head.content_type or "application/octet-stream",
                                  size=head.size)

        try:
            async with trio.open_nursery() as nursery:
                for info in keys:
                    if info.key not in unsent:  # their new contents are uploaded under the new name
                        nursery.start_soon(copy_one, info)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if not any(info.key == old_prefix for info in keys):
            # An implicit directory: give the new one a marker so it keeps existing once empty.
            await self.store.put_bytes(new_prefix, b"", metadata=to_metadata(source.attrs),
                                       content_type=DIR_CONTENT_TYPE)
        await self.store.delete_many([info.key for info in keys])
        self.inodes.move(old, new)
        for path in [p for p in self.local_only if is_under(p, old)]:
            self.local_only[new + path[len(old):]] = self.local_only.pop(path)
        for node in pending:
            if node.staged is not None and node.staged.dirty:
                node.staged.base_etag = None  # the new key does not exist yet
                await self._commit(node)
        self._forget_subtree(old)
        self._forget_subtree(new)
        self._remember(old, None)
        self._remember(new, replace(source, has_marker=True))

    # ------------------------------------------------------------------ misc
    @boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        # Buckets have no size limit that S3 APIs report; show a large, constant capacity.
        out = pyfuse3.StatvfsData()
        out.f_bsize = BLOCK
        out.f_frsize = BLOCK
        out.f_blocks = out.f_bfree = out.f_bavail = (1 << 48) // BLOCK
        out.f_files = out.f_ffree = out.f_favail = 1 << 32
        out.f_namemax = 255
        return out

    async def flush_all(self, deadline: float) -> list[str]:
        """Upload everything pending (unmount, SIGTERM); returns the paths that did not make it."""
        for node in [n for n in self.inodes.under("") if n.staged is not None and n.staged.dirty]:
            try:
                await self._commit(node)
            except OSError as exc:  # a full cache disk: still queued, the drain below may save it
                log.warning("could not journal %s before the final upload: %s", node.path, exc)
        left = await self.writeback.drain(deadline)
        for node in left:
            log.error("not uploaded: %s (kept in %s; the next mount with this cache dir uploads it)",
                      node.path, node.staged.path if node.staged else "?")
        return [node.path or "?" for node in left]

    async def recover(self) -> int:
        """Re-queue what an earlier daemon acknowledged but did not upload (crash, kill -9, OOM),
        and abort the multipart uploads it left open."""
        for upload_id, key in self.journal.open_uploads():
            try:
                await self.store.abort_multipart(key, upload_id)
                self.journal.forget_upload(upload_id)
                log.warning("aborted the unfinished upload of %s left by the previous daemon", key)
            except ObsfsError as exc:
                log.warning("could not abort the unfinished upload of %s (kept for the next mount): %s", key, exc)
        records = self.journal.all()
        known = {rec.data_file for rec in records}
        for name in self.staging.names() - known:
            # Written but never closed or fsynced before the crash: never acknowledged.
            log.warning("discarding unacknowledged partial write %s", name)
            os.unlink(os.path.join(self.staging.directory, name))
        count = 0
        for rec in records:
            staged = self.staging.reopen(rec.data_file)
            if staged is None:
                # We drop a data file only once it is uploaded (or its file deleted), just before
                # the row; a crash or a full cache disk can keep the row alone.
                log.info("journal entry for %s has no data file left (uploaded or deleted before the "
                         "row was); dropped", rec.key)
                self.journal.remove(rec.data_file)
                continue
            if not rec.key.startswith(self.layout.prefix):
                log.error("journal entry for %s cannot be recovered here (data file belongs to another "
                          "prefix)", rec.key)
                os.close(staged.fd)
                continue
            path = self.layout.path_of(rec.key)
            staged.base_etag = rec.base_etag
            entry = Entry(rec.attrs.with_changes(size=staged.size()), etag=rec.base_etag,
                          content_type=rec.content_type)
            node = self.inodes.add(path, entry)
            node.staged = staged
            node.local_only = rec.base_etag is None
            if node.local_only:
                self.local_only[path] = node
            self._remember(path, entry)
            self.writeback.schedule(node, delay=0)
            count += 1
        if count:
            log.warning("recovered %d file(s) not yet uploaded by the previous daemon", count)
        return count


def _user_metadata(info: ObjectInfo) -> dict[str, str]:
    """The s3fs attribute headers of an object, to carry over in a copy."""
    meta = info.metadata or {}
    return {k: meta[k] for k in ("mode", "uid", "gid", "mtime", "ctime", "atime") if k in meta}
