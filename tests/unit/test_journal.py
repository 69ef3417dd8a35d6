"""The dirty-file journal on a cache disk that is full to the last page (a small tmpfs: root only).

An insert may fail (close() then answers ENOSPC); a delete may not, and an owed delete must never
take away a row that was recorded again since.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from obsfs.journal import RESERVE_BYTES, DirtyRecord, Journal
from obsfs.meta import Attrs

ATTRS = Attrs(mode=0o100644, uid=0, gid=0, size=0, atime_ns=2, mtime_ns=1, ctime_ns=1)


def rec(name: str) -> DirtyRecord:
    return DirtyRecord(data_file=name, key=f"dir/{name}", base_etag=None, attrs=ATTRS, content_type="text/plain")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path, name: str) -> Path:
    """Take every free page of ``disk``; deleting the returned file gives them back."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return path


def names(journal: Journal) -> set[str]:
    return {r.data_file for r in journal.all()}


def test_a_delete_on_a_full_disk_spends_the_reserve(disk: Path) -> None:
    journal = Journal(disk / "journal.db")
    assert (disk / "journal.reserve").stat().st_size == RESERVE_BYTES
    for i in range(3):
        journal.record(rec(f"f{i}"))
    filler = fill(disk, "filler")
    with pytest.raises(OSError) as err:
        journal.record(rec("new"))
    assert err.value.errno == errno.ENOSPC, "an insert may fail: close() reports it"
    journal.remove("f0")
    assert names(journal) == {"f1", "f2"}
    assert not (disk / "journal.reserve").exists() and not journal.owed
    filler.unlink()
    journal.remove("f1")
    assert (disk / "journal.reserve").stat().st_size == RESERVE_BYTES, "allocated again once there is room"
    assert names(journal) == {"f2"}


def test_a_delete_without_room_is_owed_then_settled(disk: Path) -> None:
    journal = Journal(disk / "journal.db")
    for i in range(4):
        journal.record(rec(f"f{i}"))
    journal.note_upload("upload-1", "dir/big")
    fillers = [fill(disk, "filler0")]
    journal.remove("f0")  # spends the reserve
    fillers.append(fill(disk, "filler1"))
    journal.remove("f1")  # no room and no reserve: owed, and no error for the caller
    journal.forget_upload("upload-1")
    assert journal.owed == {("dirty", "f1"), ("uploads", "upload-1")}
    assert names(journal) == {"f1", "f2", "f3"}, "still on disk: the next mount drops it or uploads it again"
    for filler in fillers:
        filler.unlink()
    journal.remove("f2")  # any later write settles what is owed, then restores the reserve
    assert not journal.owed and names(journal) == {"f3"} and journal.open_uploads() == []
    assert journal.reserved


def test_recording_again_cancels_an_owed_delete(disk: Path) -> None:
    """The store had version 1 of f0, its row's delete was owed; version 2 is acknowledged with a
    new row under the same data file. The owed delete must not take that row away."""
    journal = Journal(disk / "journal.db")
    journal.record(rec("f0"))
    journal.record(rec("f1"))
    fillers = [fill(disk, "filler0")]
    journal.remove("f1")  # spends the reserve
    fillers.append(fill(disk, "filler1"))
    journal.remove("f0")
    assert ("dirty", "f0") in journal.owed
    fillers.pop().unlink()
    journal.record(rec("f0"))  # version 2 acknowledged
    assert not journal.owed
    fillers.pop().unlink()
    journal.remove("absent")  # settles: nothing owed may touch f0
    journal.close()
    assert names(Journal(disk / "journal.db")) == {"f0"}


def test_close_settles_what_is_owed_and_the_rest_survives_a_reopen(disk: Path) -> None:
    journal = Journal(disk / "journal.db")
    journal.record(rec("f0"))
    journal.record(rec("f1"))
    journal.record(rec("kept"))
    filler0 = fill(disk, "filler0")
    journal.remove("f0")
    filler1 = fill(disk, "filler1")
    journal.remove("f1")
    assert journal.owed == {("dirty", "f1")}
    filler0.unlink()
    filler1.unlink()
    journal.close()
    assert names(Journal(disk / "journal.db")) == {"kept"}


OLD_JOURNAL = """
CREATE TABLE dirty (data_file TEXT PRIMARY KEY, key TEXT NOT NULL, base_etag TEXT,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, content_type TEXT NOT NULL);
INSERT INTO dirty VALUES ('old', 'dir/old', NULL, 33188, 0, 0, 5, 6, 'text/plain');
"""


