"""The one retry policy: jittered exponential backoff for temporary failures, up to a deadline.

Only ``TemporaryFailure`` is retried. The classifier that decides what is temporary lives in
``obs.py`` next to the SDK it interprets; here we only schedule the attempts. Two small drivers
share the policy: a blocking one (CSI controller threads) and a trio one (the filesystem), so a
retry sleep in the filesystem is a cancellable ``trio.sleep``, never a blocked thread.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import trio

from obsfs.errors import TemporaryFailure

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff schedule: ``base * 2**n`` capped at ``cap``, each delay scaled by a random 0.5-1.0."""

    base: float = 0.1
    cap: float = 5.0

    def delays(self) -> Iterator[float]:
        n = 0
        while True:
            yield min(self.cap, self.base * (2**n)) * random.uniform(0.5, 1.0)
            n += 1


DEFAULT_POLICY = RetryPolicy()


def _give_up(exc: TemporaryFailure, what: str, attempts: int, deadline: float, *,
             cut: bool = False) -> TemporaryFailure:
    """``exc`` with how long we tried; ``cut``: it is an earlier attempt's, and the deadline ended
    the last attempt, which had no answer yet."""
    cut_note = "; the last one had no answer yet" if cut else ""
    exc.args = (f"{exc.args[0] if exc.args else what} (gave up after {attempts} attempts "
                f"in {deadline:.0f} s{cut_note})",)
    return exc


def call_with_retry(fn: Callable[[], T], what: str, deadline: float,
                    policy: RetryPolicy = DEFAULT_POLICY) -> T:
    """Run blocking ``fn`` until it succeeds, fails for good, or ``deadline`` seconds have passed."""
    end = time.monotonic() + deadline
    delays = policy.delays()  # drawn only on a failure: most calls succeed at once
    for attempts in itertools.count(1):
        try:
            return fn()
        except TemporaryFailure as exc:
            delay = next(delays)
            if time.monotonic() + delay >= end:
                raise _give_up(exc, what, attempts, deadline) from None
            log.info("retrying %s in %.2f s: %s", what, delay, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")


async def acall_with_retry(fn: Callable[[], Awaitable[T]], what: str, deadline: float,
                           policy: RetryPolicy = DEFAULT_POLICY, *, until: float | None = None) -> T:
    """Trio version of ``call_with_retry``; the deadline is also enforced on each attempt.

    ``until`` (a trio time) replaces ``deadline`` seconds from now, so that several calls can
    share one deadline. When it has already passed, ``fn`` is not called at all.
    """
    start = trio.current_time()
    end = start + deadline if until is None else until
    budget = max(0.0, end - start)
    if end <= start:
        raise _give_up(TemporaryFailure(f"{what}: no time left"), what, 0, budget)
    delays = policy.delays()
    failed: TemporaryFailure | None = None
    for attempts in itertools.count(1):
        try:
            with trio.fail_at(end):
                return await fn()
        except trio.TooSlowError:
            # The store's last answer (a 503, say) tells a user more than the attempt cut short.
            if failed is not None:
                raise _give_up(failed, what, attempts, budget, cut=True) from None
            raise _give_up(TemporaryFailure(f"{what}: no answer"), what, attempts, budget) from None
        except TemporaryFailure as exc:
            failed = exc
            delay = next(delays)
            if trio.current_time() + delay >= end:
                raise _give_up(exc, what, attempts, budget) from None
            log.info("retrying %s in %.2f s: %s", what, delay, exc)
            await trio.sleep(delay)
    raise AssertionError("unreachable")
