"""The retry policy and its two drivers. The trio driver runs on a MockClock: no real sleeping."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import trio
import trio.testing

from obsfs.backend import retry
from obsfs.backend.retry import RetryPolicy, acall_with_retry, call_with_retry
from obsfs.errors import AccessDenied, NotFound, TemporaryFailure

T = TypeVar("T")


def run_mock(fn: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    """Run ``fn`` under trio with a MockClock that jumps over every sleep; return its result and the
    virtual time it took."""
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> tuple[T, float]:
        start = trio.current_time()
        value = await fn()
        return value, trio.current_time() - start

    return trio.run(main, clock=clock)


class Flaky:
    """Fails with ``errors`` in turn, then returns "ok"; records the virtual time of each call."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(trio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_delays_are_jittered_exponential_and_capped() -> None:
    random.seed(1)
    policy = RetryPolicy(base=0.1, cap=1.0)
    for _ in range(50):
        gen = policy.delays()
        for n in range(8):
            delay = next(gen)
            limit = min(1.0, 0.1 * 2**n)
            assert limit * 0.5 <= delay <= limit
    assert len({next(policy.delays()) for _ in range(20)}) > 1  # there is jitter


def test_trio_retries_temporary_failures_then_succeeds() -> None:
    fn = Flaky(TemporaryFailure("503"), TemporaryFailure("503"))
    policy = RetryPolicy(base=1.0, cap=10.0)
    value, elapsed = run_mock(lambda: acall_with_retry(fn, "HEAD k", deadline=60, policy=policy))
    assert value == "ok"
    assert len(fn.times) == 3
    gaps = [b - a for a, b in zip(fn.times, fn.times[1:], strict=False)]
    assert 0.5 <= gaps[0] <= 1.0
    assert 1.0 <= gaps[1] <= 2.0
    assert elapsed == pytest.approx(sum(gaps))


@pytest.mark.parametrize("error", [NotFound("missing"), AccessDenied("no"), ValueError("bug")])
def test_trio_does_not_retry_other_errors(error: Exception) -> None:
    fn = Flaky(error)

    async def attempt() -> BaseException:
        with pytest.raises(type(error)) as err:
            await acall_with_retry(fn, "HEAD k", deadline=60)
        return err.value

    raised, elapsed = run_mock(attempt)
    assert raised is error
    assert len(fn.times) == 1
    assert elapsed == 0  # raised at once, no backoff


def test_trio_gives_up_at_the_deadline() -> None:
    calls: list[float] = []

    async def always() -> None:
        calls.append(trio.current_time())
        raise TemporaryFailure("HEAD k: HTTP 503 SlowDown", status=503, code="SlowDown", key="k")

    async def attempt() -> tuple[TemporaryFailure, float]:
        start = trio.current_time()
        with pytest.raises(TemporaryFailure) as err:
            await acall_with_retry(always, "HEAD k", deadline=20, policy=RetryPolicy(base=0.5, cap=4.0))
        return err.value, trio.current_time() - start

    (exc, elapsed), _ = run_mock(attempt)
    assert elapsed < 20
    assert elapsed > 20 - 4.0  # it kept trying until the next delay would pass the deadline
    assert f"gave up after {len(calls)} attempts in 20 s" in str(exc)
    assert str(exc).startswith("HEAD k: HTTP 503 SlowDown")
    assert (exc.status, exc.code, exc.key) == (503, "SlowDown", "k")
    assert len(calls) > 3


def test_trio_deadline_also_bounds_a_hanging_attempt() -> None:
    calls: list[float] = []

    async def hang() -> None:
        calls.append(trio.current_time())
        await trio.sleep_forever()

    async def attempt() -> tuple[TemporaryFailure, float]:
        start = trio.current_time()
        with pytest.raises(TemporaryFailure) as err:
            await acall_with_retry(hang, "GET k", deadline=7)
        return err.value, trio.current_time() - start

    (exc, elapsed), _ = run_mock(attempt)
    assert elapsed == pytest.approx(7)
    assert len(calls) == 1
    assert "GET k: no answer" in str(exc)
    assert "gave up after 1 attempts in 7 s" in str(exc)


