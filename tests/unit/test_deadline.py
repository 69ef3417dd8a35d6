"""The deadline arithmetic on its own: times are plain numbers, nothing waits."""

from __future__ import annotations

from obsfs.deadline import Reachability, Stall


def test_an_outage_lasts_from_the_first_unanswered_call_to_the_next_answer() -> None:
    store = Reachability()
    assert not store.down
    store.unanswered(10.0)
    store.unanswered(12.0)
    assert store.down and store.down_since == 10.0  # the first failure dates it
    store.answered(13.0)
    assert not store.down and store.answered_at == 13.0
    store.answered(11.0)  # a slower call answered later: the latest answer stays
    assert store.answered_at == 13.0


def test_a_read_waits_one_deadline_from_its_start() -> None:
    assert Stall().deadline(100.0, 4.0, Reachability()) == 104.0


def test_after_a_failed_read_the_next_reads_fail_at_once() -> None:
    """The kernel's retry of the failed page, and the reader's next read(), add no deadline."""
    store = Reachability()
    stall = Stall()
    stall.failed(104.0)
    assert stall.deadline(104.01, 4.0, store) == 104.01
    assert stall.deadline(107.9, 4.0, store) == 107.9


def test_a_failed_handle_waits_again_once_a_deadline_has_passed() -> None:
    stall = Stall()
    stall.failed(104.0)
    assert stall.deadline(108.0, 4.0, Reachability()) == 112.0
    assert stall.failed_at is None


def test_a_failed_handle_waits_again_as_soon_as_the_store_answers() -> None:
    store = Reachability()
    stall = Stall()
    store.answered(103.0)  # before the failure: no news
    stall.failed(104.0)
    assert stall.deadline(105.0, 4.0, store) == 105.0
    store.answered(105.5)
    assert stall.deadline(106.0, 4.0, store) == 110.0
