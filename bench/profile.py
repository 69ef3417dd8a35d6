"""Workload sizes: the full profile of issues #3 and #16 and a small ``--quick`` profile for smoke runs."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Profile:
    name: str
    seq_bytes: int  # sequential write / read size
    small_files: int  # files copied with cp -r
    small_bytes: int  # size of each of them, and of each file in the copied tree
    ls_objects: int  # objects in the directory listed with ls -l
    rm_files: int  # objects in the one directory removed with rm -r
    tree_fanout: int  # the trees have tree_fanout x tree_fanout leaf directories, two levels down
    tree_files: int  # files spread over those leaves, in the tree copied in and in the tree removed
    runs: int  # repetitions of every workload

    @property
    def tree_dirs(self) -> int:
        return self.tree_fanout**2


FULL = Profile("full", seq_bytes=GiB, small_files=1000, small_bytes=30 * KiB, ls_objects=10_000, rm_files=1000,
               tree_fanout=32, tree_files=6400, runs=3)
QUICK = Profile("quick", seq_bytes=64 * MiB, small_files=100, small_bytes=30 * KiB, ls_objects=1000, rm_files=100,
                tree_fanout=4, tree_files=100, runs=1)
