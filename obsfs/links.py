"""``st_nlink``: link counts from what this mount knows of a directory's listing.

Objects have no links, so only directories need thought. Tools take a directory's count as
"2 + its subdirectories": GNU find (gnulib fts) trusts it on FUSE mounts, which its
``leaf_optimization`` does not list among the file systems known to miscount (NFS, CIFS, AFS,
proc). ``fts_stat`` keeps ``st_nlink - 2`` as the subdirectories still to meet, and once that many
were met, takes entries of unknown ``d_type`` for non-directories without a stat: a count that is
too *low* makes find miss directories. A count below 2 reads as "unknown" (``n_dirs_remaining``
-1) and turns that off, so a directory this mount has not listed says 1, as every directory on
btrfs and on s3fs does, and ``-noleaf`` is never needed. Once listed, and
kept current as this mount creates, removes and renames subdirectories, the count is exact.
"""

from __future__ import annotations

from collections.abc import Mapping

UNKNOWN_DIR_NLINK = 1


def link_count(*, is_dir: bool, unlinked: bool, children: Mapping[str, bool] | None) -> int:
    """The ``st_nlink`` to show.

    ``unlinked``: no name leads to the node any more (unlinked or removed while open, or replaced
    by a rename), so 0, as ``fstat`` shows on a local file system. ``children``: for a directory,
    its listing as name -> is a directory, or None if this mount does not know it (never listed,
    or the listing expired from the cache).
    """
    if unlinked:
        return 0
    if not is_dir:
        return 1
    if children is None:
        return UNKNOWN_DIR_NLINK
    return 2 + sum(children.values())
