"""st_nlink from what the mount knows: exact for listed directories, 1 when unknown, 0 once unlinked."""

from __future__ import annotations

import pytest

from obsfs.links import UNKNOWN_DIR_NLINK, link_count


@pytest.mark.parametrize(("children", "expected"), [
    ({}, 2),
    ({"f": False, "l": False}, 2),
    ({"a": True, "f": False, "b": True}, 4),
    ({f"d{i}": True for i in range(1000)}, 1002),
])
def test_listed_directory_counts_its_subdirectories(children: dict[str, bool], expected: int) -> None:
    assert link_count(is_dir=True, unlinked=False, children=children) == expected


def test_unknown_listing_disables_the_leaf_optimisation() -> None:
    # Below 2, GNU find's fts takes the count as unknown; 2 or more it would trust.
    assert UNKNOWN_DIR_NLINK < 2
    assert link_count(is_dir=True, unlinked=False, children=None) == UNKNOWN_DIR_NLINK


def test_files_and_symlinks_have_one_link() -> None:
    assert link_count(is_dir=False, unlinked=False, children=None) == 1


@pytest.mark.parametrize("is_dir", [False, True])
def test_unlinked_nodes_have_none(is_dir: bool) -> None:
    assert link_count(is_dir=is_dir, unlinked=True, children={"a": True}) == 0
