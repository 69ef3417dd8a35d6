"""The on-disk inode numbers: one path keeps one number, across reopening, renames of whole
subtrees, and the death of the process once committed; a number is never given twice."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from obsfs.inodemap import ROOT_INO, InodeMap

FILE, DIR = stat.S_IFREG, stat.S_IFDIR


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "inodes.db"


def test_root_is_one_and_numbers_are_stable_across_reopen(db: Path) -> None:
    first = InodeMap(db)
    assert first.number("", DIR) == ROOT_INO
    numbers = {path: first.number(path, kind) for path, kind in (("d", DIR), ("d/f", FILE), ("g", FILE))}
    assert len(set(numbers.values()) | {ROOT_INO}) == 4
    assert {path: first.number(path, FILE if path != "d" else DIR) for path in numbers} == numbers
    first.close()
    again = InodeMap(db)
    assert again.number("", DIR) == ROOT_INO
    assert {path: again.number(path, FILE if path != "d" else DIR) for path in numbers} == numbers


def test_a_commit_survives_the_process_without_close(db: Path) -> None:
    """kill -9 model: a second connection (the next daemon) sees what the first committed."""
    daemon = InodeMap(db)
    handed_out = {f"f{i}": daemon.number(f"f{i}", FILE) for i in range(10)}
    daemon.commit()
    successor = InodeMap(db)
    assert {path: successor.number(path, FILE) for path in handed_out} == handed_out
    assert successor.number("new", FILE) > max(handed_out.values()), "the counter was committed too"


def test_numbers_are_never_reused_even_after_the_highest_is_dropped(db: Path) -> None:
    table = InodeMap(db)
    a = table.number("a", FILE)
    b = table.number("b", FILE)
    table.drop("b")
    table.close()
    table = InodeMap(db)
    c = table.number("c", FILE)
    assert c > b > a
    assert table.number("b", FILE) > c, "a file created again at a dropped name is a new file"


def test_drop_removes_the_subtree_and_nothing_beside_it(db: Path) -> None:
    table = InodeMap(db)
    paths = ["a", "a/x", "a/x/y", "a/ü", "a.b", "a-b", "a0", "ab", "ab/z"]
    before = {p: table.number(p, FILE) for p in paths}
    table.drop("a")
    for path in ("a.b", "a-b", "a0", "ab", "ab/z"):
        assert table.number(path, FILE) == before[path]
    for path in ("a", "a/x", "a/x/y", "a/ü"):
        assert table.number(path, FILE) > max(before.values())


def test_move_carries_the_subtree_numbers_and_replaces_the_target(db: Path) -> None:
    table = InodeMap(db)
    moving = {p: table.number(p, DIR if p in ("a", "a/x") else FILE) for p in ("a", "a/x", "a/x/y", "a/f")}
    beside = {p: table.number(p, FILE) for p in ("ab", "ab/z", "a.b")}
    replaced = table.number("c/d", DIR)
    replaced_child = table.number("c/d/old", FILE)
    table.move("a", "c/d")
    table.close()
    table = InodeMap(db)
    for old, ino in moving.items():
        new = "c/d" + old[1:]
        assert table.number(new, DIR if old in ("a", "a/x") else FILE) == ino
    assert all(table.number(p, FILE) == ino for p, ino in beside.items())
    assert table.number("c/d/old", FILE) not in (replaced_child, replaced)
    assert table.number("a", DIR) not in moving.values(), "the old name is free"


def test_move_into_a_longer_sibling_name(db: Path) -> None:
    table = InodeMap(db)
    a = table.number("a", DIR)
    ax = table.number("a/x", FILE)
    table.move("a", "ab")
    assert (table.number("ab", DIR), table.number("ab/x", FILE)) == (a, ax)


def test_a_change_of_kind_is_a_new_number_and_clears_below(db: Path) -> None:
    table = InodeMap(db)
    as_dir = table.number("x", DIR)
    child = table.number("x/c", FILE)
    as_file = table.number("x", FILE)
    assert as_file != as_dir
    assert table.number("x", FILE) == as_file
    assert table.number("x/c", FILE) != child


def test_a_cache_disk_that_refuses_writes_costs_only_persistence(db: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    table = InodeMap(db)
    kept = table.number("kept", FILE)
    table.commit()
    table.db.execute("PRAGMA query_only = ON")  # every write now fails, as on a full disk
    with caplog.at_level(logging.WARNING, logger="obsfs.inodemap"):
        fresh = [table.number(f"n{i}", FILE) for i in range(3)]
        table.move("kept", "moved")
        table.commit()
    assert len(set(fresh) | {kept}) == 4, "still distinct numbers"
    assert sum("could not store inode numbers" in r.message for r in caplog.records) == 1
    table.db.execute("PRAGMA query_only = OFF")
    later = table.number("later", FILE)
    table.commit()
    assert later > max(fresh)
    assert InodeMap(db).number("kept", FILE) == kept
    assert InodeMap(db).number("later2", FILE) > later, "the counter was written again"


def test_a_batch_is_numbered_as_one_path_at_a_time_would_be(db: Path) -> None:
    """``numbers`` (a readdir batch in one SELECT and one INSERT): known paths keep their
    numbers, a path whose kind changed gets a new one, new paths get new ones, in order."""
    table = InodeMap(db)
    kept, replaced = table.number("a", FILE), table.number("b", DIR)
    table.number("b/inside", FILE)
    got = table.numbers([("a", FILE), ("b", FILE), ("c", FILE), ("d", DIR)])
    assert got[0] == kept
    assert len(set(got) | {replaced}) == 5 and min(got[1:]) > replaced
    assert got[2:] == sorted(got[2:]), "handed out in the order asked"
    table.commit()
    again = InodeMap(db)
    assert [again.number(p, k) for p, k in (("a", FILE), ("b", FILE), ("c", FILE), ("d", DIR))] == got
    assert again.path_of(replaced) is None and again.numbers([]) == []


def statements(table: InodeMap) -> list[str]:
    """The SQL the table runs from now on."""
    seen: list[str] = []
    table.db.set_trace_callback(seen.append)
    return seen


def test_the_counter_is_written_once_per_block_of_numbers(db: Path) -> None:
    """One number per request (``cp -r``: one create each), one commit per request: the counter
    row is stored ahead of the numbers, not once per number; the next daemon starts above it."""
    table = InodeMap(db)
    seen = statements(table)
    handed_out = []
    for i in range(200):
        handed_out.append(table.number(f"f{i}", FILE))
        table.commit()
    assert sum(sql.startswith("UPDATE counter") for sql in seen) == 1
    successor = InodeMap(db)  # kill -9 model: no close
    assert [successor.number(f"f{i}", FILE) for i in range(200)] == handed_out
    fresh = [successor.number(f"g{i}", FILE) for i in range(3)]
    assert min(fresh) > max(handed_out) and fresh == sorted(set(fresh))


def test_a_created_path_is_numbered_without_reading_first(db: Path) -> None:
    """``created``: a create's path has no row as a rule, so it costs one INSERT and no SELECT;
    a row an earlier daemon left there is honoured as a lookup would honour it."""
    earlier = InodeMap(db)
    kept = earlier.number("kept", FILE)
    was_dir = earlier.number("was_dir", DIR)
    below = earlier.number("was_dir/f", FILE)
    earlier.close()
    table = InodeMap(db)
    seen = statements(table)
    new = table.created("new", FILE)
    assert not any(sql.startswith("SELECT") for sql in seen)
    assert new > below
    assert table.created("kept", FILE) == kept
    as_file = table.created("was_dir", FILE)
    assert as_file not in (was_dir, new)
    assert table.number("was_dir/f", FILE) != below, "what was below the old directory is gone"
    table.commit()
    assert InodeMap(db).number("new", FILE) == new
