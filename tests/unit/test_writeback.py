"""The write-back scheduler on its own, with a fake upload and trio's MockClock (no real waiting)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
import trio
import trio.testing

from obsfs.errors import TemporaryFailure
from obsfs.inodes import Node
from obsfs.writeback import WriteBack


class FakeStaged:
    def __init__(self, size: int = 10) -> None:
        self.version = 1
        self.synced_version = 0
        self._size = size

    @property
    def dirty(self) -> bool:
        return self.version != self.synced_version

    def size(self) -> int:
        return self._size


class FakeNode:
    def __init__(self, name: str, size: int = 10) -> None:
        self.path: str | None = name
        self.staged: FakeStaged | None = FakeStaged(size)


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def as_node(fake: FakeNode) -> Node:
    return cast(Node, fake)


def test_rescheduled_while_uploading_is_uploaded_again() -> None:
    """A write during an upload schedules the file again; the drain must see that upload too."""
    node = FakeNode("f")
    uploads: list[int] = []
    gate = trio.Event()

    async def upload(n: Any) -> None:
        version = n.staged.version
        uploads.append(version)
        if len(uploads) == 1:
            await gate.wait()
        n.staged.synced_version = version

    async def main() -> None:
        wb = WriteBack(upload, workers=2, delay=0.5, max_dirty=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            wb.schedule(as_node(node), delay=0)
            await trio.sleep(0.1)
            assert uploads == [1]
            assert node.staged is not None
            node.staged.version = 2
            wb.schedule(as_node(node))
            gate.set()
            assert await wb.drain(30) == []
            nursery.cancel_scope.cancel()
        assert uploads == [1, 2]

    run(main)


def test_scheduled_again_while_uploading_does_not_stall() -> None:
    """close() or unmount may schedule a file whose upload is in flight without a new write; once
    that upload ends, the queued entry must still be dispatched, or a drain waits for ever."""
    node = FakeNode("f")
    gate = trio.Event()
    uploads = 0

    async def upload(n: Any) -> None:
        nonlocal uploads
        uploads += 1
        await gate.wait()
        n.staged.synced_version = n.staged.version

    async def main() -> None:
        wb = WriteBack(upload, workers=2, delay=0.5, max_dirty=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            wb.schedule(as_node(node), delay=0)
            await trio.sleep(0.1)
            wb.schedule(as_node(node), delay=0)  # same version, while active
            await trio.sleep(0.1)
            gate.set()
            assert await wb.drain(30) == []
            nursery.cancel_scope.cancel()
        assert uploads == 2  # the second one finds the file clean and returns at once in obsfs/fs/uploads.py

    run(main)


def test_delay_coalesces_repeated_schedules() -> None:
    node = FakeNode("f")
    uploads: list[float] = []

    async def upload(n: Any) -> None:
        uploads.append(trio.current_time())
        n.staged.synced_version = n.staged.version

    async def main() -> None:
        wb = WriteBack(upload, workers=4, delay=1.0, max_dirty=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            start = trio.current_time()
            for _ in range(5):
                wb.schedule(as_node(node))
                await trio.sleep(0.1)
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
        assert len(uploads) == 1 and uploads[0] - start == pytest.approx(1.0)

    run(main)


def test_failed_upload_is_retried_and_fsync_sees_the_error() -> None:
    node = FakeNode("f")
    attempts = 0

    async def upload(n: Any) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise TemporaryFailure("PUT f: connection refused")
        n.staged.synced_version = n.staged.version

    async def main() -> None:
        wb = WriteBack(upload, workers=1, delay=0, max_dirty=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            with pytest.raises(TemporaryFailure):
                await wb.wait_uploaded(as_node(node))
            assert await wb.drain(600) == []  # retried with backoff until it worked
            nursery.cancel_scope.cancel()
        assert attempts == 3

    run(main)


def test_writers_wait_while_too_much_is_dirty() -> None:
    big = [FakeNode(f"f{i}", size=100) for i in range(3)]
    release = trio.Event()
    waited_until: list[float] = []

    async def upload(n: Any) -> None:
        await release.wait()
        n.staged.synced_version = n.staged.version

    async def main() -> None:
        wb = WriteBack(upload, workers=3, delay=0, max_dirty=150)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            for node in big:
                wb.schedule(as_node(node))

            async def writer() -> None:
                await wb.wait_for_room()
                waited_until.append(trio.current_time())

            nursery.start_soon(writer)
            await trio.sleep(5)
            assert waited_until == []  # 300 bytes queued > 150: the writer waits
            release.set()
            await trio.sleep(1)
            assert len(waited_until) == 1
            nursery.cancel_scope.cancel()

    run(main)


def test_cancelled_file_is_not_uploaded() -> None:
    node = FakeNode("gone")
    uploads: list[str] = []

    async def upload(n: Any) -> None:
        uploads.append(n.path)

    async def main() -> None:
        wb = WriteBack(upload, workers=1, delay=1.0, max_dirty=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            wb.schedule(as_node(node))
            wb.cancel(as_node(node))
            assert await wb.drain(5) == []
            nursery.cancel_scope.cancel()
        assert uploads == []

    run(main)


def test_dispatch_order_is_by_start_time_and_skips_running_uploads() -> None:
    """The dispatcher's heap: the earliest start goes first, whatever the order of the schedule
    calls, and a node scheduled again while its upload runs waits for that upload, while nodes
    due after it go ahead on the free worker."""
    nodes = {name: FakeNode(name) for name in "abc"}
    order: list[str] = []
    gate = trio.Event()

    async def upload(n: Any) -> None:
        order.append(n.path)
        if len(order) == 1:
            await gate.wait()
        n.staged.synced_version = n.staged.version

    async def main() -> None:
        wb = WriteBack(upload, workers=2, delay=0.5, max_dirty=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            wb.schedule(as_node(nodes["a"]), delay=0)
            await trio.sleep(0.1)
            wb.schedule(as_node(nodes["b"]), delay=0.3)
            wb.schedule(as_node(nodes["c"]), delay=0.2)
            wb.schedule(as_node(nodes["c"]), delay=0.4)  # later than it is already due: no change
            wb.schedule(as_node(nodes["a"]), delay=0)  # while its upload runs
            await trio.sleep(1)
            assert order == ["a", "c", "b"]
            gate.set()
            assert await wb.drain(30) == []
            nursery.cancel_scope.cancel()
        assert order == ["a", "c", "b", "a"]

    run(main)


class TaskSteps(trio.abc.Instrument):
    """Counts the scheduling steps of the tasks whose name contains ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.name in task.name:
            self.steps += 1


def test_the_dispatcher_sleeps_through_schedules_and_uploads_that_change_nothing() -> None:
    """``cp -r`` of small files: every close schedules an upload ``delay`` later than the ones
    before it, and every upload ends while the next waits. Neither moves the dispatcher's next
    start, so neither may wake it: it used to run a step for each (a third of its CPU per file).
    It runs for the starts that come due and for its hand-overs to the workers."""
    count = 40
    steps = TaskSteps("WriteBack.run")
    done: list[str] = []

    async def upload(n: Any) -> None:
        await trio.sleep(0.01)
        n.staged.synced_version = n.staged.version
        done.append(n.path)

    async def main() -> None:
        wb = WriteBack(upload, workers=4, delay=0.5, max_dirty=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.run)
            trio.lowlevel.add_instrument(steps)
            for i in range(count):
                wb.schedule(as_node(FakeNode(f"f{i}")))
                await trio.sleep(0.05)
            assert await wb.drain(30) == []
            trio.lowlevel.remove_instrument(steps)
            nursery.cancel_scope.cancel()

    run(main)
    assert len(done) == count
    assert steps.steps <= 2 * count + 2, steps.steps
