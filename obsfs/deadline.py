"""The arithmetic behind "a deadline, then EIO": pure, with the time passed in, so it is tested
without a store, a mount or a clock.

Two pieces of state:

- ``Reachability`` (one per store): whether the store is in an outage, i.e. calls have failed
  for want of an answer (refused, timed out, 5xx) and none has been answered since. During an
  outage a lookup of a name nobody knows answers at once instead of waiting a deadline of its own.
- ``Stall`` (one per open file): when a READ of this handle last gave up. The kernel sends
  several READs for one read() syscall, one after the other: readahead, then a retry of the page
  whose READ failed. Only the first may wait a deadline; the retry fails at once, so the syscall
  fails after one deadline, not one per READ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Reachability:
    """Outage bookkeeping of one store. Times are trio times."""

    down_since: float | None = None  # first failure without an answer since the last answer
    answered_at: float = float("-inf")  # the last time any call got an answer (even 404 or 412)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def answered(self, now: float) -> None:
        self.down_since = None
        self.answered_at = max(self.answered_at, now)

    def unanswered(self, now: float) -> None:
        if self.down_since is None:
            self.down_since = now


@dataclass
class Stall:
    """One open file's failed wait on an unreachable store (see the module docstring).

    Each READ waits at most one deadline from its own start. After one has failed, the next READs
    of the handle fail at once: they are the kernel's retry of the page whose READ just failed,
    or the reader's next read() right after its EIO. That lasts until the store answers anything,
    or one more deadline has passed; a READ then waits a full deadline again, so an outage that
    has ended is noticed.
    """

    failed_at: float | None = None  # when a READ of this handle last gave up on the store

    def deadline(self, now: float, budget: float, store: Reachability) -> float:
        """The trio time by which a READ starting ``now`` must have its data (``now``: no wait)."""
        if self.failed_at is not None and (store.answered_at > self.failed_at
                                           or now >= self.failed_at + budget):
            self.failed_at = None
        return now if self.failed_at is not None else now + budget

    def failed(self, now: float) -> None:
        self.failed_at = now
