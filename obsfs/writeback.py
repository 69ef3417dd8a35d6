"""When dirty files go to the store: a short delay, N parallel workers, retries, and waiting.

``close()`` only makes the data durable locally (see ``journal.py``) and calls ``schedule``; the
upload happens here, in the background. The short delay lets the common "write a temp file,
chmod, utime, rename" sequence (rsync, editors, git) end in one PUT of the final name instead of
a PUT, three COPYs and a DELETE.

A dispatcher task hands ready nodes through a zero-capacity channel to ``workers`` upload tasks,
so at most that many uploads run and nothing queues inside the channel. It finds the next node
in a heap of start times: while uploads lag behind a ``cp -r`` of small files, thousands of
nodes wait, and a scan of them all for every dispatch made the daemon's CPU grow with the
square of the backlog. A failed upload stays dirty and is retried with a growing delay, for
ever: its data is safe in the cache, and dropping it would lose acknowledged writes. ``fsync``
waits for the upload of its version and reports its failure; writers wait (backpressure) while
more than ``max_dirty`` bytes wait for upload.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable

import trio

from obsfs.errors import ObsfsError
from obsfs.inodes import Node
from obsfs.metrics import Metrics

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 60.0


class WriteBack:
    def __init__(self, upload: Callable[[Node], Awaitable[None]], *, workers: int, delay: float,
                 max_dirty: int, metrics: Metrics | None = None) -> None:
        self._upload = upload
        self.metrics = metrics or Metrics()
        self._since: dict[Node, float] = {}  # pending nodes -> trio time they first became pending
        self.workers = workers
        self.delay = delay
        self.max_dirty = max_dirty
        self._due: dict[Node, float] = {}  # waiting nodes -> trio time they may start
        # (start, tiebreak, node) for the dispatcher: an entry whose start is no longer the node's
        # in _due is stale and skipped. A due node taken off while its upload runs is pushed
        # again when that upload ends (_worker).
        self._heap: list[tuple[float, int, Node]] = []
        self._order = itertools.count()
        self._active: set[Node] = set()
        self._bytes: dict[Node, int] = {}  # bytes each waiting or active node will send
        self.queued_bytes = 0  # their sum, kept as it changes: every write() checks it
        self._failures: dict[Node, int] = {}
        # per node: the version the last attempt sent, its error, and its attempt number
        self._last: dict[Node, tuple[int, BaseException | None, int]] = {}
        self._attempts = 0  # attempts started, over all nodes
        self._wakeup = trio.Event()
        # The start the dispatcher sleeps until (-inf while it is not asleep): only a node due
        # sooner needs to wake it (``_set_due``). During ``cp -r`` every close schedules an
        # upload later than those before it, and every upload ends while others wait; waking it
        # for each cost a step of the trio thread that changed nothing.
        self._asleep_until = -math.inf
        self._progress = trio.Event()

    # -- state -----------------------------------------------------------------------------
    def _count(self, node: Node, size: int | None) -> None:
        """Set (or with None, drop) the bytes ``node`` will send, keeping the sum, and since when
        it has been waiting."""
        self.queued_bytes -= self._bytes.pop(node, 0)
        if size is not None:
            self._bytes[node] = size
            self.queued_bytes += size
            self._since.setdefault(node, trio.current_time())
        else:
            self._since.pop(node, None)

    @property
    def active(self) -> int:
        """Uploads running now."""
        return len(self._active)

    def oldest_age(self) -> float:
        """Seconds the longest-waiting pending node has waited (0: none)."""
        return trio.current_time() - min(self._since.values()) if self._since else 0.0

    def waiting(self) -> list[tuple[Node, int]]:
        """Pending nodes and the bytes each will send, the longest-waiting first."""
        return [(node, self._bytes.get(node, 0)) for node in sorted(self._since, key=self._since.__getitem__)]

    def busy(self, node: Node) -> bool:
        return node in self._due or node in self._active

    def others_pending(self, node: Node) -> bool:
        """Uploads other than ``node``'s are waiting or running."""
        return len(self._due) + len(self._active) > (node in self._due) + (node in self._active)

    def pending(self) -> list[Node]:
        return list(self._due) + [n for n in self._active if n not in self._due]

    def _notify(self) -> None:
        """An upload ended: wake waiters. (A node scheduled again during its upload wakes the
        dispatcher when its entry is pushed again, in ``_worker``.)"""
        self._progress.set()
        self._progress = trio.Event()

    # -- producers ---------------------------------------------------------------------------
    def schedule(self, node: Node, delay: float | None = None) -> None:
        """Upload ``node`` after ``delay`` (default: the configured delay), unless already due sooner."""
        start = trio.current_time() + (self.delay if delay is None else delay)
        if node not in self._due or start < self._due[node]:
            self._set_due(node, start)
        if node.staged is not None:
            self._count(node, node.staged.size())

    def _set_due(self, node: Node, start: float) -> None:
        self._due[node] = start
        heapq.heappush(self._heap, (start, next(self._order), node))
        if start < self._asleep_until:
            self._wakeup.set()

    def cancel(self, node: Node) -> None:
        """The file was deleted: nothing to upload any more."""
        self._due.pop(node, None)
        if node not in self._active:
            self._count(node, None)
        self._failures.pop(node, None)
        self._last.pop(node, None)
        self._notify()

    async def wait_uploaded(self, node: Node) -> None:
        """Return once the store has the current version of ``node``; raise if its upload failed."""
        if node.staged is None:
            return
        target = node.staged.version
        called_at = self._attempts  # an attempt already running may have started before this data
        self.schedule(node, delay=0)
        while node.staged is not None and node.staged.synced_version < target and node.path is not None:
            tried, error, attempt = self._last.get(node, (-1, None, -1))
            if error is not None and tried >= target and attempt > called_at:
                raise error
            if not self.busy(node):
                self.schedule(node, delay=0)
            await self._progress.wait()

    async def wait_for_room(self) -> None:
        """Backpressure for writers; never waits on uploads that cannot start (nothing queued)."""
        while self.queued_bytes > self.max_dirty and (self._due or self._active):
            await self._progress.wait()

    async def drain(self, deadline: float) -> list[Node]:
        """Upload everything now; returns the nodes still not uploaded when ``deadline`` passes."""
        now = trio.current_time()
        for node in list(self._due):
            self._set_due(node, now)
        with trio.move_on_after(deadline):
            while self._due or self._active:
                await self._progress.wait()
        return self.pending()

    # -- tasks -------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, receive = trio.open_memory_channel[Node](0)
        async with trio.open_nursery() as nursery:
            for number in range(self.workers):
                nursery.start_soon(self._worker, receive.clone(), name=f"upload-worker-{number}")
            receive.close()
            task_status.started()
            await self._dispatch(send)

    async def _dispatch(self, send: trio.MemorySendChannel[Node]) -> None:
        async with send:
            while True:
                node = self._next_ready()
                if node is None:
                    self._asleep_until = self._heap[0][0] if self._heap else math.inf
                    with trio.move_on_at(self._asleep_until):
                        await self._wakeup.wait()
                    self._asleep_until = -math.inf
                    self._wakeup = trio.Event()
                    continue
                del self._due[node]
                self._active.add(node)
                await send.send(node)

    def _next_ready(self) -> Node | None:
        """The waiting node that is due first, if it may start now; drops stale heap entries and
        those of nodes whose upload is running (pushed again when it ends). Otherwise the heap's
        top is the next start time, or it is empty."""
        heap = self._heap
        while heap:
            start, _, node = heap[0]
            if self._due.get(node) != start or node in self._active:
                heapq.heappop(heap)
                continue
            if start > trio.current_time():
                return None
            heapq.heappop(heap)
            return node
        return None

    async def _worker(self, receive: trio.MemoryReceiveChannel[Node]) -> None:
        async with receive:
            async for node in receive:
                self._attempts += 1
                attempt = self._attempts
                if self._failures.get(node):
                    self.metrics.upload_retries.inc()
                version = node.staged.version if node.staged is not None else -1
                error: BaseException | None = None
                try:
                    await self._upload(node)
                except (ObsfsError, OSError) as exc:
                    error = exc
                finally:
                    self._active.discard(node)
                    if node in self._due:  # scheduled again meanwhile: its entry was set aside
                        self._set_due(node, self._due[node])
                self._last[node] = (version, error, attempt)
                self.metrics.upload_attempts.labels("failed" if error is not None else "ok").inc()
                if error is not None:
                    failures = self._failures.get(node, 0) + 1
                    self._failures[node] = failures
                    retry = min(MAX_RETRY_DELAY, 2.0 * 2 ** (failures - 1))
                    log.warning("upload of %s failed (attempt %d, next in %.0f s): %s", node.path, failures,
                                retry, error)
                    self.schedule(node, delay=retry)
                else:
                    self._failures.pop(node, None)
                    if node.staged is not None and node.staged.dirty and node.path is not None:
                        self.schedule(node)  # written again during the upload
                    elif node not in self._due:
                        self._count(node, None)
                        self._last.pop(node, None)
                self._notify()
