"""The delete queue on its own: a real journal, a sender that records batches, trio's MockClock."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from obsfs.deletes import DeleteQueue
from obsfs.errors import TemporaryFailure
from obsfs.journal import DirtyRecord, Journal
from obsfs.meta import Attrs


class Store:
    """Records each batch; fails the next ``fail`` of them."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail = 0

    async def delete_many(self, keys: list[str]) -> None:
        await trio.sleep(0.01)
        if self.fail:
            self.fail -= 1
            raise TemporaryFailure("store down")
        self.batches.append(list(keys))


def run_with_queue(tmp_path: Path, body: object) -> tuple[Store, Journal]:
    store = Store()
    journal = Journal(tmp_path / "journal.db")

    async def main() -> None:
        queue = DeleteQueue(store.delete_many, journal, delay=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run)
            await body(queue)  # type: ignore[operator]
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return store, journal


def test_a_burst_goes_in_batches_of_1000_after_the_delay(tmp_path: Path) -> None:
    async def body(queue: DeleteQueue) -> None:
        for n in range(2500):
            queue.add([f"d/f{n:05d}"])
        assert "d/f00000" in queue
        await queue.drain(60)
        assert len(queue) == 0

    store, journal = run_with_queue(tmp_path, body)
    assert sorted(len(b) for b in store.batches) == [500, 1000, 1000]
    assert journal.owed_deletes() == []


def test_a_marker_waits_for_the_keys_below_it(tmp_path: Path) -> None:
    async def body(queue: DeleteQueue) -> None:
        queue.add(["top/a/f1", "top/a/f2"])
        queue.add(["top/a/"], hold="top/a/")
        queue.add(["top/", "top_$folder$"], hold="top/")
        await queue.flush(["top/", "top_$folder$", "top/a/", "top/a/f1", "top/a/f2"])

    store, _ = run_with_queue(tmp_path, body)
    assert store.batches == [["top/a/f1", "top/a/f2"], ["top/a/"], ["top/", "top_$folder$"]]


def test_a_failed_batch_stays_journaled_and_is_sent_again(tmp_path: Path) -> None:
    async def body(queue: DeleteQueue) -> None:
        queue.store.fail = 1  # type: ignore[attr-defined]
        queue.add(["a", "b"])
        with pytest.raises(TemporaryFailure):
            await queue.flush(["a"])
        assert "a" in queue
        await queue.drain(120)

    store = Store()
    journal = Journal(tmp_path / "journal.db")

    async def main() -> None:
        queue = DeleteQueue(store.delete_many, journal, delay=0.5)
        queue.store = store  # type: ignore[attr-defined]
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run)
            await body(queue)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert store.batches == [["a", "b"]]
    assert journal.owed_deletes() == []


def test_settle_sends_at_once(tmp_path: Path) -> None:
    async def body(queue: DeleteQueue) -> None:
        queue.add(["k", "other"])
        start = trio.current_time()
        await queue.settle(["k"])
        assert trio.current_time() - start < 0.5 and "k" not in queue and "other" in queue

    store, journal = run_with_queue(tmp_path, body)
    assert store.batches == [["k"]]
    assert journal.owed_deletes() == [("other", None)]


def test_a_key_removed_again_while_its_batch_is_in_flight_keeps_its_row(tmp_path: Path) -> None:
    async def body(queue: DeleteQueue) -> None:
        queue.add(["k"])
        await trio.sleep(0.505)  # the batch with "k" is in flight
        queue.add(["k"])
        await trio.sleep(0.01)  # and done
        assert "k" in queue
        assert queue._journal.owed_deletes() == [("k", None)]  # type: ignore[attr-defined]

    store, _ = run_with_queue(tmp_path, body)
    assert store.batches == [["k"]]


def test_a_delete_and_the_unlinked_files_row_go_in_one_transaction(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    attrs = Attrs(mode=0o100644, uid=0, gid=0, size=0, atime_ns=1, mtime_ns=1, ctime_ns=1)
    journal.record(DirtyRecord(data_file="x", key="a", base_etag="e", attrs=attrs, content_type="text/plain"))
    journal.note_deletes(["a"], None, "x")
    assert journal.all() == []
    assert journal.owed_deletes() == [("a", None)]
    journal.close()
    again = Journal(tmp_path / "journal.db")
    assert again.owed_deletes() == [("a", None)]
