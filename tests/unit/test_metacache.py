"""The on-disk metadata cache: rows are batched, yet never missed by a lookup or a forget."""

from __future__ import annotations

import sqlite3
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


def test_a_cache_file_of_an_older_layout_starts_afresh(tmp_path: Path) -> None:
    """A cache written before atime was kept: its rows lack a field, so they are dropped (each costs
    one HEAD again), and the mount does not fail on it."""
    db = sqlite3.connect(tmp_path / "meta.db")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, etag TEXT NOT NULL, mode INTEGER NOT NULL, "
               "uid INTEGER NOT NULL, gid INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, "
               "content_type TEXT)")
    db.execute("INSERT INTO meta VALUES ('a', 'etag-a', 33188, 0, 0, 5, 6, NULL)")
    db.commit()
    db.close()
    cache = MetaCache(tmp_path / "meta.db")
    assert cache.lookup([("a", "etag-a")]) == {}
    cache.put("a", "etag-a", ATTRS, None)
    assert cache.lookup([("a", "etag-a")]) == {"a": (ATTRS, None)}
    cache.close()
