"""Rename: of files (local data moves with the name) and of whole directories (copy, then delete)."""

from __future__ import annotations

import contextlib
import errno
from dataclasses import replace

import pyfuse3
import trio

from obsfs.backend.base import ObjectInfo
from obsfs.dialects import Kind, object_kind
from obsfs.errors import first_error
from obsfs.fs.boundary import FsError, boundary
from obsfs.fs.core import content_type_for, now_ns, user_metadata
from obsfs.fs.namespace import Namespace
from obsfs.inodes import Entry, Node
from obsfs.layout import is_under, rebase
from obsfs.meta import DIR_CONTENT_TYPE, to_metadata


class Renames(Namespace):
    """rename(2) over an object store, where no rename is atomic."""

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
        self._dir_changed(parent_inode_old)
        self._dir_changed(parent_inode_new)

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
            content_type = source.content_type or content_type_for(new)
            source = replace(source, attrs=source.attrs.with_changes(ctime_ns=now_ns()), content_type=content_type)
            await self.deletes.settle([new_key])  # a file removed there just before goes first
            await self.store.copy(old_key, new_key, metadata=to_metadata(source.attrs), content_type=content_type,
                                  size=source.attrs.size)
            await self.store.delete(old_key)
            # A copy may give the object another ETag (multipart objects); reads and later
            # conditional uploads need the one it has now.
            moved = replace(source, etag=(await self.store.head(new_key)).etag or None)
            self._moved(old, new, moved)
            self._stored(new_key, moved)
            if node is not None and node.staged is not None:
                node.staged.base_etag = moved.etag

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
        conditional on ``base``, the object it replaces there. The old key's delete is owed, not
        sent: journaled right after the data's new row, it is done by the next daemon if this one
        dies. A DELETE in flight at a crash instead left the old version under the old name, and
        the application's retry of the rename then copied it over the data it had written."""
        assert node.staged is not None
        old_stored = node.staged.base_etag is not None  # the old key holds an object to remove
        self._moved(old, new, replace(node.entry, attrs=node.entry.attrs.with_changes(ctime_ns=now_ns())))
        node.staged.base_etag = base
        node.local_only = base is None
        if node.local_only:
            self.local_only[new] = node
        node.staged.mark_dirty()
        await self._commit(node)
        if old_stored:
            await self._owe_delete([self.layout.file_key(old)])

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
        # The markers are copied from the store: every one owed below must be there first, and
        # an empty directory replaced at the new name must not be stored after this.
        await self._write_dir_times_now(old, strict=True)
        if target is not None:
            await self._write_dir_times_now(new, strict=True)
        source = replace(source, attrs=source.attrs.with_changes(ctime_ns=now_ns()))
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
        with self.deletes.listing() as removed:
            while True:
                page = await self.store.list(prefix=old_prefix, delimiter=None, marker=marker)
                keys.extend(o for o in page.objects if not removed(o.key))  # removed here: not moved
                if page.next_marker is None:
                    break
                marker = page.next_marker
        # Every key below must fit under the new name (ENAMETOOLONG) before the first one moves.
        new_keys = {info.key: self.layout.moved_key(info.key, old, new) for info in keys}
        for node in pending:
            if node.path is not None:
                self.layout.file_key(rebase(node.path, old, new))  # data not in the store yet
        if target is not None:  # an empty directory: its markers go, whoever wrote them
            await self.store.delete_many(self._marker_keys(new, target))
        # Keys removed below the new name (it counted as empty) go before ours arrive there.
        await self.deletes.settle(self.deletes.under(new_prefix))

        async def copy_one(info: ObjectInfo) -> None:
            head = await self.store.head(info.key)
            await self.store.copy(info.key, new_keys[info.key],
                                  metadata=to_metadata(source.attrs) if info.key == old_prefix else user_metadata(head),
                                  content_type=head.content_type or "application/octet-stream",
                                  size=head.size)
            if object_kind(head, has_children=False) is Kind.FILE:
                # The copy has the same attributes and, unless it is a multipart object, the same
                # ETag: the new name is listed exactly (a changed ETag never matches the row).
                self._stored(new_keys[info.key], self._object_entry(head, is_dir=False))

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
        # The old name's other markers go too: as in s3fs, the moved directory has a "dir/" marker.
        await self.store.delete_many({info.key for info in keys} | set(self._marker_keys(old, source)))
        self.inodes.move(old, new)
        for path in [p for p in self.local_only if is_under(p, old)]:
            self.local_only[new + path[len(old):]] = self.local_only.pop(path)
        for node in pending:
            if node.staged is not None and node.staged.dirty:
                node.staged.base_etag = None  # the new key does not exist yet
                await self._commit(node)
        self.dir_times.forget_implicit(old)
        self._forget_subtree(old)
        self._forget_subtree(new)
        self._remember(old, None)
        self._remember(new, replace(source, has_marker=True, object_marker=False))
