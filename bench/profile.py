"""Workload sizes: the full profile of issue #3 and a small ``--quick`` profile for smoke runs."""

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
    small_bytes: int  # size of each of them
    ls_objects: int  # objects in the directory listed with ls -l
    runs: int  # repetitions of every workload


FULL = Profile("full", seq_bytes=GiB, small_files=1000, small_bytes=30 * KiB, ls_objects=10_000, runs=3)
QUICK = Profile("quick", seq_bytes=64 * MiB, small_files=100, small_bytes=30 * KiB, ls_objects=1000, runs=1)
