"""The node plugin's metrics endpoint: every staged volume's daemon, on one port, by volume id.

Each daemon serves its own registry on a unix socket in the state directory (``-o metrics=``,
see ``obsfs.control``). A scrape of the plugin asks each of them in turn, adds a ``volume_id``
label to every sample, and answers with all of them, so Prometheus needs one target per node,
not one per volume. A daemon that does not answer (dead, or busy past the timeout) is left out
of that scrape and counted in ``obsfs_csi_metrics_unreachable``, which an alert watches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from obsfs import control
from obsfs.options import ListenAddress

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 5.0


class VolumeMetrics(Collector):
    """Collects ``(volume id, daemon socket)`` pairs, as ``volumes()`` lists them at each scrape."""

    def __init__(self, volumes: Callable[[], Iterable[tuple[str, Path]]]) -> None:
        self._volumes = volumes

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        unreachable = 0
        for volume_id, socket_path in self._volumes():
            try:
                text = control.fetch(str(socket_path), "/metrics", timeout=SCRAPE_TIMEOUT).decode()
            except OSError as exc:
                unreachable += 1
                log.info("metrics of volume %s: its daemon does not answer at %s (%s)", volume_id, socket_path, exc)
                continue
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "volume_id": volume_id}, sample.value,
                                    sample.timestamp, sample.exemplar)
        yield from merged.values()
        gauge = GaugeMetricFamily("obsfs_csi_metrics_unreachable", "Staged volumes whose daemon did not answer "
                                  "this scrape")
        gauge.add_metric([], unreachable)
        yield gauge


def serve(address: ListenAddress, volumes: Callable[[], Iterable[tuple[str, Path]]]) -> Callable[[], None]:
    """Serve ``/metrics`` at ``address`` in prometheus_client's own thread (the plugin is a
    threaded gRPC server already; nothing here touches its state but the records on disk).
    Returns what stops it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VolumeMetrics(volumes))
    server, _ = start_http_server(address.port, addr=address.host or "0.0.0.0", registry=registry)
    log.info("serving the volumes' metrics on %s", address)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
