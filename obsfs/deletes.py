"""Deletes owed to the store: journaled before ``unlink``/``rmdir`` answer, sent in batches.

Waiting for one DELETE per file made ``rm -r`` of 6,400 files take minutes. Instead a removed
name is hidden locally at once (``fs/core.py`` asks ``key in queue``), its key is written to the
journal (committed before the reply, as ``close()`` commits data, so a crash replays it), and a
task sends the queued keys ``delay`` after the first of them, up to ``BATCH`` keys in one
multi-object DELETE. A burst of unlinks becomes a few requests.

Order rules, so that a delete never removes something newer and never leaves stray keys:

- A key this mount is about to write again (an upload after unlink and create of the same name,
  a rename or mkdir onto a removed name) is ``settle``-d first: its delete is sent at once and
  waited for, so the new object always lands after it. A plain DELETE cannot be made conditional
  on S3, RGW or moto, so this is the only order that is safe.
- A directory's marker keys are *held* while any key below the directory is queued or being
  sent: they go in a later batch than the directory's files, so a batch that fails in part never
  leaves files without their directory's marker as the only trace of an ``rm -r``.
- A key added again while a batch with it is in flight keeps its journal row when that batch
  ends, and is sent again.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Protocol

import trio

from obsfs.errors import ObsfsError
from obsfs.metrics import Metrics

log = logging.getLogger(__name__)

BATCH = 1000  # keys per multi-object DELETE: the S3 limit
SENDERS = 4  # batches in flight at once
MAX_RETRY_DELAY = 60.0


class DeleteJournal(Protocol):
    def note_deletes(self, keys: list[str], hold: str | None, replacing: str | None) -> None: ...
    def forget_deletes(self, keys: list[str]) -> None: ...


def _busy_prefixes(keys: Iterable[str]) -> set[str]:
    """Every directory prefix (``a/``, ``a/b/``) that has a key strictly below it."""
    out: set[str] = set()
    for key in keys:
        end = key.find("/")
        while 0 <= end < len(key) - 1:
            out.add(key[:end + 1])
            end = key.find("/", end + 1)
    return out


class DeleteQueue:
    """Keys removed locally whose DELETE the store has not confirmed yet. Code between two awaits
    is atomic: the dictionaries change only in the trio thread."""

    def __init__(self, send: Callable[[list[str]], Awaitable[None]], journal: DeleteJournal, *, delay: float,
                 metrics: Metrics | None = None) -> None:
        self._send = send
        self._journal = journal
        self.delay = delay
        self.metrics = metrics or Metrics()
        self._due: dict[str, float] = {}  # queued key -> trio time it may go, in the order queued
        self._hold: dict[str, str] = {}  # marker key -> the prefix that must be clear before it goes
        self._sending: dict[str, trio.Event] = {}  # key in a batch in flight -> set when it ends
        self._again: set[str] = set()  # keys queued again while a batch with them was in flight
        self._watchers: list[set[str]] = []  # per LIST in progress: keys confirmed since it started
        self._errors: dict[str, BaseException] = {}  # why the last batch of a queued key failed
        self._failures = 0  # batches failed in a row: the backoff
        self._wakeup = trio.Event()
        self._planned = -math.inf  # when the sender looks at the queue next (-inf: it is looking now)
        self._progress = trio.Event()

    def __contains__(self, key: str) -> bool:
        return key in self._due or key in self._sending

    def __len__(self) -> int:
        return len(self._due) + len(self._sending.keys() - self._due.keys())

    @contextlib.contextmanager
    def listing(self) -> Iterator[Callable[[str], bool]]:
        """What to hide from the answer of a LIST that starts now: the keys owed, and those whose
        delete the store confirms while the LIST runs (its page may predate the delete)."""
        confirmed: set[str] = set()
        self._watchers.append(confirmed)
        try:
            yield lambda key: key in self or key in confirmed
        finally:
            self._watchers.remove(confirmed)

    def under(self, prefix: str) -> list[str]:
        """Owed keys at or below ``prefix`` (a scan: for fsyncdir and renames of directories)."""
        return [k for k in [*self._due, *self._sending] if k.startswith(prefix)]

    # -- producers ---------------------------------------------------------------------------
    def add(self, keys: list[str], *, hold: str | None = None, replacing: str | None = None) -> None:
        """Owe the store the deletes of ``keys``. The journal row is committed first; a full
        cache disk raises OSError and nothing is queued (the caller deletes at once instead).
        ``replacing``: the data file whose dirty row goes in the same transaction (the file was
        unlinked), so a crash never finds both. ``hold``: the keys mark that directory."""
        self._journal.note_deletes(keys, hold, replacing)
        self.restore([(key, hold) for key in keys], delay=self.delay)

    def restore(self, rows: Iterable[tuple[str, str | None]], *, delay: float = 0.0) -> None:
        """Queue keys already in the journal (a remount replays them at once)."""
        due = trio.current_time() + delay
        for key, hold in rows:
            self._due.setdefault(key, due)
            if hold is not None:
                self._hold[key] = hold
            if key in self._sending:
                self._again.add(key)
        if due < self._planned:  # not on every unlink: the sender's look at the queue is O(queue)
            self._wakeup.set()

    async def settle(self, keys: Iterable[str]) -> None:
        """Send the owed deletes of ``keys`` now and wait for them; raises if one fails (it stays
        queued). Called before this mount writes one of these keys again."""
        left = {k for k in keys if k in self}
        while left:
            running = [self._sending[k] for k in left if k in self._sending]
            if running:
                await running[0].wait()
            else:
                await self._send_batch(sorted(left))
            left = {k for k in left if k in self}

    async def flush(self, keys: Iterable[str]) -> None:
        """Send the owed deletes of ``keys`` now, in order (markers after what is below them),
        and wait for them; raises the error of a batch that failed (fsyncdir)."""
        left = {k for k in keys if k in self}
        now = trio.current_time()
        for key in left:
            self._errors.pop(key, None)
            if key in self._due:
                self._due[key] = min(self._due[key], now)
        self._wakeup.set()
        while left:
            await self._progress.wait()
            for key in left:
                if key in self._errors:
                    raise self._errors[key]
            left = {k for k in left if k in self}

    async def drain(self, deadline: float) -> list[str]:
        """Send everything now; the keys still owed when ``deadline`` seconds have passed."""
        now = trio.current_time()
        for key in self._due:
            self._due[key] = now
        self._wakeup.set()
        with trio.move_on_after(deadline):
            while self._due or self._sending:
                await self._progress.wait()
        return sorted(self._due.keys() | self._sending.keys())

    # -- the sender --------------------------------------------------------------------------
    def _next_batch(self) -> list[str]:
        """Once the oldest sendable key is due, every sendable key queued (up to BATCH): a burst
        of unlinks goes in as few requests as possible. A marker waits while keys are below it."""
        busy = _busy_prefixes([*self._due, *self._sending])
        now = trio.current_time()
        sendable = [k for k in self._due if self._hold.get(k) not in busy]
        if not sendable or min(self._due[k] for k in sendable) > now:
            return []
        return sendable[:BATCH]

    def _next_start(self) -> float:
        busy = _busy_prefixes([*self._due, *self._sending])
        return min((t for k, t in self._due.items() if self._hold.get(k) not in busy), default=math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        senders = trio.Semaphore(SENDERS)  # a token passes from this loop to the batch's task
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await senders.acquire()  # before taking keys, so a batch waiting its turn grows
                batch = self._next_batch()
                if not batch:
                    senders.release()
                    self._planned = self._next_start()
                    with trio.move_on_at(self._planned):
                        await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    self._planned = -math.inf  # looking now: wake-ups may be needed again
                    continue
                self._take(batch)
                nursery.start_soon(self._send_in_background, batch, senders)

    def _take(self, batch: list[str]) -> None:
        for key in batch:
            del self._due[key]
            self._sending[key] = trio.Event()

    async def _send_in_background(self, batch: list[str], senders: trio.Semaphore) -> None:
        try:
            await self._send_taken(batch)
        except (ObsfsError, OSError):
            pass  # logged, and queued again with a delay
        finally:
            senders.release()

    async def _send_batch(self, batch: list[str]) -> None:
        self._take([k for k in batch if k in self._due])
        await self._send_taken(batch)

    async def _send_taken(self, batch: list[str]) -> None:
        try:
            await self._send(batch)
        except (ObsfsError, OSError) as exc:
            self._failures += 1
            retry = min(MAX_RETRY_DELAY, 2.0 * 2 ** (self._failures - 1))
            log.warning("delete of %d key(s) (%s ...) failed, next try in %.0f s: %s", len(batch), batch[0],
                        retry, exc)
            self.metrics.deletes_sent.labels("failed").inc(len(batch))
            due = trio.current_time() + retry
            for key in batch:
                self._due.setdefault(key, due)
                self._errors[key] = exc
            raise
        else:
            self._failures = 0
            self.metrics.deletes_sent.labels("ok").inc(len(batch))
            for confirmed in self._watchers:
                confirmed.update(batch)
            done = [k for k in batch if k not in self._again]
            for key in done:
                self._hold.pop(key, None)
                self._errors.pop(key, None)
            self._journal.forget_deletes(done)
        finally:
            for key in batch:
                self._again.discard(key)
                self._sending.pop(key).set()
            self._progress.set()
            self._progress = trio.Event()
            self._wakeup.set()
