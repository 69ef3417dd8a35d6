"""Write-back: committing written data to the journal, uploading it conditionally, settling conflicts."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import trio

from obsfs.backend.aio import AsyncStore
from obsfs.errors import NotFound, ObsfsError, PreconditionFailed
from obsfs.fs.core import FsConfig, FsCore, content_type_for, user_metadata
from obsfs.handletable import StagedRow
from obsfs.inodemap import InodeMap
from obsfs.inodes import Entry, Node
from obsfs.journal import JOURNALED_DATA_MAX, DirtyRecord, Journal
from obsfs.layout import Layout
from obsfs.meta import Attrs, to_metadata
from obsfs.metacache import MetaCache
from obsfs.metrics import Metrics
from obsfs.reader import ChunkReader
from obsfs.staging import StagedFile, StagingArea
from obsfs.upload import local_etags, upload_file
from obsfs.writeback import WriteBack

log = logging.getLogger(__name__)


class Uploads(FsCore):
    """Dirty files: from close/fsync to the store, and back after a crash."""

    def __init__(self, store: AsyncStore, layout: Layout, staging: StagingArea, journal: Journal,
                 reader: ChunkReader, meta_cache: MetaCache, inode_map: InodeMap, config: FsConfig,
                 metrics: Metrics | None = None, *, session: str = "") -> None:
        super().__init__(store, layout, staging, journal, reader, meta_cache, inode_map, config, metrics,
                         session=session)
        self.writeback = WriteBack(self._upload, workers=config.upload_workers, delay=config.upload_delay,
                                   max_dirty=config.max_dirty, metrics=self.metrics)


    async def _commit(self, node: Node) -> None:
        """Make the written data durable in the cache, journal it, and queue its upload.

        When this returns (close, fsync), a crash can no longer lose the data: the next mount of
        the same cache dir finds it in the journal.
        """
        staged = node.staged
        if staged is None or not staged.dirty or node.path is None:
            return
        version = staged.version  # what the fsync below covers: a write meanwhile is not
        data = None
        if staged.size() <= JOURNALED_DATA_MAX:
            # The row carries the contents, and its fsync is the one close() needs (journal.py).
            data = staged.read(0, staged.size())
        else:
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
                attrs=entry.attrs, content_type=entry.content_type or content_type_for(node.path), data=data))
            staged.journaled = True
            staged.journaled_version = version
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
            # The name was removed and written again here: the old object's queued delete goes
            # first, or it would land after our upload (a DELETE cannot be conditional).
            await self.deletes.settle([key])
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
            self.metrics.to_store.inc(size)
            staged.synced_version = max(staged.synced_version, version)
            staged.base_etag = etag
            if node.opens:
                # An fd still open goes on from this version, also through the next daemon; this
                # runs outside any request, so nothing else would commit it before a kill.
                self._note_staged(node)
                self.inodes.numbers.commit()
            if staged.journaled and staged.dirty:
                self._rebase_row(staged, version, etag)
            node.kernel_etag = etag
            node.local_only = False
            self.local_only.pop(path, None)
            node.entry = replace(node.entry, attrs=node.entry.attrs.with_changes(size=size), etag=etag,
                                 content_type=content_type, exact=True)
            self.meta_cache.put(key, etag, attrs, content_type)
            self._remember(path, node.entry)
            if not staged.dirty:
                self._release_staged(node)

    def _rebase_row(self, staged: StagedFile, uploaded: int, etag: str) -> None:
        """Written again during the upload that just stored version ``uploaded``: the journal row
        must stop saying that its contents are based on the stored version before, or after a
        crash the next daemon's conditional upload fails on our own object and files a false
        conflict (the name then shows the older bytes). A row this upload covered goes: the
        writes since were not acknowledged, and an open fd goes on through the handle table
        (``_note_staged``, just before). A newer row is now based on ``etag``."""
        if staged.journaled_version <= uploaded:
            staged.journaled = False
            self.journal.remove(staged.name)
            return
        try:
            self.journal.rebase(staged.name, etag)
        except OSError as exc:  # a full cache disk: after a crash, a conflict copy, never a loss
            log.warning("could not record the upload of %s in the cache journal: %s", staged.name, exc)

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
        stored = user_metadata(info)
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
        self.metrics.conflict_copies.inc()
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
            # With other uploads to come, the next close's row takes the delete along (journal.py)
            # of a closed file: its data file is gone first, so a crash that keeps the row drops
            # it. An open file's data file stays and may be written on, so a row kept over a
            # crash would be taken for a pending version based on the one before this upload:
            # the next daemon's conditional upload would find this one and file a false conflict.
            self.journal.remove(staged.name, later=node.opens == 0 and self.writeback.others_pending(node))

    def _discard_staged(self, node: Node) -> None:
        """The file is gone: drop its pending upload and its cached data."""
        self.writeback.cancel(node)
        self._drop_stream(node, "deleted")
        if node.staged is not None:
            node.staged.synced_version = node.staged.version
        node.local_only = False
        self._release_staged(node)

    async def flush_all(self, deadline: float) -> list[str]:
        """Upload everything pending (unmount, SIGTERM); returns the paths that did not make it."""
        for node in [n for n in self.inodes.under("") if n.staged is not None and n.staged.dirty]:
            try:
                await self._commit(node)
            except OSError as exc:  # a full cache disk: still queued, the drain below may save it
                log.warning("could not journal %s before the final upload: %s", node.path, exc)
        until = trio.current_time() + deadline
        left = await self.writeback.drain(deadline)
        for node in left:
            log.error("not uploaded: %s (kept in %s; the next mount with this cache dir uploads it)",
                      node.path, node.staged.path if node.staged else "?")
        self.staging.close()  # its spare files: nothing is created after the final uploads
        owed = await self.deletes.drain(max(0.0, until - trio.current_time()))
        for key in owed:
            log.error("not deleted: %s (journaled; the next mount with this cache dir deletes it)", key)
        return [node.path or "?" for node in left] + [f"(delete) {key}" for key in owed]

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
        owed = self.journal.owed_deletes()
        if owed:
            # Sent first, and before any upload of the same key (which settles it), as they happened.
            log.warning("replaying %d delete(s) the previous daemon acknowledged but did not send", len(owed))
            self.deletes.restore(owed)
        records = self.journal.all()
        if self.journal.rebooted:
            # Small files' data files were not fsynced: a power loss may have torn them. Their rows
            # hold the acknowledged bytes (journal.py); all of them, also rows left for later below.
            restored = [(rec.data_file, rec.data) for rec in records if rec.data is not None]
            for name, data in restored:
                self.staging.rewrite(name, data)
            if restored:
                log.warning("first mount since a reboot: %d small file(s) restored from the journal", len(restored))
        self.journal.recovered()
        known = {rec.data_file for rec in records}
        in_use = [row for row in self.handle_table.staged_in_use() if row.data_file not in known]
        self.handle_table.forget_unused_staging()
        for name in self.staging.names() - known - {row.data_file for row in in_use}:
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
            node = self._adopt_staged(path, entry, staged)
            self.writeback.schedule(node, delay=0)
            count += 1
        if count:
            log.warning("recovered %d file(s) not yet uploaded by the previous daemon", count)
        for row in in_use:
            self._adopt_open(row)
        self.inodes.numbers.commit()
        return count

    def _adopt_open(self, row: StagedRow) -> None:
        """Go on with a file an fd of this kernel session is still open on and wrote to, which an
        earlier daemon staged (handletable.py). Nothing was acknowledged beyond the journal, so
        no upload is queued: the app's close or fsync commits it, as it would have."""
        known = self.inodes.numbers.path_of(row.ino)
        staged = self.staging.reopen(row.data_file)
        if staged is None:
            return
        if known is None:  # unlinked while open: its data was never going to be kept
            log.info("dropping the staged data of deleted inode %d", row.ino)
            staged.remove()
            return
        path = known[0]
        staged.journaled = False
        staged.base_etag = row.base_etag
        changed = os.fstat(staged.fd).st_mtime_ns  # the last write's time, to the page cache's clock
        attrs = Attrs(mode=row.mode, uid=row.uid, gid=row.gid, size=staged.size(), atime_ns=row.atime_ns,
                      mtime_ns=changed, ctime_ns=changed)
        entry = Entry(attrs, etag=row.base_etag, content_type=row.content_type)
        self._adopt_staged(path, entry, staged)
        log.warning("kept the staged data of %s, open through the previous daemon", path)

    def _adopt_staged(self, path: str, entry: Entry, staged: StagedFile) -> Node:
        """Make ``staged`` the pending contents of ``path`` (a file a crash left behind); it is
        only local while no stored version underlies it (``entry.etag`` is its base)."""
        node = self.inodes.add(path, entry)
        node.staged = staged
        node.local_only = entry.etag is None
        if node.local_only:
            self.local_only[path] = node
        self._remember(path, entry)
        return node