def test_a_journal_from_before_atime_keeps_its_rows(tmp_path: Path) -> None:
    """Its rows are acknowledged writes: the new column is added, and their atime is their mtime."""
    db = sqlite3.connect(tmp_path / "journal.db")
    db.executescript(OLD_JOURNAL)
    db.close()
    journal = Journal(tmp_path / "journal.db")
    journal.record(rec("new"))
    assert {r.data_file: r.attrs for r in journal.all()} == {
        "old": Attrs(mode=33188, uid=0, gid=0, size=0, atime_ns=5, mtime_ns=5, ctime_ns=6), "new": ATTRS}
    journal.close()


def test_a_new_boot_is_told_until_recovery_is_done(tmp_path: Path) -> None:
    """Rows keep a small file's bytes; the journal says when the boot changed since the last
    recovery (the data files may be torn then), until that recovery is done."""
    journal = Journal(tmp_path / "journal.db", boot_id="one")
    assert not journal.rebooted  # a new journal: no row can be older than this boot
    journal.record(replace(rec("small"), data=b"bytes"))
    journal.record(rec("large"))
    journal.recovered()
    journal.close()
    again = Journal(tmp_path / "journal.db", boot_id="one")
    assert not again.rebooted
    again.close()
    after = Journal(tmp_path / "journal.db", boot_id="two")
    assert after.rebooted
    assert {r.data_file: r.data for r in after.all()} == {"small": b"bytes", "large": None}
    after.close()
    for recovering in (False, True):  # told again until a recovery is done
        journal = Journal(tmp_path / "journal.db", boot_id="two")
        assert journal.rebooted
        if recovering:
            journal.recovered()
            assert not journal.rebooted
        journal.close()
    journal = Journal(tmp_path / "journal.db", boot_id="two")
    assert not journal.rebooted
    journal.close()


def test_a_later_delete_rides_in_the_next_records_transaction(tmp_path: Path) -> None:
    """cp -r of small files: the row of an uploaded file goes in the same commit as the next
    file's row, never in a commit of its own; a record of the same name cancels it."""
    journal = Journal(tmp_path / "journal.db", boot_id="boot")
    try:
        statements: list[str] = []
        journal.db.set_trace_callback(statements.append)
        for name in ("a", "b", "c"):
            journal.record(rec(name))
        journal.remove("a", later=True)
        journal.remove("b", later=True)
        assert {r.data_file for r in journal.all()} == {"a", "b", "c"}, "waits for the next record"
        journal.record(rec("b"))  # written again after its upload: the new row stays
        assert {r.data_file for r in journal.all()} == {"b", "c"}
        deletes = [i for i, sql in enumerate(statements) if sql.startswith("DELETE")]
        assert [statements[i - 1] for i in deletes] == ["BEGIN IMMEDIATE"]  # a's, then b's row
        assert not any(sql.startswith("PRAGMA") for sql in statements), "no commit of its own"
        journal.remove("c", later=True)
        journal.remove("b")  # not later: runs what waits too
        assert journal.all() == []
    finally:
        journal.close()


def test_held_row_deletes_share_one_transaction_when_another_write_comes_first(tmp_path: Path) -> None:
    """``remove(later=True)`` holds deletes back for the next ``record``; a mkdir's row can come
    first (``cp -r`` of a tree), and then the held deletes are one commit, not one each."""
    journal = Journal(tmp_path / "journal.db")
    for name in ("a", "b", "c"):
        journal.record(rec(name))
    for name in ("a", "b", "c"):
        journal.remove(name, later=True)
    statements: list[str] = []
    journal.db.set_trace_callback(statements.append)
    journal.note_marker("dir/new/", replace(ATTRS, mode=0o40755))
    journal.db.set_trace_callback(None)
    deletes = [i for i, sql in enumerate(statements) if sql.startswith("DELETE FROM dirty")]
    assert len(deletes) == 3
    begin = max(i for i, sql in enumerate(statements) if sql.startswith("BEGIN") and i < deletes[0])
    assert statements[begin + 1:begin + 5] == [statements[i] for i in deletes] + ["COMMIT"]
    assert names(journal) == set()
    assert journal.markers() == [("dir/new/", replace(ATTRS, mode=0o40755, size=0))]
    journal.forget_marker("dir/new/")
    assert journal.markers() == []