def test_trio_slow_attempt_after_failures_is_cut_at_the_deadline() -> None:
    async def slow_then_fail() -> None:
        await trio.sleep(3)
        raise TemporaryFailure("timeout")

    async def attempt() -> float:
        start = trio.current_time()
        with pytest.raises(TemporaryFailure) as err:
            await acall_with_retry(slow_then_fail, "GET k", deadline=10, policy=RetryPolicy(base=0.1, cap=0.1))
        # Attempts start at 0, about 3.1, 6.2 and 9.3 s: the fourth is cut; the third's error is told.
        assert str(err.value) == "timeout (gave up after 4 attempts in 10 s; the last one had no answer yet)"
        return trio.current_time() - start

    elapsed, _ = run_mock(attempt)
    assert elapsed <= 10 + 1e-9


def test_trio_cancellation_is_not_swallowed() -> None:
    calls: list[float] = []

    async def always() -> None:
        calls.append(trio.current_time())
        raise TemporaryFailure("503")

    async def attempt() -> bool:
        with trio.move_on_after(5) as scope:
            await acall_with_retry(always, "HEAD k", deadline=60, policy=RetryPolicy(base=1.0, cap=1.0))
        return scope.cancelled_caught

    cancelled, elapsed = run_mock(attempt)
    assert cancelled
    assert elapsed == pytest.approx(5)
    assert 5 <= len(calls) <= 11


class FakeTime:
    """Stands in for the ``time`` module inside retry.py: sleeping advances a counter."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(retry, "time", fake)
    return fake


def test_sync_retries_then_succeeds(fake_time: FakeTime) -> None:
    errors = [TemporaryFailure("a"), TemporaryFailure("b")]
    calls = 0

    def fn() -> str:
        nonlocal calls
        calls += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    assert call_with_retry(fn, "PUT k", deadline=30, policy=RetryPolicy(base=1.0, cap=10.0)) == "ok"
    assert calls == 3
    assert len(fake_time.sleeps) == 2
    assert 0.5 <= fake_time.sleeps[0] <= 1.0
    assert 1.0 <= fake_time.sleeps[1] <= 2.0


def test_sync_gives_up_after_the_deadline(fake_time: FakeTime) -> None:
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        raise TemporaryFailure("PUT k: connection refused")

    with pytest.raises(TemporaryFailure) as err:
        call_with_retry(fn, "PUT k", deadline=30, policy=RetryPolicy(base=1.0, cap=4.0))
    assert f"gave up after {calls} attempts in 30 s" in str(err.value)
    assert calls == len(fake_time.sleeps) + 1
    assert sum(fake_time.sleeps) < 30
    assert sum(fake_time.sleeps) > 30 - 4.0


def test_sync_does_not_retry_other_errors(fake_time: FakeTime) -> None:
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        raise NotFound("k")

    with pytest.raises(NotFound):
        call_with_retry(fn, "HEAD k", deadline=30)
    assert calls == 1
    assert fake_time.sleeps == []


def test_trio_until_replaces_the_deadline() -> None:
    """Calls that share one deadline pass it as a time; the retries stop there."""
    calls: list[float] = []

    async def always() -> None:
        calls.append(trio.current_time())
        raise TemporaryFailure("GET k: connection refused")

    async def attempt() -> tuple[TemporaryFailure, float]:
        start = trio.current_time()
        with pytest.raises(TemporaryFailure) as err:
            await acall_with_retry(always, "GET k", deadline=60, until=start + 3,
                                   policy=RetryPolicy(base=0.5, cap=1.0))
        return err.value, trio.current_time() - start

    (exc, elapsed), _ = run_mock(attempt)
    assert 3 - 1.0 < elapsed < 3
    assert f"gave up after {len(calls)} attempts in 3 s" in str(exc)


def test_trio_until_already_passed_makes_no_call() -> None:
    fn = Flaky()

    async def attempt() -> TemporaryFailure:
        with pytest.raises(TemporaryFailure) as err:
            await acall_with_retry(fn, "GET k", deadline=60, until=trio.current_time())
        return err.value

    exc, elapsed = run_mock(attempt)
    assert fn.times == [] and elapsed == 0
    assert str(exc) == "GET k: no time left (gave up after 0 attempts in 0 s)"
