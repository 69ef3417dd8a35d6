"""Open files: handles, reads, writes, flush, fsync and release."""

from __future__ import annotations

import errno
import os
from dataclasses import replace

import pyfuse3

from obsfs.errors import ObsfsError
from obsfs.fs.boundary import FsError, boundary
from obsfs.fs.core import FileHandle, content_type_for, now_ns
from obsfs.fs.uploads import Uploads
from obsfs.inodes import Node
from obsfs.meta import to_metadata
from obsfs.partstream import PartStream
from obsfs.staging import StagedFile


class OpenFiles(Uploads):
    """The handlers of open files and the local copy their writes go to."""

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
                    now = now_ns()
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
        staged = self._new_staged()
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
        self._note_staged(node)
        return staged

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        # pyfuse3 replies from any contiguous buffer (PyObject_GetBuffer), its stub says bytes.
        handle = self._file_handle(fh)
        node = handle.node
        data: bytes | memoryview
        if node.staged is not None:
            data = node.staged.read(off, size)
        else:
            entry = node.entry
            data = await self.reader.read(handle.reading, self.layout.file_key(self._path(node)), entry.etag or "",
                                          entry.attrs.size, off, size)
        self.metrics.to_kernel.inc(len(data))
        return data

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
        self.metrics.from_kernel.inc(written)
        now = now_ns()
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

    @boundary
    async def release(self, fh: int) -> None:
        handle = self._file_handle(fh)
        self._drop_handle(fh)
        node = handle.node
        try:
            # close() committed at flush; a second fsync and row for the same version (cp -r: one
            # more each per file) would promise nothing more. Writes that came after the last
            # flush (a shared mmap written back at munmap) are committed here.
            if node.staged is not None and node.staged.dirty and not node.staged.committed:
                await self._commit(node)
        finally:
            node.opens -= 1
            if node.opens == 0:
                self.handle_table.unstage(node.ino)
            if node.opens == 0 and handle.reading.key is not None:
                self.reader.forget(handle.reading.key)
            if node.opens == 0 and node.path is None:
                self._discard_staged(node)  # unlinked while open, written after: nothing to keep
            elif node.staged is not None and not node.staged.dirty and not self.writeback.busy(node):
                self._release_staged(node)
            self.inodes.drop_if_unused(node)
