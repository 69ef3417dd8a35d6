"""Async access to an ``ObjectStore`` for the trio filesystem.

The SDK blocks, so every call runs in a worker thread under one of three CapacityLimiters of our
own: metadata (HEAD, LIST, small PUTs, DELETE), data (GET, PUT, parts) and the HEADs of a whole
listing (``head_many``). A bulk transfer or a large listing then cannot starve ``stat``.
Retries and deadlines come from ``retry.py``: reads and metadata give up after ``read_deadline``
(the filesystem answers EIO), uploads after ``write_deadline``.

A call that only fetches (HEAD, LIST, GET) is abandoned at its deadline: the SDK has one socket
timeout per client (read when each connection is made, so it cannot be set per call), and a
store that accepts connections but never answers would otherwise hold us for that timeout per
attempt. The thread ends by itself at its socket timeout; until then it keeps its limiter token
(trio releases it only when the thread returns), so abandoned threads never outnumber the
limiter, and trio drops its late result. Uploads are never abandoned while the mount runs: a
late PUT would land after the retry that replaced it. Only at shutdown, once the drain deadline
has passed, ``stop_writing`` lets go of them (the process is about to exit, the journal keeps the
data).
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import trio

from obsfs.backend.base import ListPage, ObjectInfo, ObjectStore
from obsfs.backend.retry import acall_with_retry, call_with_retry
from obsfs.deadline import Reachability
from obsfs.errors import NotSupported, ObsfsError, StoreStopped, TemporaryFailure, first_error
from obsfs.metrics import Metrics

T = TypeVar("T")

log = logging.getLogger(__name__)


class AsyncStore:
    """Trio-facing wrapper; one per mount."""

    def __init__(self, store: ObjectStore, *, read_deadline: float, write_deadline: float,
                 meta_threads: int = 32, data_threads: int = 8, bulk_threads: int = 16,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        store.observer = self.metrics.store_request
        self.bucket = store.bucket
        self.read_deadline = read_deadline
        self.write_deadline = write_deadline
        self.meta_limiter = trio.CapacityLimiter(meta_threads)
        self.data_limiter = trio.CapacityLimiter(data_threads)
        # head_many's threads hold a token for a whole listing: they get their own, so that a
        # stat or an open elsewhere never queues behind 10,000 HEADs.
        self.bulk_limiter = trio.CapacityLimiter(bulk_threads)
        self.reachability = Reachability()
        self._writes: set[trio.CancelScope] = set()  # upload attempts in flight
        self._write_threads = trio.CapacityLimiter(math.inf)  # bounded by the tokens taken before
        self._stopped = False
        self.multi_delete = True  # until the store says it has no multi-object delete
        # Told of each key this mount wrote (True) or deleted (False), once the store confirmed
        # it: the attribute index (obsfs/indexing.py) follows what changed without hooks in the handlers.
        self.on_change: Callable[[str, bool], None] | None = None

    def _changed(self, key: str, exists: bool) -> None:
        if self.on_change is not None:
            self.on_change(key, exists)

    async def _run(self, what: str, fn: Callable[[], T], *, data: bool = False, write: bool = False,
                   until: float | None = None) -> T:
        """Run blocking ``fn`` with retries until it succeeds, fails for good, or the deadline
        passes: ``until`` (a trio time) if given, else the read or write deadline from now."""
        limiter = self.data_limiter if data else self.meta_limiter

        async def attempt() -> T:
            try:
                if write:
                    result = await self._write_attempt(what, fn, limiter)
                else:
                    result = await trio.to_thread.run_sync(fn, limiter=limiter, abandon_on_cancel=True)
            except TemporaryFailure:
                self.reachability.unanswered(trio.current_time())
                raise
            except ObsfsError:
                self.reachability.answered(trio.current_time())
                raise
            self.reachability.answered(trio.current_time())
            return result

        deadline = self.write_deadline if write else self.read_deadline
        try:
            return await acall_with_retry(attempt, what, deadline, until=until)
        except TemporaryFailure:
            self.reachability.unanswered(trio.current_time())  # also when no attempt could end
            raise

    async def _write_attempt(self, what: str, fn: Callable[[], T], limiter: trio.CapacityLimiter) -> T:
        """One attempt of an upload: waited for until its thread returns (bounded by the socket
        timeout), unless ``stop_writing`` lets go of it."""
        if self._stopped:
            raise StoreStopped(f"{what}: not sent, the mount is shutting down")
        # The wait for a token may be cut short by the deadline; the upload itself is shielded
        # from it, not from stop_writing. The token is ours (the thread's own limiter does not
        # count), so an upload let go of at shutdown hands it back at once.
        async with limiter:
            with trio.CancelScope(shield=True) as scope:
                self._writes.add(scope)
                try:
                    return await trio.to_thread.run_sync(fn, limiter=self._write_threads, abandon_on_cancel=True)
                finally:
                    self._writes.discard(scope)
        raise StoreStopped(f"{what}: given up, the mount is shutting down")

    def stop_writing(self) -> None:
        """Shutdown, after the drain deadline: let go of the uploads in flight and start no more.

        Their threads end with the process; what they were sending is still in the journal.
        """
        self._stopped = True
        for scope in self._writes:
            scope.cancel()

    async def head(self, key: str) -> ObjectInfo:
        return await self._run(f"HEAD {key}", functools.partial(self.store.head, key))

    async def head_many(self, keys: Sequence[str], deliver: Callable[[str, ObjectInfo | ObsfsError], None], *,
                        workers: int) -> None:
        """HEAD ``keys`` in order with ``workers`` threads that take them from one queue, handing
        each answer (or error) to ``deliver`` in the trio thread as soon as it is in.

        A cold ``ls -l`` of 10,000 files needs 10,000 HEADs. With one thread hop, limiter token
        and cancel scope per HEAD, that plumbing cost the trio thread as much as the SDK calls
        themselves (py-spy); here a thread makes many calls and only the answers hop back.
        Each call is retried like any other (blocking, in its thread).
        """
        queue = collections.deque(keys)
        token = trio.lowlevel.current_trio_token()
        # Answers wait here for the trio thread, which takes all that came in at each wakeup:
        # one run_sync_soon per answer cost a wakeup of the trio thread per HEAD.
        answers: list[tuple[str, ObjectInfo | ObsfsError]] = []
        lock = threading.Lock()

        def hand_over() -> None:
            while True:
                with lock:
                    batch = answers[:]
                    answers.clear()
                if not batch:
                    return
                for key, result in batch:
                    deliver(key, result)

        def work() -> None:
            while True:
                trio.from_thread.check_cancelled()
                try:
                    key = queue.popleft()  # atomic: the threads never take the same key
                except IndexError:
                    return
                result: ObjectInfo | ObsfsError
                try:
                    result = call_with_retry(functools.partial(self.store.head, key), f"HEAD {key}",
                                             self.read_deadline)
                except ObsfsError as exc:
                    result = exc
                with lock:
                    answers.append((key, result))
                    first = len(answers) == 1  # else a hand_over is due and will take it
                if first:
                    token.run_sync_soon(hand_over)

        async with trio.open_nursery() as nursery:
            for _ in range(min(workers, len(queue))):
                nursery.start_soon(functools.partial(trio.to_thread.run_sync, work, limiter=self.bulk_limiter))

    async def get_range(self, key: str, start: int, length: int, *, etag: str | None = None,
                        until: float | None = None) -> bytearray:
        """``until``: give up at this trio time instead of one read deadline from now."""
        data = await self._run(f"GET {key}", functools.partial(self.store.get_range, key, start, length, etag=etag),
                               data=True, until=until)
        self.metrics.from_store.inc(len(data))
        return data

    async def read_small(self, key: str, limit: int) -> bytes:
        data = await self._run(f"GET {key}", functools.partial(self.store.read_small, key, limit), data=True)
        self.metrics.from_store.inc(len(data))
        return data

    async def get_to_file(self, key: str, path: str, *, etag: str | None = None) -> int:
        """Download into the existing local file ``path``. Each attempt's thread opens the file
        itself: an attempt abandoned at the deadline may go on writing for a while, and must then
        reach only this file (which the caller removes), never a file that reused the number of
        a descriptor the caller has closed meanwhile."""

        def download() -> int:
            fd = os.open(path, os.O_WRONLY)
            try:
                return self.store.get_to_file(key, fd, etag=etag)
            finally:
                os.close(fd)

        size = await self._run(f"GET {key}", download, data=True)
        self.metrics.from_store.inc(size)
        return size

    async def put_file(self, key: str, path: str, *, metadata: Mapping[str, str], content_type: str,
                       if_match: str | None = None, if_none_match: bool = False) -> str:
        etag = await self._run(f"PUT {key}", functools.partial(
            self.store.put_file, key, path, metadata=metadata, content_type=content_type,
            if_match=if_match, if_none_match=if_none_match), data=True, write=True)
        self._changed(key, True)
        return etag

    async def put_bytes(self, key: str, data: bytes, *, metadata: Mapping[str, str],
                        content_type: str) -> str:
        etag = await self._run(f"PUT {key}", functools.partial(
            self.store.put_bytes, key, data, metadata=metadata, content_type=content_type), write=True)
        self._changed(key, True)
        return etag

    async def initiate_multipart(self, key: str, *, metadata: Mapping[str, str], content_type: str) -> str:
        return await self._run(f"initiate multipart {key}", functools.partial(
            self.store.initiate_multipart, key, metadata=metadata, content_type=content_type), write=True)

    async def upload_part(self, key: str, upload_id: str, part_no: int, path: str, offset: int,
                          size: int) -> str:
        return await self._run(f"upload part {part_no} of {key}", functools.partial(
            self.store.upload_part, key, upload_id, part_no, path, offset, size), data=True, write=True)

    async def complete_multipart(self, key: str, upload_id: str, parts: Iterable[tuple[int, str]], *,
                                 if_match: str | None = None, if_none_match: bool = False) -> None:
        parts = list(parts)
        await self._run(f"complete multipart {key}", functools.partial(
            self.store.complete_multipart, key, upload_id, parts, if_match=if_match, if_none_match=if_none_match),
            write=True)
        self._changed(key, True)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._run(f"abort multipart {key}", functools.partial(
            self.store.abort_multipart, key, upload_id), write=True)

    async def copy(self, src_key: str, dst_key: str, *, metadata: Mapping[str, str],
                   content_type: str, size: int | None = None) -> None:
        await self._run(f"COPY {src_key}", functools.partial(
            self.store.copy, src_key, dst_key, metadata=metadata, content_type=content_type, size=size),
            write=True)
        self._changed(dst_key, True)

    async def delete(self, key: str) -> None:
        await self._run(f"DELETE {key}", functools.partial(self.store.delete, key), write=True)
        self._changed(key, False)

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Multi-object DELETEs of up to 1,000 keys each; on a store that has none (HTTP 501),
        single DELETEs in parallel, on the metadata threads, from then on."""
        keys = list(keys)
        if self.multi_delete:
            try:
                await self._run(f"DELETE {len(keys)} keys", functools.partial(self.store.delete_many, keys),
                                write=True)
                for key in keys:
                    self._changed(key, False)
                return
            except NotSupported as exc:
                log.warning("the store has no multi-object delete (%s); deleting one key at a time", exc)
                self.multi_delete = False
        try:
            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(self.delete, key)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def list(self, prefix: str = "", delimiter: str | None = "/", marker: str | None = None,
                   max_keys: int = 1000) -> ListPage:
        return await self._run(f"LIST {prefix or '/'}", functools.partial(
            self.store.list, prefix, delimiter, marker, max_keys))

    async def check_access(self, prefix: str = "") -> None:
        await self._run(f"check bucket {self.bucket}", functools.partial(self.store.check_access, prefix))
