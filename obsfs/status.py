"""``obsfs status``: one mount's state as a person reads it, from the daemon's ``/status``.

The daemon makes the report (``report``) from its live state; the CLI prints it (``render``).
Both are plain functions of plain values, so the format is tested without a mount.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

SHOWN_FILES = 10


@dataclass
class Report:
    """What a person asks first: is anything waiting, is the store answering, what went wrong."""

    mountpoint: str
    source: str
    dirty_files: int
    dirty_bytes: int
    uploading: int
    oldest_dirty_seconds: float
    store_silence_seconds: float
    cache_bytes: int
    cache_limit: int
    # Also owed to the store, journaled like the files: markers of directories made here, and
    # removals. (Defaults: a daemon from before they were reported leaves them out.)
    dirs_waiting: int = 0
    deletes_waiting: int = 0
    pending: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes), oldest first
    recent_errors: list[tuple[float, str]] = field(default_factory=list)  # (unix time, message)

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Report:
        report = Report(**doc)
        report.pending = [(path, size) for path, size in report.pending]
        report.recent_errors = [(when, message) for when, message in report.recent_errors]
        return report


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(report: Report, now: float | None = None) -> str:
    """The report as a short table, then the files waiting and the last errors."""
    now = time.time() if now is None else now
    rows = [
        ("mount", f"{report.mountpoint} ({report.source})"),
        ("waiting for upload", f"{report.dirty_files} file(s), {_size(report.dirty_bytes)}"
                               + (f", oldest {_age(report.oldest_dirty_seconds)}" if report.dirty_files else "")),
        ("uploading now", f"{report.uploading} file(s)"),
        ("also waiting", f"{report.dirs_waiting} new directory(ies), {report.deletes_waiting} removal(s)"),
        ("store last answered", f"{_age(report.store_silence_seconds)} ago"),
        ("read cache", f"{_size(report.cache_bytes)} of {_size(report.cache_limit)}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if report.pending:
        lines.append("")
        lines.append("waiting for upload (oldest first):")
        lines += [f"  {_size(size):>10}  {path}" for path, size in report.pending[:SHOWN_FILES]]
        if report.dirty_files > SHOWN_FILES:
            lines.append(f"  ... and {report.dirty_files - SHOWN_FILES} more")
    if report.recent_errors:
        lines.append("")
        lines.append("last errors:")
        lines += [f"  {_age(max(0.0, now - when))} ago: {message}" for when, message in report.recent_errors]
    return "\n".join(lines)
