"""Medians, the ratio table, issue #16's targets, the JSON record and the PNG chart of one bench.

Ratios read the same way for every performance row: how many times better than the reference
(throughput: peer / ref; time and CPU: ref / peer), so ">1" always means faster, or cheaper. Memory
rows are plain size ratios (peer / ref), where "<1" means leaner. The ratio columns put the first
peer (obsfs, unless ``--peers`` leaves it out) against each other one. Medians, not means: one
slow run on a shared 2-core machine should not move the number.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.metrics import METRICS, SDK, Metric, Results, ratio
from bench.profile import Profile
from bench.targets import judge

LEGEND = ("ratios: A/B = how many times faster (or, for s CPU rows, cheaper) A is than B: throughput A/B, "
          "time B/A,\n        so >1 means A is better; for MiB rows A/B is the memory ratio, <1 means A is leaner.\n"
          "s CPU: utime + stime of the mount's processes over the workload. durable: the store lists the result.\n"
          "n/a: no such workload for that peer; FAIL, BADDATA (wrong data or attributes): see below.")


def medians(results: Results) -> dict[str, dict[str, float]]:
    return {peer: {key: statistics.median(values) for key, values in metrics.items() if values}
            for peer, metrics in results.samples.items()}


def ratio_columns(peers: list[str]) -> list[tuple[str, str]]:
    """(subject, reference) pairs: the first peer against every other one, the SDK included."""
    return [(peers[0], other) for other in peers[1:]]


def fmt_value(metric: Metric, value: float) -> str:
    if metric.seconds:
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def cell(results: Results, meds: dict[str, dict[str, float]], peer: str, metric: Metric) -> str:
    if metric.key in meds.get(peer, {}):
        return fmt_value(metric, meds[peer][metric.key])
    if peer == SDK and not metric.sdk:
        return "n/a"
    failures = results.failures_of(peer, metric.group)
    if any(f.bad_data for f in failures):
        return "BADDATA"
    return "FAIL" if failures else "n/a"


def ratio_cell(meds: dict[str, dict[str, float]], peer: str, ref: str, metric: Metric) -> str:
    value, reference = meds.get(peer, {}).get(metric.key), meds.get(ref, {}).get(metric.key)
    if value is None or reference is None:
        return "-"
    r = ratio(metric, value, reference)
    return "-" if r is None else f"{r:.2f}x"


def table(results: Results, profile: Profile, peers: list[str]) -> str:
    meds = medians(results)
    pairs = ratio_columns(peers)
    header = ["workload", "unit", *peers, *[f"{p}/{r}" for p, r in pairs]]
    rows = [header]
    for metric in METRICS:
        rows.append([metric.title(profile), metric.unit, *[cell(results, meds, p, metric) for p in peers],
                     *[ratio_cell(meds, p, r, metric) for p, r in pairs]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                  strict=True))))
        if n == 0:
            lines.append("-" * len(lines[0]))
    title = (f"obsfs bench, profile {profile.name}: medians of {profile.runs} run(s); "
             "write/read MB/s = 10^6 bytes/s; durable = the store shows the whole object (HEAD/LIST)")
    return "\n".join([title, *lines, LEGEND, targets_text(meds, profile)])


def targets_text(meds: dict[str, dict[str, float]], profile: Profile) -> str:
    lines = [f"issue targets (#issue.item; set for the full profile; this is {profile.name}):"]
    return "\n".join(lines + [verdict.line(profile) for verdict in judge(meds)])


def failures_text(results: Results) -> str:
    if not results.failures:
        return ""
    lines = ["FAILURES:"]
    lines += [f"  {f.peer} run {f.run}, {f.group}: {'DATA MISMATCH: ' if f.bad_data else ''}{f.message}"
              for f in results.failures]
    if any(f.bad_data for f in results.failures):
        lines.append("!! DATA READ BACK DIFFERS FROM WHAT WAS WRITTEN: those numbers are not results !!")
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], profile: Profile, results: Results, peers: list[str],
               text: str) -> None:
    meds = medians(results)
    ratios = {f"{p}/{r}": {m.key: ratio(m, meds[p][m.key], meds[r][m.key]) for m in METRICS
                          if m.key in meds.get(p, {}) and m.key in meds.get(r, {})}
              for p, r in ratio_columns(peers)}
    record = {
        "meta": meta,
        "profile": profile.__dict__,
        "metrics": [{"key": m.key, "label": m.title(profile), "unit": m.unit,
                     "higher_is_better": m.higher_is_better, "group": m.group} for m in METRICS],
        "samples": results.samples,
        "medians": meds,
        "ratios": ratios,
        "targets": [{"item": v.target.item, "target": v.target.describe(profile), "value": v.value, "met": v.met}
                    for v in judge(meds)],
        "failures": [f.__dict__ for f in results.failures],
        "table": text,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def write_chart(path: Path, profile: Profile, results: Results, peers: list[str]) -> None:
    """One small bar chart per metric: medians, with the min-max of the runs as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a bench machine
    import matplotlib.pyplot as plt

    shown = [m for m in METRICS if any(results.samples.get(p, {}).get(m.key) for p in peers)]
    if not shown:
        return
    cols = 4
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = {"obsfs": "#2a7ab9", "s3fs": "#e08a1e", "rclone": "#4a9a4a", SDK: "#888888"}
    for ax, metric in zip(axes.flat, shown, strict=False):
        names, meds, low, high = [], [], [], []
        for peer in peers:
            values = results.samples.get(peer, {}).get(metric.key)
            if not values:
                continue
            med = statistics.median(values)
            names.append(peer)
            meds.append(med)
            low.append(med - min(values))
            high.append(max(values) - med)
        bars = ax.bar(names, meds, yerr=[low, high], capsize=3, color=[colors.get(n, "#555555") for n in names])
        ax.bar_label(bars, labels=[fmt_value(metric, v) for v in meds], fontsize=8)
        better = "higher" if metric.higher_is_better else "lower"
        ax.set_title(f"{metric.title(profile)}\n{metric.unit}, {better} is better", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(f"obsfs bench ({profile.name}, median of {profile.runs}, bars: min-max)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
