"""The node plugin's metrics endpoint: one port for every staged volume's daemon, by volume id."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from obsfs.runtime import state_file
from tests.csi.helpers import create_request
from tests.csi.kubelet import NodeEnv, node_environment
from tests.mounting import fsync_tree, kill_daemon_of, wait_for
from tests.s3server import free_port


@pytest.fixture
def metered(tmp_path: Path, secrets: dict[str, str]) -> Iterator[tuple[NodeEnv, str]]:
    port = free_port()
    with node_environment(tmp_path, secrets, metrics_address=f"127.0.0.1:{port}") as env:
        yield env, f"http://127.0.0.1:{port}/metrics"


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=20) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_every_volume_on_one_port(metered: tuple[NodeEnv, str], volume_name: str) -> None:
    env, url = metered
    volumes = [env.controller.CreateVolume(create_request(f"{volume_name}-{n}", dict(env.kubelet.secrets)),
                                           timeout=30).volume.volume_id for n in range(2)]
    targets = []
    for number, vid in enumerate(volumes):
        env.kubelet.stage(vid)
        target = Path(env.kubelet.publish(vid))
        (target / "data.bin").write_bytes(os.urandom(1000 * (number + 1)))
        fsync_tree(target)
        targets.append(target)

    samples = scrape(url)
    for number, vid in enumerate(volumes):
        labels = frozenset({("destination", "store"), ("volume_id", vid)})
        assert samples[("obsfs_written_bytes_total", labels)] == 1000 * (number + 1)
    assert samples[("obsfs_csi_metrics_unreachable", frozenset())] == 0

    staging = Path(env.kubelet.staging_path(volumes[1]))
    pid = int(state_file(str(staging), "pid").read_text())
    kill_daemon_of(staging)  # a dead daemon: left out, and counted
    wait_for(lambda: not _running(pid), f"daemon {pid} to die")
    samples = scrape(url)
    assert samples[("obsfs_csi_metrics_unreachable", frozenset())] == 1
    assert not any(("volume_id", volumes[1]) in labels for _, labels in samples)
    assert any(("volume_id", volumes[0]) in labels for _, labels in samples)
    for vid, target in zip(volumes, targets, strict=True):
        env.kubelet.unpublish(vid, str(target))
        env.kubelet.unstage(vid)
    assert scrape(url)[("obsfs_csi_metrics_unreachable", frozenset())] == 0
