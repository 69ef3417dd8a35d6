"""The bucket and local files every peer works on, prepared once per bench with the SDK.

The object that peers read is written by the SDK, not by the peer itself: every peer then reads the
same bytes, none of them can serve it from a cache it filled while writing, and the read checks that
each peer understands objects written by another client.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.profile import Profile
from bench.store import Store
from bench.workloads import check, make_random_file

log = logging.getLogger(__name__)

READ_KEY = "read.bin"


@dataclass(frozen=True)
class Fixture:
    store: Store
    profile: Profile
    seq_src: Path  # local file every peer writes
    seq_sum: tuple[int, str]  # its size and sha256; also those of READ_KEY
    small_dir: Path  # local tree copied in with cp -r
    small_sums: dict[str, tuple[int, str]]  # file name -> size, sha256
    ls_dir: str  # directory (key prefix without the slash) of profile.ls_objects objects


def prepare(store: Store, profile: Profile, workdir: Path) -> Fixture:
    store.create_bucket()
    seq_src = workdir / "seq.src"
    seq_sum = (profile.seq_bytes, make_random_file(seq_src, profile.seq_bytes))
    start = time.perf_counter()
    store.put_file(READ_KEY, seq_src)
    check(f"SDK round trip of {READ_KEY}", store.sha256(READ_KEY), seq_sum)
    log.info("setup: %s (%d MiB) uploaded and verified in %.1f s", READ_KEY, profile.seq_bytes >> 20,
             time.perf_counter() - start)

    small_dir = workdir / "small"
    small_dir.mkdir()
    small_sums = {}
    for i in range(profile.small_files):
        name = f"f{i:05d}"
        small_sums[name] = (profile.small_bytes, make_random_file(small_dir / name, profile.small_bytes))

    ls_dir = f"ls{profile.ls_objects}"
    start = time.perf_counter()
    store.put_dir_marker(f"{ls_dir}/")
    keys = [f"{ls_dir}/o{i:05d}" for i in range(profile.ls_objects)]
    store.fan_out(lambda key: store.put_small(key, os.urandom(16)), keys)
    found = len(store.list_sizes(f"{ls_dir}/")) - 1  # minus the marker
    if found != profile.ls_objects:
        raise BenchError(f"setup: {found} objects under {ls_dir}/, expected {profile.ls_objects}")
    log.info("setup: %d objects under %s/ created in %.1f s", found, ls_dir, time.perf_counter() - start)
    return Fixture(store, profile, seq_src, seq_sum, small_dir, small_sums, ls_dir)
