"""Attributes: getattr, setattr, symlink targets, and the times of directories whose entries change."""

from __future__ import annotations

import errno
import functools
import logging
import stat
from dataclasses import replace

import pyfuse3
import trio

from obsfs.errors import ObsfsError, first_error
from obsfs.fs.boundary import FsError, boundary
from obsfs.fs.core import NEGATIVE, content_type_for, now_ns
from obsfs.fs.files import OpenFiles
from obsfs.inodes import ROOT_INO, Entry, Node
from obsfs.meta import DIR_CONTENT_TYPE, Attrs, to_metadata
from obsfs.writeback import MAX_RETRY_DELAY

log = logging.getLogger(__name__)


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
            # pyfuse3 turns UTIME_NOW into the current time and leaves out UTIME_OMIT.
            changes: dict[str, int] = {"ctime_ns": attr.st_ctime_ns if fields.update_ctime else now}
            if fields.update_mode:
                changes["mode"] = stat.S_IFMT(attrs.mode) | stat.S_IMODE(attr.st_mode)
            if fields.update_uid:
                changes["uid"] = attr.st_uid
            if fields.update_gid:
                changes["gid"] = attr.st_gid
            if fields.update_atime:
                changes["atime_ns"] = attr.st_atime_ns
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
                self._note_staged(node)
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
        if entry.attrs.is_dir and node.local_only:
            # Made here, its marker still owed: the journal's row and the pending write take the
            # new attributes (dirtimes.py), as a file's staged data would.
            self.journal.note_marker(self.layout.dir_key(path), entry.attrs)
            if self.dir_times.touch(path) and self.nursery is not None:
                self.nursery.start_soon(self._write_dir_times, path, self.config.upload_delay)
        elif entry.attrs.is_dir:
            async with self.dir_times.writing(path):
                self.dir_times.take(path)  # this write carries the times a pending one would
                entry = node.entry  # as of now: an entry created while we waited changed the times
                etag = await self.store.put_bytes(self.layout.dir_key(path), b"", metadata=to_metadata(entry.attrs),
                                                  content_type=DIR_CONTENT_TYPE)
            self.dir_times.implicit.pop(path, None)  # it has a marker now
            node.entry = replace(node.entry, etag=etag or None, has_marker=True)
        else:
            metadata = to_metadata(entry.attrs)
            key = self.layout.file_key(path)
            await self.store.copy(key, key, metadata=metadata,
                                  content_type=entry.content_type or content_type_for(path), size=entry.attrs.size)
            # A copy may change the ETag (multipart objects); later conditional uploads need the new one.
            etag = (await self.store.head(key)).etag
            node.entry = replace(entry, etag=etag or None)
            self._stored(key, node.entry)
        self._remember(path, node.entry)

    def _dir_changed(self, inode: int) -> None:
        """An entry was created in, removed from or renamed in the directory ``inode``: its mtime
        and ctime are now. Shown at once (the kernel drops its cached attributes of the directory
        after such a request and asks getattr); stored lazily, see dirtimes.py."""
        node = self.inodes.get(inode)
        path = node.path if node is not None else None
        if node is None or path is None:
            return
        now = now_ns()
        node.entry = replace(node.entry, attrs=node.entry.attrs.with_changes(mtime_ns=now, ctime_ns=now))
        self._remember(path, node.entry)
        if not path:
            return  # the mount root: its attributes come from the mount options and live in memory only
        if not node.entry.has_marker:
            self.dir_times.implicit[path] = node.entry.attrs  # no marker is made for it
        elif node.entry.exact and self.dir_times.touch(path) and self.nursery is not None:
            self.nursery.start_soon(self._write_dir_times, path, self.config.upload_delay)

    async def _new_dir(self, path: str, attrs: Attrs) -> Entry:
        """The entry of a directory mkdir makes at ``path``. Its marker is journaled and owed to
        the store as a pending write of its times (dirtimes.py): the PUT goes out ``upload_delay``
        later, with the times its first entries gave it, so ``cp -r`` of a tree pays one PUT per
        directory, not waited for, where it paid two, one of them waited for. Until then it is
        local (listed, stat'ed and removed from here); other clients see it with the upload.
        A cache disk with no room for the row makes the marker now, as before."""
        key = self.layout.dir_key(path)
        entry = Entry(attrs, content_type=DIR_CONTENT_TYPE, has_marker=True)
        if self.nursery is not None:
            try:
                self.journal.note_marker(key, attrs)
            except OSError as exc:
                log.info("storing directory %s at once: %s", path, exc)
            else:
                self._adopt_new_dir(path, entry)
                self.nursery.start_soon(self._write_dir_times, path, self.config.upload_delay)
                return entry
        await self.deletes.settle([key])  # a marker removed just before goes first
        etag = await self.store.put_bytes(key, b"", metadata=to_metadata(attrs), content_type=DIR_CONTENT_TYPE)
        return replace(entry, etag=etag or None)

    def _adopt_new_dir(self, path: str, entry: Entry) -> None:
        """``path`` is a directory whose marker the store is owed: local, and kept in the inode
        table until its marker is written, whatever the kernel forgets."""
        node = self.inodes.add(path, entry)
        node.local_only = True
        self.local_only[path] = node
        self.dir_times.touch(path)

    async def recover(self) -> int:
        """Also the directories an earlier daemon made and did not store: local again, their
        markers owed (written once ``write_owed_markers`` runs, in the mount's nursery)."""
        count = await super().recover()
        for key, attrs in self.journal.markers():
            if not key.startswith(self.layout.prefix):
                log.error("journal entry for directory %s cannot be recovered here (another prefix)", key)
                continue
            path = self.layout.path_of(key)
            self._adopt_new_dir(path, Entry(attrs, content_type=DIR_CONTENT_TYPE, has_marker=True))
            self._remember(path, self.local_only[path].entry)
            log.warning("directory %s, made by the previous daemon, is not in the store yet; storing it", path)
        self.inodes.numbers.commit()
        return count

    def write_owed_markers(self) -> None:
        """Start the writes that ``recover`` found owed; called once ``nursery`` is set."""
        assert self.nursery is not None
        for path in self.dir_times.owed_under(""):
            self.nursery.start_soon(self._write_dir_times, path, 0)

    async def _write_dir_times(self, path: str, delay: float, *, strict: bool = False, attempt: int = 0) -> None:
        """The lazy write of a directory's marker, with its attributes as they are when this
        writer's turn comes, so one PUT covers every change until then.

        A directory made here (``node.local_only``) must reach the store: a failed write stays
        owed and is tried again later (``strict``: raised instead, for a rename, which must not
        go on without it). Its times alone are not worth that: a failure loses them, logged."""
        await trio.sleep(delay)
        async with self.dir_times.writing(path):
            if not self.dir_times.take(path):
                return  # an explicit change wrote it, or the directory was removed or renamed
            node = self.inodes.by_path(path)
            entry = node.entry if node is not None else self.stat_cache.get(path)
            if not isinstance(entry, Entry) or not entry.attrs.is_dir or not entry.has_marker:
                return
            new = node is not None and node.local_only
            key = self.layout.dir_key(path)
            try:
                if new:
                    await self.deletes.settle([key])  # a marker removed just before goes first
                etag = await self.store.put_bytes(key, b"", metadata=to_metadata(entry.attrs),
                                                  content_type=DIR_CONTENT_TYPE)
            except ObsfsError as exc:
                if not new:
                    log.warning("the new times of directory %s were not stored: %s", path, exc)
                    return
                self.dir_times.touch(path)
                if strict or self.nursery is None:
                    raise
                retry = min(MAX_RETRY_DELAY, 2.0 * 2 ** attempt)
                log.warning("directory %s is not in the store yet (%s); trying again in %.0f s", path, exc, retry)
                self.nursery.start_soon(functools.partial(self._write_dir_times, path, retry, attempt=attempt + 1))
                return
            if new and node is not None and not self.dir_times.is_pending(path):
                # (Changed again meanwhile: still owed, and still local, until the next write.)
                node.local_only = False
                self.local_only.pop(path, None)
                self.journal.forget_marker(key)
                node.entry = replace(node.entry, etag=etag or None)
                self._remember(path, node.entry)
                self.inodes.drop_if_unused(node)

    async def _write_dir_times_now(self, under: str, *, strict: bool = False) -> None:
        """Write the pending directory markers at and below ``under``, and wait for those in
        flight (a rename copies the markers from the store, the unmount ends the mount).
        ``strict``: a directory made here that could not be stored raises."""
        try:
            async with trio.open_nursery() as nursery:
                for path in self.dir_times.owed_under(under):
                    nursery.start_soon(functools.partial(self._write_dir_times, path, 0, strict=strict))
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def flush_all(self, deadline: float) -> list[str]:
        """Files first, then directory markers with what is left of ``deadline``: a directory
        made here that is not stored by then stays in the journal for the next mount; losing
        the times of any other costs only its new mtime."""
        end = trio.current_time() + deadline
        failed = await super().flush_all(deadline)
        with trio.move_on_after(max(0.0, end - trio.current_time())):
            try:
                await self._write_dir_times_now("")
            except ObsfsError as exc:
                log.error("not all directories made here are in the store (%s); the journal keeps them", exc)
        return failed + [f"(directory) {path}" for path in self.dirs_owed()]

    def dirs_owed(self) -> list[str]:
        """The directories made here whose marker the store does not hold yet."""
        return [path for path, node in self.local_only.items() if node.entry.attrs.is_dir]

    @boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if node.entry.link_target is not None:
            return node.entry.link_target
        path = self._path(node)
        entry = await self._require(path)
        if not entry.attrs.is_link:
            raise FsError(errno.EINVAL, f"{path} is not a symbolic link")
        target = await self.store.read_small(self.layout.file_key(path), max(entry.attrs.size, 1))
        node.entry = replace(entry, link_target=target)
        self._remember(path, node.entry)
        return target
