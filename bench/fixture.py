"""The bucket and local files every peer works on, prepared once per bench with the SDK.

The object that peers read is written by the SDK, not by the peer itself: every peer then reads the
same bytes, none of them can serve it from a cache it filled while writing, and the read checks that
each peer understands objects written by another client. The listed objects carry s3fs-format
attributes (bench.attrs), so a listing has to find them out. The trees that peers remove are planted
again by the SDK before every ``rm -r`` (``plant``), so removing never depends on a peer's own copy.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.attrs import LISTED
from bench.errors import BenchError
from bench.layout import flat_names, tree_names
from bench.profile import Profile
from bench.store import Store
from bench.workloads import check, make_random_file

log = logging.getLogger(__name__)

READ_KEY = "read.bin"
Sums = dict[str, tuple[int, str]]  # relative file name -> size, sha256


@dataclass(frozen=True)
class Fixture:
    store: Store
    profile: Profile
    seq_src: Path  # local file every peer writes
    seq_sum: tuple[int, str]  # its size and sha256; also those of READ_KEY
    small_dir: Path  # local directory copied in with cp -r
    small_sums: Sums
    tree_dir: Path  # local tree of profile.tree_files files in profile.tree_dirs leaves, copied in with cp -r
    tree_sums: Sums
    ls_dir: str  # directory (key prefix without the slash) of profile.ls_objects objects
    rm_flat: list[str]  # names planted below one prefix for rm -r of one directory
    rm_tree: list[str]  # names planted below one prefix for rm -r of a tree


def plant(store: Store, keys: list[str], metadata: dict[str, str] | None = None) -> None:
    """Small objects (16 bytes) at ``keys``, with no directory markers: directories are implied."""
    store.fan_out(lambda key: store.put_small(key, os.urandom(16), metadata), keys)


def local_files(root: Path, names: list[str], size: int) -> Sums:
    sums = {}
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sums[name] = (size, make_random_file(path, size))
    return sums


def prepare(store: Store, profile: Profile, workdir: Path) -> Fixture:
    store.create_bucket()
    seq_src = workdir / "seq.src"
    seq_sum = (profile.seq_bytes, make_random_file(seq_src, profile.seq_bytes))
    start = time.perf_counter()
    store.put_file(READ_KEY, seq_src)
    check(f"SDK round trip of {READ_KEY}", store.sha256(READ_KEY), seq_sum)
    log.info("setup: %s (%d MiB) uploaded and verified in %.1f s", READ_KEY, profile.seq_bytes >> 20,
             time.perf_counter() - start)

    small_dir, tree_dir = workdir / "small", workdir / "tree"
    small_sums = local_files(small_dir, flat_names(profile.small_files), profile.small_bytes)
    tree = tree_names(profile.tree_fanout, profile.tree_files)
    tree_sums = local_files(tree_dir, tree, profile.small_bytes)

    ls_dir = f"ls{profile.ls_objects}"
    start = time.perf_counter()
    store.put_dir_marker(f"{ls_dir}/")
    plant(store, [f"{ls_dir}/{name}" for name in flat_names(profile.ls_objects)], LISTED.metadata())
    found = len(store.list_sizes(f"{ls_dir}/")) - 1  # minus the marker
    if found != profile.ls_objects:
        raise BenchError(f"setup: {found} objects under {ls_dir}/, expected {profile.ls_objects}")
    log.info("setup: %d objects under %s/ created in %.1f s", found, ls_dir, time.perf_counter() - start)
    return Fixture(store, profile, seq_src, seq_sum, small_dir, small_sums, tree_dir, tree_sums, ls_dir,
                   flat_names(profile.rm_files), tree)
