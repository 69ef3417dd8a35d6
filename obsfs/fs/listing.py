"""Directory listings: LIST pages merged with local changes, and background HEADs for exact modes."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

from obsfs.backend.base import ListPage, ObjectInfo
from obsfs.dialects import Child, Kind, children_of, object_kind
from obsfs.errors import NotFound, ObsfsError
from obsfs.fs.attributes import Attributes
from obsfs.fs.boundary import FsError, boundary
from obsfs.fs.core import NEGATIVE, DirHandle
from obsfs.indexing import IndexRead
from obsfs.inodes import Entry, Node
from obsfs.layout import InvalidName, join, listed_name, name_of, parent_of
from obsfs.listranges import list_all
from obsfs.meta import Attrs

log = logging.getLogger(__name__)

HEAD_WORKERS = 16  # threads HEADing a listing's entries (32 measured slower: GIL contention)
# Entries numbered at a time in readdir; a READDIRPLUS reply holds about 200.
READDIR_CHUNK = 64
# Entries a directory's last listing may have held for a lookup to list it again (one LIST page).
RELIST_MAX = 1000


class Listing(Attributes):
    """opendir/readdir and the caches a listing fills."""

    @boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if not node.entry.attrs.is_dir:
            raise FsError(errno.ENOTDIR)
        return self._add_handle(DirHandle(node))

    async def _list_pages(self, path: str) -> dict[str, Entry]:
        """The children the store lists, by name, with what the caches know of them. Other tools'
        directory markers are read from the same pages (obsfs/dialects.py)."""
        prefix = self.layout.dir_key(path)
        objects: list[tuple[str, ObjectInfo]] = []
        prefixes: list[str] = []
        index = self.attr_index.reading(prefix) if self.attr_index is not None else None  # a GET, alongside
        known: dict[str, tuple[Attrs, str | None]] = {}

        async def recall(listed: list[ObjectInfo]) -> None:
            # Attributes HEADed before (this mount or an earlier one) for the same ETag.
            known.update(self.meta_cache.lookup((o.key, o.etag) for o in listed if o.etag))
            if index is not None:  # and those the directory's attribute index vouches for
                known.update(await index.known(listed))

        with self.deletes.listing() as removed:
            listed = await self._list_keys(prefix, index, recall)
            for info in listed.objects:
                name = listed_name(prefix, info.key)  # None: the directory's own marker, or a key we cannot show
                if name is not None and not removed(info.key):  # not removed here meanwhile
                    objects.append((name, info))
            for sub in listed.prefixes:
                name = listed_name(prefix, sub)
                if name is not None and not removed(sub):  # a directory removed here, not yet in the store
                    prefixes.append(name)
        found: dict[str, Entry] = {}
        for name, child in children_of(objects, prefixes).items():
            if not path and name in self.config.hidden:
                continue  # a reserved name
            found[name] = self._listed_entry(join(path, name), child, known)
        return found

    async def _list_keys(self, prefix: str, index: IndexRead | None,
                         each: Callable[[list[ObjectInfo]], Awaitable[None]]) -> ListPage:
        """Every key and common prefix of one directory, as one page; ``each`` is given its objects
        part by part as they come. In ranges at once (listranges.py) where the index or the
        metadata cache of an earlier mount hint at the names, else one page after the other."""
        async def fetch(marker: str | None) -> ListPage:
            return await self.store.list(prefix=prefix, delimiter="/", marker=marker)

        async def hints(first_page: Callable[[], Awaitable[ListPage]]) -> list[str]:
            if index is not None and (names := await index.keys()):
                return names
            if (await first_page()).next_marker is None:
                return []  # one page: nothing to split, and no need to read meta.db
            return self.meta_cache.keys_in(prefix)

        return await list_all(fetch, prefix, hints, each)

    def _listed_entry(self, path: str, child: Child, known: dict[str, tuple[Attrs, str | None]]) -> Entry:
        """What a listing says of one child, with what the caches know of it."""
        cached = self.stat_cache.get(path)
        info = child.obj
        if info is not None and isinstance(cached, Entry) and cached.exact and cached.etag == info.etag:
            return cached  # HEADed since it last changed: a file, or a directory its object marks
        if child.is_dir:
            if isinstance(cached, Entry) and cached.attrs.is_dir:
                return cached
            return Entry(self._implicit_dir(path), exact=False, object_marker=child.object_marker)
        assert info is not None  # a name is a file only by its object
        if info.key in known:
            attrs, content_type = known[info.key]
            if attrs.size != info.size:  # the metadata cache keeps no size
                attrs = attrs.with_changes(size=info.size)
            return Entry(attrs, etag=info.etag, content_type=content_type)
        return self._object_entry(info, is_dir=False)

    async def _list(self, path: str) -> list[tuple[str, Entry]]:
        """All children of ``path``: from the caches while they trust the last listing, else one
        LIST per 1000 keys, no HEAD; fills the caches."""
        known = self._listed_before(path)
        if known is not None:
            return known
        return self._listed(path, await self._list_again(path))

    async def _names_for_lookup(self, path: str) -> None:
        """List the directory ``path`` again for a lookup in it, when its last listing has expired
        and found no more than ``RELIST_MAX`` entries. Past ``stat_cache_expire`` every name is
        asked again: a file costs a HEAD, and a name that is not there a HEAD, a LIST and the
        HEAD of another tool's marker (``_fetch``), so a build or ``cp -r`` probing a few dozen
        names in a directory sent three requests for each. One LIST answers them all: the
        names it lacks are "no such file" from ``dir_cache``, and the files whose attributes
        the metadata cache holds for their ETag are exact. One listing at a time per directory;
        none while the store is down (the quick lookup answers at once) or with the stat cache
        off (nothing would keep what it found)."""
        if self.config.stat_ttl <= 0 or self.store.reachability.down or path in self.dir_cache:
            return
        if self._listed_sizes.get(path, RELIST_MAX + 1) > RELIST_MAX:
            return  # never listed, or large: a HEAD of the one name is cheaper
        running = self._relisting.get(path)
        if running is not None:
            await running.wait()
            return
        self._relisting[path] = done = trio.Event()
        try:
            await self._list_again(path)
        except ObsfsError as exc:
            log.debug("listing %s for a lookup failed: %s", path, exc)  # the lookup asks for itself
        finally:
            del self._relisting[path]
            done.set()

    async def _list_again(self, path: str) -> dict[str, Entry]:
        """The children of ``path`` as the store lists them now, with this mount's changes; fills
        ``stat_cache`` and ``dir_cache`` with them."""
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
        self._listed_sizes[path] = len(found)
        return found

    def _listed_before(self, path: str) -> list[tuple[str, Entry]] | None:
        """The children of ``path`` as its last listing found them, with every change this mount
        made since (``_remember`` keeps ``dir_cache`` and ``stat_cache`` up to date), as long as
        both caches still trust it: ``stat_cache_expire``, the time a lookup already answers
        from that listing, "no such name" included. A warm ``ls -l`` then costs no LIST, where
        10 pages of 1000 keys took longer than s3fs's whole warm listing. None when the listing
        or any entry of it has expired: the store is asked again."""
        names = self.dir_cache.get(path)
        if names is None:
            return None
        found: dict[str, Entry] = {}
        for name in names:
            child = join(path, name)
            node = self.inodes.by_path(child)
            if node is not None and self._has_local_truth(node):
                found[name] = node.entry
                continue
            entry = self.stat_cache.get(child)
            if not isinstance(entry, Entry):
                return None
            found[name] = entry
        return self._listed(path, found)

    def _listed(self, path: str, found: dict[str, Entry]) -> list[tuple[str, Entry]]:
        """A listing's entries in order, with the HEADs of the files whose mode is still a
        default started. Files only: a directory's attributes are on a marker its lookup finds
        (a HEAD of the name would find nothing, or the zero-byte object that marks it)."""
        self._prefetch([join(path, n) for n, e in found.items() if not e.exact and not e.attrs.is_dir])
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
                # Listed as a file, so nothing is below it: a zero-byte object may still say it
                # is a directory (s3fs's application/x-directory without a slash).
                if object_kind(result, has_children=False) is Kind.DIR:
                    self._remember(path, self._object_entry(result, is_dir=True, has_marker=False,
                                                            object_marker=True))
                else:
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
        first = max(0, start_id - len(dots))
        for start in range(first, len(handle.entries), READDIR_CHUNK):
            chunk = handle.entries[start:start + READDIR_CHUNK]
            nodes = self._nodes_of(path, chunk)
            for offset, ((name, _), node) in enumerate(zip(chunk, nodes, strict=True)):
                if not pyfuse3.readdir_reply(token, name.encode(), self._attributes(node),
                                             start + offset + len(dots) + 1):
                    for unsent in nodes[offset:]:  # the next readdir starts with them
                        self.inodes.drop_if_unused(unsent)
                    return
                node.lookups += 1

    def _nodes_of(self, path: str, entries: list[tuple[str, Entry]]) -> list[Node]:
        """The nodes for listed entries of ``path``, with what is known of them now: local truth,
        or an entry HEADed since the listing (exact: the kernel keeps it, and sends no LOOKUP)."""
        nodes: dict[str, Node] = {}
        listed: list[tuple[str, Entry]] = []
        for name, entry in entries:
            child = join(path, name)
            node = self.inodes.by_path(child)
            if node is not None and self._has_local_truth(node):
                nodes[child] = node
                continue
            if not entry.exact and isinstance(fresh := self.stat_cache.get(child), Entry) and fresh.exact:
                entry = fresh
            listed.append((child, entry))
        nodes.update(zip((child for child, _ in listed), self.inodes.add_many(listed), strict=True))
        return [nodes[join(path, name)] for name, _ in entries]

    @boundary
    async def releasedir(self, fh: int) -> None:
        self._drop_handle(fh)

    @boundary
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # Removals are queued (deletes.py), and new directories' markers owed (dirtimes.py), both
        # journaled without an fsync (journal.py), which is what POSIX asks of fsyncdir: made
        # durable here, locally first, so that a store that fails leaves them safe on disk, then
        # sent. (Files are journaled by their own close or fsync; renames are written through.)
        handle = self._handles.get(fh)
        if not isinstance(handle, DirHandle):
            raise FsError(errno.EBADF)
        self.journal.sync()
        path = self._path(handle.node)
        await self.deletes.flush(self.deletes.under(self.layout.dir_key(path)))
        await self._write_dir_times_now(path)
