"""The inode table: lookup counts, unlink with open handles, renames of subtrees, and numbers
that outlive the nodes (forget, reopen)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from obsfs.inodemap import InodeMap
from obsfs.inodes import ROOT_INO, Entry, InodeTable, Node
from obsfs.meta import Attrs


def entry(kind: int = stat.S_IFREG, size: int = 0) -> Entry:
    return Entry(attrs=Attrs(mode=kind | 0o644, uid=0, gid=0, size=size, atime_ns=0, mtime_ns=0, ctime_ns=0))


DIR = stat.S_IFDIR


@pytest.fixture
def table(tmp_path: Path) -> InodeTable:
    return InodeTable(entry(DIR), InodeMap(tmp_path / "inodes.db"))


def release(table: InodeTable, node: Node) -> None:
    """What ``release`` in obsfs/fs/files.py does once a handle is closed."""
    node.opens -= 1
    table.drop_if_unused(node)


def looked_up(table: InodeTable, path: str, kind: int = stat.S_IFREG, times: int = 1) -> Node:
    """What a handler does: add, then count the reply that hands out the inode."""
    node = table.add(path, entry(kind))
    node.lookups += times
    return node


def test_root(table: InodeTable) -> None:
    root = table.get(ROOT_INO)
    assert root is not None
    assert table.by_path("") is root
    assert len(table) == 1
    table.forget(ROOT_INO, 100)
    assert table.get(ROOT_INO) is root


def test_add_gives_distinct_stable_numbers(table: InodeTable) -> None:
    a = looked_up(table, "a")
    b = looked_up(table, "b")
    assert len({ROOT_INO, a.ino, b.ino}) == 3
    again = table.add("a", entry(size=9))
    assert again is a
    assert a.entry.attrs.size == 9  # the newer truth replaces the old
    assert table.get(a.ino) is a
    assert table.by_path("a") is a


def test_forget_drops_only_at_zero_lookups(table: InodeTable) -> None:
    node = looked_up(table, "f", times=3)
    table.forget(node.ino, 2)
    assert table.get(node.ino) is node
    assert table.by_path("f") is node
    table.forget(node.ino, 1)
    assert table.get(node.ino) is None
    assert table.by_path("f") is None
    # A later lookup gets the same number: the kernel may have forgotten, tar and rsync have not.
    assert looked_up(table, "f").ino == node.ino


def test_forget_more_than_counted_and_unknown_inodes(table: InodeTable) -> None:
    node = looked_up(table, "f")
    table.forget(node.ino, 5)
    assert node.lookups == 0
    assert table.get(node.ino) is None
    table.forget(node.ino, 1)  # already gone: nothing happens
    table.forget(12345, 1)


def test_forget_keeps_open_nodes_until_closed(table: InodeTable) -> None:
    node = looked_up(table, "f")
    node.opens += 1
    table.forget(node.ino, 1)
    assert table.get(node.ino) is node
    release(table, node)
    assert table.get(node.ino) is None
    assert table.by_path("f") is None


def test_release_keeps_looked_up_nodes(table: InodeTable) -> None:
    node = looked_up(table, "f")
    node.opens += 1
    release(table, node)
    assert table.get(node.ino) is node


def test_detach_keeps_open_node_alive(table: InodeTable) -> None:
    node = looked_up(table, "f")
    node.opens += 1
    table.detach(node)
    assert node.path is None
    assert table.by_path("f") is None
    assert table.get(node.ino) is node
    # A new file with the same name is a different inode.
    fresh = looked_up(table, "f")
    assert fresh.ino != node.ino
    table.forget(node.ino, 1)
    assert table.get(node.ino) is node  # still open
    release(table, node)
    assert table.get(node.ino) is None
    assert table.by_path("f") is fresh


def test_detach_of_unused_node_drops_it(table: InodeTable) -> None:
    node = table.add("f", entry())
    table.detach(node)
    assert table.get(node.ino) is None


def test_type_change_makes_a_new_inode(table: InodeTable) -> None:
    old = looked_up(table, "x")
    new = looked_up(table, "x", DIR)
    assert new.ino != old.ino
    assert old.path is None
    assert table.get(old.ino) is old  # the kernel still holds it
    assert table.by_path("x") is new


def test_staged_node_is_not_dropped(table: InodeTable) -> None:
    node = looked_up(table, "f")
    node.staged = object()  # type: ignore[assignment]
    table.forget(node.ino, 1)
    assert table.get(node.ino) is node


def test_under(table: InodeTable) -> None:
    for path in ("a", "a/x", "a/x/y", "ab", "ab/z", "b"):
        looked_up(table, path)
    assert sorted(n.path or "" for n in table.under("a")) == ["a", "a/x", "a/x/y"]
    assert len(list(table.under(""))) == 7
    # A snapshot: the table may change while iterating.
    for node in table.under("a"):
        table.detach(node)
    assert table.by_path("a/x") is None


def test_move_subtree(table: InodeTable) -> None:
    nodes = {p: looked_up(table, p, DIR if p in ("a", "a/x") else stat.S_IFREG)
             for p in ("a", "a/x", "a/x/y", "a/f", "ab", "ab/z")}
    inos = {p: n.ino for p, n in nodes.items()}
    table.move("a", "c/d")
    for old, new in (("a", "c/d"), ("a/x", "c/d/x"), ("a/x/y", "c/d/x/y"), ("a/f", "c/d/f")):
        node = table.by_path(new)
        assert node is nodes[old]
        assert node.ino == inos[old]
        assert node.path == new
        assert table.by_path(old) is None
    # A sibling that shares the name's prefix is not part of the move.
    assert table.by_path("ab") is nodes["ab"]
    assert table.by_path("ab/z") is nodes["ab/z"]


def test_move_over_existing_target(table: InodeTable) -> None:
    src = looked_up(table, "src", DIR)
    src_child = looked_up(table, "src/same")
    dst = looked_up(table, "dst", DIR)
    dst_child = looked_up(table, "dst/same")
    dst_only = looked_up(table, "dst/other")
    dst_child.opens += 1
    table.move("src", "dst")
    assert table.by_path("dst") is src
    assert table.by_path("dst/same") is src_child
    for replaced in (dst, dst_child, dst_only):
        assert replaced.path is None
    assert table.by_path("dst/other") is None
    # Replaced nodes the kernel still knows stay addressable by inode.
    assert table.get(dst.ino) is dst
    assert table.get(dst_child.ino) is dst_child
    table.forget(dst_only.ino, 1)
    assert table.get(dst_only.ino) is None


def test_move_file_onto_file(table: InodeTable) -> None:
    a = looked_up(table, "a")
    b = table.add("b", entry())  # known but not held by the kernel
    table.move("a", "b")
    assert table.by_path("b") is a
    assert table.by_path("a") is None
    assert table.get(b.ino) is None
    assert len(table) == 2


def test_move_into_a_longer_sibling_name(table: InodeTable) -> None:
    a = looked_up(table, "a", DIR)
    ax = looked_up(table, "a/x")
    table.move("a", "ab")
    assert table.by_path("ab") is a
    assert table.by_path("ab/x") is ax
    assert table.by_path("a") is None


def test_numbers_of_forgotten_and_renamed_nodes_survive_a_new_table(tmp_path: Path) -> None:
    """A remount with the same cache dir: the same paths, the same numbers."""
    table = InodeTable(entry(DIR), InodeMap(tmp_path / "inodes.db"))
    d = looked_up(table, "d", DIR)
    f = looked_up(table, "d/f")
    table.forget(f.ino, 1)
    table.move("d", "e")  # f is no longer in memory: its number moves on disk
    table.numbers.close()
    again = InodeTable(entry(DIR), InodeMap(tmp_path / "inodes.db"))
    assert looked_up(again, "e", DIR).ino == d.ino
    assert looked_up(again, "e/f").ino == f.ino
    assert looked_up(again, "d", DIR).ino not in (d.ino, f.ino)


def test_unlink_gives_a_new_number_to_a_new_file_whether_held_or_forgotten(table: InodeTable) -> None:
    held = looked_up(table, "held")
    held.opens += 1
    forgotten = looked_up(table, "forgotten")
    table.forget(forgotten.ino, 1)
    table.unlink("held")
    table.unlink("forgotten")
    assert held.path is None
    assert table.get(held.ino) is held, "the open file keeps its number"
    assert looked_up(table, "held").ino not in (held.ino, forgotten.ino)
    assert looked_up(table, "forgotten").ino not in (held.ino, forgotten.ino)


def test_a_forgotten_entry_of_another_kind_gets_a_new_number(table: InodeTable) -> None:
    old = looked_up(table, "x")
    table.forget(old.ino, 1)
    assert looked_up(table, "x", DIR).ino != old.ino
