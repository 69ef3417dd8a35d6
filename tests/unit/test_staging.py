"""Spare staged files: made ahead by a thread, handed out by a rename, never seen as data."""

from __future__ import annotations

import os
from pathlib import Path

from obsfs.staging import StagingArea


def test_a_new_staged_file_is_a_spare_made_ahead(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"))
    count = area.spares_wanted()
    assert count > 1
    assert not area.spares_wanted(), "one refill at a time"
    made = area.make_spares(count)
    assert made and os.listdir(tmp_path / "staging") == [], "spares wait outside the staging directory"
    area.add_spares(made)
    spare_inodes = {os.fstat(spare.fd).st_ino for spare in made}
    staged = area.new()
    assert os.fstat(staged.fd).st_ino in spare_inodes
    assert os.path.dirname(staged.path) == area.directory
    assert os.listdir(tmp_path / "staging") == [staged.name]
    assert staged.write(0, b"data") == 4 and Path(staged.path).read_bytes() == b"data"
    assert not area.spares_wanted(), "enough are left"


def test_spares_left_by_a_crash_are_dropped_and_the_unmount_removes_its_own(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"))
    area.make_spares(2)  # never added: as if the daemon died
    assert os.listdir(area.spare_directory)
    again = StagingArea(str(tmp_path / "staging"))
    assert os.listdir(again.spare_directory) == []
    again.add_spares(again.make_spares(2))
    again.close()
    assert os.listdir(again.spare_directory) == []
    assert again.new().path.startswith(again.directory + os.sep), "without spares, a file is created"
