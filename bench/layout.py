"""Names of the files in the bench's directories and trees, the same for the local disk and the bucket.

The tree of issue #16 is two levels deep (32 x 32 leaf directories in the full profile) with the
files dealt round-robin over the leaves, so every leaf holds 6 or 7 of the 6,400 files and every
directory exists only because files lie below it: no peer or SDK has to write a marker for it.
"""

from __future__ import annotations


def flat_names(files: int) -> list[str]:
    return [f"f{i:05d}" for i in range(files)]


def leaf_dirs(fanout: int) -> list[str]:
    width = len(str(fanout - 1))
    return [f"d{a:0{width}d}/d{b:0{width}d}" for a in range(fanout) for b in range(fanout)]


def tree_names(fanout: int, files: int) -> list[str]:
    """``files`` paths spread over ``fanout``**2 leaves; at least one per leaf, or a leaf would not exist."""
    leaves = leaf_dirs(fanout)
    if files < len(leaves):
        raise ValueError(f"{files} files cannot fill {len(leaves)} leaf directories")
    return [f"{leaves[i % len(leaves)]}/f{i:05d}" for i in range(files)]
