"""obsfs.metrics writes Prometheus's text format itself: what prometheus_client's parser (the
reference reader, which the CSI node plugin uses too) reads back from it."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from obsfs.metrics import Counter, Gauge, Histogram, Metrics, _Metric


def parse(families: list[_Metric]) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    text = "".join(line + "\n" for family in families for line in family.lines())
    return {f.name: (f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def test_counters_gauges_and_escapes() -> None:
    families: list[_Metric] = []
    plain = Counter("t_plain", "A help with a \\ and a\nnewline", registry=families)
    labelled = Counter("t_labelled", "Labelled", ["kind", "how"], registry=families)
    Counter("t_unused", "Never counted", ["kind"], registry=families)
    gauge = Gauge("t_gauge", "Read at each scrape", registry=families)
    plain.inc(1e20)
    labelled.labels('a "quoted"\\ value\n', "x").inc()
    labelled.labels('a "quoted"\\ value\n', "x").inc(2.5)
    gauge.set_function(lambda: math.inf)
    parsed = parse(families)
    assert parsed["t_plain"] == ("counter", "A help with a \\ and a\nnewline", [("t_plain_total", {}, 1e20)])
    assert parsed["t_labelled"][2] == [("t_labelled_total", {"kind": 'a "quoted"\\ value\n', "how": "x"}, 3.5)]
    assert parsed["t_unused"] == ("counter", "Never counted", [])  # the family is known before it counts
    assert parsed["t_gauge"][2] == [("t_gauge", {}, math.inf)]


def test_histogram_buckets_are_cumulative() -> None:
    families: list[_Metric] = []
    seconds = Histogram("t_seconds", "Latency", ["op"], buckets=(0.01, 0.1, 1.0), registry=families)
    for value in (0.005, 0.01, 0.05, 2.0):
        seconds.labels("get").observe(value)
    kind, _, samples = parse(families)["t_seconds"]
    assert kind == "histogram"
    assert [(name, labels.get("le"), value) for name, labels, value in samples] == [
        ("t_seconds_bucket", "0.01", 2), ("t_seconds_bucket", "0.1", 3), ("t_seconds_bucket", "1.0", 3),
        ("t_seconds_bucket", "+Inf", 4), ("t_seconds_count", None, 4), ("t_seconds_sum", None, 2.065)]
    assert all(labels["op"] == "get" for _, labels, _ in samples)


def test_a_mounts_families_parse() -> None:
    metrics = Metrics()
    metrics.store_request("head", "ok", 0.002)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert families["obsfs_store_requests"].samples[0].labels == {"operation": "head", "outcome": "ok"}
    assert families["obsfs_daemon_start_time_seconds"].samples[0].value > 0
