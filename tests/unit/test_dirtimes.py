"""Pending directory-time writes: one per directory at a time, and marker writes in turn."""

from __future__ import annotations

import trio
import trio.testing

from obsfs.dirtimes import DirTimes
from obsfs.meta import Attrs

ATTRS = Attrs(mode=0o40755, uid=0, gid=0, size=0, atime_ns=1, mtime_ns=2, ctime_ns=3)


def test_many_changes_ask_for_one_write_until_it_is_taken() -> None:
    times = DirTimes()
    assert times.touch("d")
    assert not any(times.touch("d") for _ in range(999)), "one write covers every change until it runs"
    assert times.touch("e")
    assert times.owed_under("") == ["d", "e"]
    assert times.take("d")
    assert not times.take("d"), "taken once: a second writer finds nothing to do"
    assert times.touch("d"), "a change after the write was taken needs a write of its own"


def test_owed_under_a_directory() -> None:
    times = DirTimes()
    for path in ("a", "a/b", "a/b/c", "ab", "x"):
        times.touch(path)
    assert times.owed_under("a") == ["a", "a/b", "a/b/c"]
    assert times.owed_under("") == ["a", "a/b", "a/b/c", "ab", "x"]


def test_owed_under_counts_a_write_in_flight() -> None:
    """A write taken and still running is owed too: a rename of a directory above must wait for
    it, or its PUT would land under the old name after the rename moved everything away."""
    times = DirTimes()
    seen: list[list[str]] = []

    async def main() -> None:
        times.touch("a/b")
        assert times.take("a/b")
        async with times.writing("a/b"):
            seen.append(times.owed_under("a"))
        seen.append(times.owed_under("a"))

    trio.run(main)
    assert seen == [["a/b"], []]


def test_forget_implicit_drops_the_tree_only() -> None:
    times = DirTimes()
    for path in ("a", "a/b", "ab"):
        times.implicit[path] = ATTRS
    times.forget_implicit("a")
    assert list(times.implicit) == ["ab"]


def test_writers_of_one_directory_take_turns_and_leave_no_lock_behind() -> None:
    times = DirTimes()
    log: list[str] = []

    async def writer(name: str, path: str) -> None:
        async with times.writing(path):
            log.append(f"{name} starts")
            await trio.sleep(0.01)
            log.append(f"{name} ends")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, "lazy", "d")
            await trio.sleep(0)
            nursery.start_soon(writer, "utimens", "d")
            nursery.start_soon(writer, "other", "e")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    d = [entry for entry in log if not entry.startswith("other")]
    assert d == ["lazy starts", "lazy ends", "utimens starts", "utimens ends"]
    assert log.index("other starts") < log.index("lazy ends"), "another directory does not wait"
    assert not times._locks
