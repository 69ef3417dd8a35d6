"""Multipart upload of a file while it is still being written.

A large file written from start to end (``cp``, ``dd``, a backup tool) would otherwise be sent
only after ``close()``: the writer's time and the upload's time add up. Here, once the file has
grown past one part, a multipart upload starts, and each part goes out as soon as the writer has
filled it. At close only the tail is left to send.

The stream is an optimisation, never the copy of record: the staged file and the journal keep
the data safe, and whenever the stream cannot give exactly the current contents (a write before
the end, a truncate, a rename, a failed part) it is abandoned and the normal whole-file upload
runs instead. Parts are cut at the same offsets as ``upload.upload_file`` cuts them, so the
object (and its multipart ETag) is the same either way.

User metadata (mode, uid, mtime) is fixed when a multipart upload is initiated, but a file's
mtime is that of its last write, known only at the end. When the final attributes differ from
the ones sent, the finished object gets them by a server-side copy onto itself (metadata only on
RGW: 13 ms for 1 GiB, measured).

Upload ids are written to the journal while they are open, so that the next mount aborts the
parts a crash left behind instead of leaving them to cost storage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from obsfs.backend.aio import AsyncStore
from obsfs.errors import ObsfsError, PreconditionFailed
from obsfs.journal import Journal
from obsfs.upload import abort_quietly, complete_checked, local_etags

log = logging.getLogger(__name__)


class PartStream:
    """One multipart upload fed by a growing local file. ``run`` is its task; the filesystem
    calls ``grew`` after appends, ``abandon`` when the contents stop being append-only, and
    ``finish`` from the upload worker once the file is complete."""

    def __init__(self, store: AsyncStore, journal: Journal, key: str, path: str, *, part_size: int,
                 parallel: int, metadata: Mapping[str, str], content_type: str) -> None:
        self.store = store
        self.journal = journal
        self.key = key
        self.path = path
        self.part_size = part_size
        self.parallel = parallel
        self.metadata = dict(metadata)
        self.content_type = content_type
        self.upload_id: str | None = None
        self.parts: dict[int, str] = {}
        self.sent_until = 0  # bytes handed to part uploads so far
        self.size = 0  # bytes the writer has written so far
        self.final_size: int | None = None  # set by finish: send everything up to here
        self.failure: str | None = None  # why the stream cannot be used any more
        self._changed = trio.Event()
        self._done = trio.Event()

    # -- called by the filesystem ----------------------------------------------------------
    def grew(self, size: int) -> None:
        self.size = size
        if size - self.sent_until >= self.part_size:
            self._changed.set()

    def abandon(self, why: str) -> None:
        """Stop: the parts sent so far no longer match the file. ``run`` aborts the upload."""
        if self.failure is None:
            self.failure = why
            log.debug("streamed upload of %s abandoned: %s", self.key, why)
        self._changed.set()

    async def finish(self, size: int, metadata: Mapping[str, str], content_type: str, *,
                     if_match: str | None, if_none_match: bool) -> str | None:
        """Send what is left, complete, and return the new ETag; None when the stream cannot give
        this version (the caller then uploads the whole file). PreconditionFailed as in
        ``upload_file``."""
        if self.failure is None and size < self.sent_until:
            self.abandon(f"file shrank to {size} bytes")
        self.final_size = size
        self._changed.set()
        await self._done.wait()
        if self.failure is not None or self.upload_id is None:
            return None
        try:
            etag = await complete_checked(self.store, self.key, self.upload_id, self.parts,
                                          if_match=if_match, if_none_match=if_none_match)
        except BaseException:
            await self._abort()  # after a complete that was then replaced: an unknown id, not an error
            raise
        self.journal.forget_upload(self.upload_id)
        if dict(metadata) != self.metadata or content_type != self.content_type:
            await self.store.copy(self.key, self.key, metadata=metadata, content_type=content_type, size=size)
            # The copy cannot be made conditional (servers ignore x-amz-copy-source-if-match), so
            # it may have copied another writer's object that completed after our check: look
            # again. RGW keeps the multipart ETag across the copy; AWS-style servers give the
            # body's MD5, which only reading the file tells.
            copied = (await self.store.head(self.key)).etag
            if copied != etag and copied not in await trio.to_thread.run_sync(
                    local_etags, self.path, size, self.part_size):
                raise PreconditionFailed(f"{self.key} was replaced by another writer as our upload completed "
                                         f"(ETag {copied})", key=self.key)
            etag = copied
        return etag

    # -- the task ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Initiate, then send each part as it fills, until finished or abandoned."""
        try:
            self.upload_id = await self.store.initiate_multipart(self.key, metadata=self.metadata,
                                                                 content_type=self.content_type)
            self.journal.note_upload(self.upload_id, self.key)
            limiter = trio.CapacityLimiter(self.parallel)
            async with trio.open_nursery() as nursery:
                while (part := await self._next_part(limiter)) is not None:
                    nursery.start_soon(self._send_part, limiter, *part)
        except (ObsfsError, OSError) as exc:
            self.abandon(f"could not start: {exc}")
        finally:
            if self.final_size is None or self.sent_until < self.final_size:
                self.abandon("stopped before the file was complete")  # cancelled: unmount
            if self.failure is not None:
                await self._abort()
            self._done.set()

    async def _next_part(self, limiter: trio.CapacityLimiter) -> tuple[int, int] | None:
        """Offset and length of the next part, once it is full (or final); None when all are sent
        or the stream was abandoned. Takes a limiter token for it (released by ``_send_part``), so
        no more than ``parallel`` parts are in flight."""
        while self.failure is None:
            end = self.final_size if self.final_size is not None else self.size
            full = end - self.sent_until >= self.part_size
            tail = self.final_size is not None and self.sent_until < end
            if full or tail:
                start = self.sent_until
                await limiter.acquire_on_behalf_of(start)
                self.sent_until = min(end, start + self.part_size)
                return start, self.sent_until - start
            if self.final_size is not None:
                return None
            await self._changed.wait()
            self._changed = trio.Event()
        return None

    async def _send_part(self, limiter: trio.CapacityLimiter, start: int, length: int) -> None:
        assert self.upload_id is not None
        part_no = start // self.part_size + 1
        try:
            if self.failure is None:
                self.parts[part_no] = await self.store.upload_part(self.key, self.upload_id, part_no, self.path,
                                                                   start, length)
        except (ObsfsError, OSError) as exc:
            self.abandon(f"part {part_no} failed: {exc}")
        finally:
            limiter.release_on_behalf_of(start)

    async def _abort(self) -> None:
        # If the abort fails, the journal keeps the id and the next mount tries again.
        if self.upload_id is not None and await abort_quietly(self.store, self.key, self.upload_id):
            self.journal.forget_upload(self.upload_id)
        self.upload_id = None
