"""Metrics and ``obsfs status`` of a real mount: scrape the endpoint after a workload and check that
the counters moved by exactly what the workload did."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.mounting import OBSFS, Mounter, fsync_tree
from tests.s3server import S3Server, free_port


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by name and labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_follow_a_workload(mounter: Mounter, moto: S3Server, bucket: str, s3: Any) -> None:
    stored = os.urandom(3 << 20)
    s3.put_object(Bucket=bucket, Key="stored.bin", Body=stored)
    port = free_port()
    mount = mounter.mount(moto, bucket, f"metrics=127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    sizes = {"a.bin": 1 << 20, "b.txt": 100_000, "empty": 0}
    for name, size in sizes.items():
        (mount.path / name).write_bytes(os.urandom(size))
    fsync_tree(mount.path)  # fsync returns once the store has each file
    assert not (mount.path / "missing").exists()
    assert (mount.path / "stored.bin").read_bytes() == stored

    samples = scrape(url)
    written = sum(sizes.values())
    assert value(samples, "obsfs_written_bytes_total", destination="cache") == written
    assert value(samples, "obsfs_written_bytes_total", destination="store") == written  # every byte uploaded
    assert value(samples, "obsfs_read_bytes_total", source="kernel") == len(stored)
    assert value(samples, "obsfs_read_bytes_total", source="store") == len(stored)  # one GET per chunk, no more
    assert value(samples, "obsfs_upload_attempts_total", outcome="ok") == len(sizes)
    assert value(samples, "obsfs_store_requests_total", operation="put", outcome="ok") >= len(sizes)
    assert value(samples, "obsfs_store_request_seconds_count", operation="get") >= 1
    assert value(samples, "obsfs_fuse_operations_total", operation="write") >= 2
    assert value(samples, "obsfs_fuse_errors_total", operation="lookup", errno="ENOENT") == 0  # a negative entry
    assert value(samples, "obsfs_dirty_files") == value(samples, "obsfs_dirty_bytes") == 0
    assert value(samples, "obsfs_cache_disk_limit_bytes") == 1 << 30
    assert 0 <= value(samples, "obsfs_store_silence_seconds") < 60

    # The same figures over the private control socket, which obsfs status reads.
    status = subprocess.run([*OBSFS, "status", str(mount.path), "--json"], capture_output=True, text=True,
                            check=True)
    assert json.loads(status.stdout)["dirty_files"] == 0


def test_status_shows_what_waits_for_upload(mounter: Mounter, moto: S3Server, bucket: str, tmp_path: Path) -> None:
    mount = mounter.mount(moto, bucket, "upload_delay=3600")  # nothing leaves until the unmount
    (mount.path / "dir").mkdir()
    (mount.path / "dir" / "waiting.txt").write_bytes(b"x" * 5000)
    with open(mount.path / "gone.txt", "wb") as stream:
        stream.write(b"x")
        stream.flush()
        os.fsync(stream.fileno())  # in the store, then removed: a removal is owed
    (mount.path / "gone.txt").unlink()
    status = subprocess.run([*OBSFS, "status", str(mount.path)], capture_output=True, text=True, check=True)
    lines = status.stdout.splitlines()
    assert "also waiting         1 new directory(ies), 1 removal(s)" in lines, lines
    assert any(line.startswith("waiting for upload ") and "1 file(s), 4.9 KiB, oldest" in line for line in lines)
    assert any(line.strip().endswith("dir/waiting.txt") and "4.9 KiB" in line for line in lines)
    assert mount.umount() == 0  # drains it

    gone = subprocess.run([*OBSFS, "status", str(mount.path)], capture_output=True, text=True)
    assert gone.returncode == 2 and "no obsfs daemon answers there" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1
