"""deploy/monitoring: the alerts and the dashboard ask only for metrics obsfs exports, and the
node plugin's pods are scraped where its metrics are served."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from obsfs.metrics import Metrics
from tests.deploy.kube import DEPLOY, MONITORING, kustomize, one

_NAME = re.compile(r"\b(obsfs_[a-z_]+)\b")


SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exported() -> set[str]:
    """Every series name a daemon or the node plugin can serve (a labelled counter has no
    sample until it first counts, so the names come from the families' types)."""
    names = {"obsfs_csi_metrics_unreachable"}
    for family in text_string_to_metric_families(Metrics().exposition().decode()):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def expressions() -> list[tuple[str, str]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    found = [(r["alert"], r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    found += [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    return [*found, ("volume variable", variable)]


def test_every_expression_names_exported_metrics() -> None:
    known = exported()
    for where, expr in expressions():
        names = set(_NAME.findall(expr))
        assert names, f"{where}: no obsfs metric in {expr!r}"
        assert names <= known, f"{where}: {sorted(names - known)} are not exported (known: {sorted(known)})"


def test_the_alerts_the_operators_need() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    alerts: dict[str, dict[str, Any]] = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"ObsfsUploadsStuck", "ObsfsWriteCacheFull", "ObsfsStoreUnreachable", "ObsfsDaemonRestarted",
            "ObsfsDaemonNotAnswering"} <= set(alerts)
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("info", "warning", "critical"), name
        assert alert["annotations"]["summary"], name


def test_the_kustomization_renders_and_scrapes_the_node_plugin() -> None:
    objs = kustomize(MONITORING)
    dashboard = one(objs, "ConfigMap", "obsfs-csi-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(dashboard["data"]["dashboard.json"])
    monitor = one(objs, "PodMonitor")
    node = one(kustomize(DEPLOY / "kubernetes"), "DaemonSet", "obsfs-csi-node")
    template = node["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    plugin = next(c for c in template["spec"]["containers"] if c["name"] == "obsfs")
    port = next(p for p in plugin["ports"] if p["name"] == monitor["spec"]["podMetricsEndpoints"][0]["port"])
    assert f"--metrics-address=:{port['containerPort']}" in plugin["args"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port["containerPort"])
