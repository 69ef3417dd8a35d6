"""Names: lookup, create, mkdir, mknod, symlink, unlink and rmdir."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence

import pyfuse3

from obsfs.errors import TemporaryFailure
from obsfs.fs.boundary import FsError, boundary
from obsfs.fs.core import FileHandle, content_type_for, now_ns
from obsfs.fs.listing import Listing
from obsfs.inodes import Entry, Node
from obsfs.layout import InvalidName, parent_of
from obsfs.meta import SPECIAL_KINDS, Attrs, device_number, to_metadata

log = logging.getLogger(__name__)


class Namespace(Listing):
    """The handlers that find, add or remove names in a directory."""

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
            if path not in self.stat_cache and not self._has_local_truth(self.inodes.by_path(path)):
                await self._names_for_lookup(parent_of(path))
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
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path, attrs = await self._new_entry(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), 0, ctx)
        entry = await self._new_dir(path, attrs)
        self._remember(path, entry)
        self.dir_cache[path] = {}
        self._listed_sizes[path] = 0
        self._dir_changed(parent_inode)
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
        now = now_ns()
        return path, Attrs(mode=mode, uid=ctx.uid, gid=ctx.gid, size=size, atime_ns=now, mtime_ns=now, ctime_ns=now)

    async def _check_parent(self, path: str, *, quick: bool = False) -> None:
        parent = await self._stat(parent_of(path), quick=quick)
        if parent is None:
            raise FsError(errno.ENOENT)
        if not parent.attrs.is_dir:
            raise FsError(errno.ENOTDIR)

    async def _is_empty_dir(self, path: str) -> bool:
        """Empty as far as this mount knows: keys whose deletes are queued here do not count
        (nor subdirectories removed here), so ``rm -r`` need not wait for the store."""
        if any(parent_of(p) == path for p, n in self.local_only.items() if n.path == p):
            return False
        prefix = self.layout.dir_key(path)
        marker: str | None = None
        # Its own marker and one entry; with removals queued, whole pages, or a directory whose
        # files were just removed would cost a second LIST for each.
        max_keys = 1000 if len(self.deletes) else 2
        with self.deletes.listing() as removed:
            while True:
                page = await self.store.list(prefix=prefix, delimiter="/", marker=marker, max_keys=max_keys)
                if any(not removed(p) for p in page.prefixes):
                    return False
                if any(o.key != prefix and not removed(o.key) for o in page.objects):
                    return False
                if page.next_marker is None:
                    return True
                marker, max_keys = page.next_marker, 1000

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        path = self._child(parent_inode, name)
        entry = await self._require(path)
        if not entry.attrs.is_dir:
            raise FsError(errno.ENOTDIR)
        if not await self._is_empty_dir(path):
            raise FsError(errno.ENOTEMPTY, f"{path} is not empty")
        async with self.dir_times.writing(path):  # no lazy write of its times may bring the marker back
            self.dir_times.take(path)
            node = self.inodes.by_path(path)
            if node is not None and node.local_only:
                # Its marker never reached the store. The row goes before the delete is owed: a
                # crash between the two finds neither, which is the directory removed.
                self.journal.forget_marker(self.layout.dir_key(path))
            # Sent once the deletes of the keys below it are confirmed (deletes.py).
            await self._owe_delete(self._marker_keys(path, entry), hold=self.layout.dir_key(path))
        self.dir_times.forget_implicit(path)
        self._forget_subtree(path)  # scans the caches: for directories only, not every unlink
        self._unlinked(path)
        self._dir_changed(parent_inode)

    def _unlinked(self, path: str) -> None:
        node = self.inodes.by_path(path)
        if node is not None:
            self._discard_staged(node)
        self.inodes.unlink(path)
        self.meta_cache.forget(self.layout.file_key(path))
        self.local_only.pop(path, None)
        self._remember(path, None)

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        path = self._child(parent_inode, name)
        entry = await self._require(path)
        if entry.attrs.is_dir:
            raise FsError(errno.EISDIR)
        node = self.inodes.by_path(path)
        if node is None:
            await self._owe_delete([self.layout.file_key(path)])
            self._unlinked(path)
        else:
            async with node.lock:  # an upload in flight finishes first, then we delete what it wrote
                if node.path != path:
                    raise FsError(errno.ENOENT)
                if not node.local_only:
                    await self._owe_delete([self.layout.file_key(path)], node=node)
                self._unlinked(path)
        self._dir_changed(parent_inode)

    async def _owe_delete(self, keys: list[str], *, hold: str | None = None, node: Node | None = None) -> None:
        """Journal the deletes of ``keys`` and queue them (deletes.py): the name is gone for this
        mount now, for the store within ``upload_delay``, and after a crash on the next mount.
        The journal row of ``node``'s unsent data goes in the same transaction. On a full cache
        disk nothing is journaled, so the keys are deleted at once, as before the queue."""
        staged = node.staged if node is not None else None
        replacing = staged.name if staged is not None and staged.journaled else None
        try:
            self.deletes.add(keys, hold=hold, replacing=replacing)
        except OSError as exc:
            log.info("deleting %s at once: %s", keys[0], exc)
            await self.store.delete_many(keys)
            return
        if staged is not None:
            staged.journaled = False  # its row went with the delete's

    @boundary
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path, attrs = await self._new_entry(parent_inode, name, stat.S_IFLNK | 0o777, len(target), ctx)
        return await self._put_entry(parent_inode, path, attrs, target, link_target=target)

    async def _put_entry(self, parent_inode: int, path: str, attrs: Attrs, body: bytes, *,
                         link_target: bytes | None = None) -> pyfuse3.EntryAttributes:
        """Store a symlink or special file at once: it has no contents to stage, and nothing to
        gain from waiting (one small PUT, as s3fs makes it)."""
        content_type = "application/octet-stream"
        key = self.layout.file_key(path)
        await self.deletes.settle([key])  # a file removed just before goes first
        etag = await self.store.put_bytes(key, body, metadata=to_metadata(attrs), content_type=content_type)
        entry = Entry(attrs, etag=etag or None, content_type=content_type, link_target=link_target)
        self._stored(key, entry)
        self._remember(path, entry)
        self._dir_changed(parent_inode)
        return self._hand_out(path, entry)

    @boundary
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise FsError(errno.EPERM, "hard links cannot be stored in an object store")

    @boundary
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        # mkfifo(), mknod() and bind() of a unix socket come here. A FIFO's data and a socket's
        # connections never reach us: the kernel keeps them on this host, as on any file system,
        # and our nodev mounts let nobody open a device node (docs/posix.md).
        # (Linux sends a regular file's mknod() to create(), and refuses other types itself; the
        # two checks below only keep this handler right on its own.)
        if stat.S_ISREG(mode):
            info, reply = await self.create(parent_inode, name, mode, os.O_WRONLY, ctx)
            await self.release(info.fh)
            return reply
        if stat.S_IFMT(mode) not in SPECIAL_KINDS:
            raise FsError(errno.EPERM, f"cannot store a file of type {stat.S_IFMT(mode):o}")
        path, attrs = await self._new_entry(parent_inode, name, mode, 0, ctx)
        return await self._put_entry(parent_inode, path, attrs.with_changes(rdev=device_number(mode, rdev)), b"")

    @boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        # O_CREAT|O_TRUNC without O_EXCL replaces whatever is there: only the others need to know.
        blind = flags & (os.O_TRUNC | os.O_EXCL) == os.O_TRUNC
        path, attrs = await self._new_entry(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), 0, ctx,
                                            blind=blind)
        entry = Entry(attrs, content_type=content_type_for(path))
        node = self.inodes.add(path, entry, created=True)
        node.local_only = True
        node.staged = self._new_staged()
        node.staged.mark_dirty()
        self.local_only[path] = node
        self._note_staged(node)
        self._remember(path, entry)
        self._dir_changed(parent_inode)
        attributes = self._hand_out(path, entry)
        node.opens += 1
        fh = self._add_handle(FileHandle(node, writable=True))
        return pyfuse3.FileInfo(fh=fh), attributes
