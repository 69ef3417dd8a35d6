"""The on-disk metadata cache: rows are batched, yet never missed by a lookup or a forget."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from obsfs.meta import Attrs
from obsfs.metacache import MetaCache

ATTRS = Attrs(mode=0o100640, uid=7, gid=8, size=0, atime_ns=3_000_000_000, mtime_ns=1_000_000_123,
              ctime_ns=2_000_000_000)


def test_a_pending_row_is_seen_by_lookup_and_survives_close(tmp_path: Path) -> None:
    cache = MetaCache(tmp_path / "meta.db")
    cache.put("a", "etag-a", ATTRS, "text/plain")
    assert cache.lookup([("a", "etag-a")]) == {"a": (ATTRS, "text/plain")}
    assert cache.lookup([("a", "another-etag")]) == {}, "a new ETag is a different object"
    cache.put("b", "etag-b", ATTRS, None)
    cache.close()
    reopened = MetaCache(tmp_path / "meta.db")
    assert reopened.lookup([("a", "etag-a"), ("b", "etag-b")]) == {"a": (ATTRS, "text/plain"), "b": (ATTRS, None)}


def test_forget_drops_a_row_whether_written_or_pending(tmp_path: Path) -> None:
    cache = MetaCache(tmp_path / "meta.db")
    cache.put("written", "e1", ATTRS, None)
    cache.flush()
    cache.put("pending", "e2", ATTRS, None)
    cache.forget("written")
    cache.forget("pending")
    assert cache.lookup([("written", "e1"), ("pending", "e2")]) == {}


def test_many_rows_are_written_in_batches(tmp_path: Path) -> None:
    cache = MetaCache(tmp_path / "meta.db")
    for i in range(1000):
        cache.put(f"k{i}", f"e{i}", ATTRS, None)
    # Without a flush from us, all but the last partial batch are already on disk.
    other = MetaCache(tmp_path / "meta.db")
    assert len(other.lookup((f"k{i}", f"e{i}") for i in range(1000))) >= 1000 - 256
    cache.close()
    assert len(other.lookup((f"k{i}", f"e{i}") for i in range(1000))) == 1000


def test_a_row_the_kernel_could_not_take_is_not_served(tmp_path: Path) -> None:
    """An older obsfs cached owners like -5 from foreign metadata, which made every stat EIO."""
    cache = MetaCache(tmp_path / "meta.db")
    cache.put("bad", "e1", ATTRS.with_changes(uid=-5), None)
    cache.put("good", "e2", ATTRS, None)
    assert cache.lookup([("bad", "e1"), ("good", "e2")]) == {"good": (ATTRS, None)}


DEVICE = Attrs(mode=stat.S_IFBLK | 0o660, uid=0, gid=6, size=0, atime_ns=3, mtime_ns=1, ctime_ns=2,
               rdev=os.makedev(259, 70000))
# The table the obsfs before device numbers kept, as it made it.
OLD_SCHEMA = """CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY, etag TEXT NOT NULL,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, content_type TEXT
)"""


def old_obsfs_writes(path: Path, *rows: tuple[object, ...]) -> None:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute(OLD_SCHEMA)
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()


def test_a_device_number_survives_a_reopen(tmp_path: Path) -> None:
    cache = MetaCache(tmp_path / "meta.db")
    cache.put("disk", "e", DEVICE, None)
    cache.close()
    assert MetaCache(tmp_path / "meta.db").lookup([("disk", "e")]) == {"disk": (DEVICE, None)}


def test_the_file_of_an_older_obsfs_starts_empty(tmp_path: Path) -> None:
    """It cached a FIFO as the regular file it showed: that row must not come back."""
    old_obsfs_writes(tmp_path / "meta.db", ("fifo", "e", stat.S_IFREG | 0o640, 0, 0, 1, 1, None))
    cache = MetaCache(tmp_path / "meta.db")
    assert cache.lookup([("fifo", "e")]) == {}
    cache.put("disk", "e", DEVICE, None)
    assert cache.lookup([("disk", "e")]) == {"disk": (DEVICE, None)}


def test_our_rows_go_when_an_older_obsfs_used_the_file_meanwhile(tmp_path: Path) -> None:
    """Its chmod changed the object's metadata under the same ETag without touching our rows."""
    cache = MetaCache(tmp_path / "meta.db")
    cache.put("disk", "e", DEVICE, None)
    cache.close()
    old_obsfs_writes(tmp_path / "meta.db", ("other", "e", stat.S_IFREG | 0o644, 0, 0, 1, 1, None))
    assert MetaCache(tmp_path / "meta.db").lookup([("disk", "e"), ("other", "e")]) == {}


def test_the_keys_directly_under_a_directory_are_a_listings_hint(tmp_path: Path) -> None:
    cache = MetaCache(tmp_path / "meta.db")
    for key in ("d/a", "d/b é", "d/sub/c", "d0", "d.x", "c", "e/d/a", "top"):
        cache.put(key, "e", ATTRS, None)
    assert sorted(cache.keys_in("d/")) == ["d/a", "d/b é"], "pending rows too, and nothing deeper or beside"
    assert sorted(cache.keys_in("")) == ["c", "d.x", "d0", "top"]
    assert cache.keys_in("e/") == []
