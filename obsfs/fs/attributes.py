"""Attributes: getattr, setattr and symlink targets."""

from __future__ import annotations

import errno
import stat
from dataclasses import replace

import pyfuse3

from obsfs.fs.boundary import FsError, boundary
from obsfs.fs.core import NEGATIVE, content_type_for, now_ns
from obsfs.fs.files import OpenFiles
from obsfs.inodes import ROOT_INO, Node
from obsfs.meta import DIR_CONTENT_TYPE, to_metadata


class Attributes(OpenFiles):
    """What stat shows, and changes to it (chmod, chown, utimens, truncate)."""

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
            now = now_ns()
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
