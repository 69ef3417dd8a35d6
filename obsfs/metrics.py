"""What one mount counts, in Prometheus's terms, for dashboards, alerts and ``obsfs status``.

Each daemon serves one mount, so each has its own registry (the CSI node plugin adds the volume id
when it collects them all). Counters are bumped where things happen: the FUSE boundary, the
reader, the upload path and every store request; gauges are read from the live state when a
scrape asks, in the trio thread that owns that state. prometheus_client's counters are
thread-safe, so the SDK's worker threads count their own requests.

Label values are fixed sets (operation names, errno names, outcome names), never keys or paths,
so a bucket with a million objects makes no more series than an empty one.
"""

from __future__ import annotations

import collections
import errno
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest

# A *_created series per counter would double what each volume sends, for a start time that
# obsfs_daemon_start_time_seconds already gives.
disable_created_metrics()

# Seconds: HEADs on a LAN take ~1 ms, parts of a large upload several seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECENT_ERRORS = 20


class RecentErrors(logging.Handler):
    """The last warnings and errors the daemon logged, for ``obsfs status`` (the log file has
    them all; this is what a person asking "what is wrong" wants first)."""

    def __init__(self, size: int = RECENT_ERRORS) -> None:
        super().__init__(logging.WARNING)
        self.entries: collections.deque[tuple[float, str]] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append((record.created, record.getMessage()))


class _Uncounted:
    """Stands in for a counter child when counting is off: ``inc`` does nothing."""

    def inc(self, amount: float = 1) -> None:
        """Nothing: the mount was asked not to count (``-o metrics=off``)."""


class Metrics:
    """The counters and gauges of one mount. ``counting=False`` (``-o metrics=off``) leaves out
    the counting done per FUSE request, per store request and per byte; it exists so that the
    bench can measure what counting costs, and for users who want that cost gone."""

    def __init__(self, counting: bool = True) -> None:
        self.counting = counting
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.read_bytes = Counter(
            "obsfs_read_bytes", "Bytes read: answered to the kernel, and taken from the disk cache or the store",
            ["source"], registry=r)
        self.written_bytes = Counter(
            "obsfs_written_bytes", "Bytes written: taken from the kernel into the write-back cache, and uploaded",
            ["destination"], registry=r)
        self.store_requests = Counter(
            "obsfs_store_requests", "Requests to the object store, by operation and outcome",
            ["operation", "outcome"], registry=r)
        self.store_latency = Histogram(
            "obsfs_store_request_seconds", "Time until the store answered a request (headers, not the body)",
            ["operation"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upload_attempts = Counter(
            "obsfs_upload_attempts", "Uploads of a file's version started, by outcome; failed ones are retried",
            ["outcome"], registry=r)
        self.upload_retries = Counter(
            "obsfs_upload_retries", "Upload attempts that retried an earlier failed one", registry=r)
        self.conflict_copies = Counter(
            "obsfs_conflict_copies", "Files kept under a conflict name because another client changed the "
            "object first", registry=r)
        self.fuse_operations = Counter(
            "obsfs_fuse_operations", "FUSE requests served, by operation", ["operation"], registry=r)
        self.fuse_errors = Counter(
            "obsfs_fuse_errors", "FUSE requests answered with an error, by operation and errno",
            ["operation", "errno"], registry=r)
        self.dirty_bytes = Gauge("obsfs_dirty_bytes", "Bytes waiting for upload or uploading", registry=r)
        self.dirty_files = Gauge("obsfs_dirty_files", "Files waiting for upload or uploading", registry=r)
        self.uploading_files = Gauge("obsfs_uploading_files", "Files being uploaded now", registry=r)
        self.oldest_dirty = Gauge(
            "obsfs_oldest_dirty_seconds", "Age of the oldest write not yet in the store (0: none)", registry=r)
        self.deletes_queued = Gauge(
            "obsfs_deletes_queued", "Keys removed here whose DELETE the store has not confirmed yet", registry=r)
        self.deletes_sent = Counter(
            "obsfs_deletes_sent", "Keys sent in (batched) DELETE requests, by outcome; failed ones are sent again",
            ["outcome"], registry=r)
        self.dirty_limit = Gauge("obsfs_dirty_limit_bytes", "Dirty bytes at which writers wait (max_dirty)",
                                 registry=r)
        self.started = Gauge("obsfs_daemon_start_time_seconds", "When this daemon started (unix time); "
                             "a change means it was restarted", registry=r)
        self.started.set_to_current_time()
        self.cache_bytes = Gauge("obsfs_cache_disk_bytes", "Bytes the read cache holds on disk", registry=r)
        self.cache_limit = Gauge("obsfs_cache_disk_limit_bytes", "The read cache's size limit", registry=r)
        self.store_silence = Gauge(
            "obsfs_store_silence_seconds", "Seconds since the store last answered a request", registry=r)
        # The children the hot paths bump, bound once: labels() costs a lock and a lookup.
        self.to_kernel = self._child(self.read_bytes, "kernel")
        self.from_disk_cache = self._child(self.read_bytes, "disk_cache")
        self.from_store = self._child(self.read_bytes, "store")
        self.from_kernel = self._child(self.written_bytes, "cache")
        self.to_store = self._child(self.written_bytes, "store")
        self.recent_errors = RecentErrors()
        self._last_answer = time.monotonic()
        self.store_silence.set_function(self.store_silence_seconds)
        self._fuse_children: dict[str, Counter] = {}
        self._store_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def _child(self, counter: Counter, label: str) -> Counter | _Uncounted:
        return counter.labels(label) if self.counting else _Uncounted()

    # -- the hot paths keep their labelled children: one dict lookup instead of labels() -----
    def fuse_operation(self, name: str) -> None:
        if not self.counting:
            return
        child = self._fuse_children.get(name)
        if child is None:
            child = self._fuse_children[name] = self.fuse_operations.labels(name)
        child.inc()

    def fuse_error(self, name: str, err: int) -> None:
        if self.counting:
            self.fuse_errors.labels(name, errno.errorcode.get(err, str(err))).inc()

    def store_request(self, operation: str, outcome: str, seconds: float) -> None:
        """One request's answer (called from the SDK's worker threads)."""
        if outcome != "unanswered":
            self._last_answer = time.monotonic()  # kept when not counting: obsfs status shows it
        if not self.counting:
            return
        children = self._store_children.get((operation, outcome))
        if children is None:  # a race between two threads here only makes one of them look up twice
            children = (self.store_requests.labels(operation, outcome), self.store_latency.labels(operation))
            self._store_children[(operation, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def store_silence_seconds(self) -> float:
        return time.monotonic() - self._last_answer

    def watch(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Read ``gauge`` from live state at each scrape."""
        gauge.set_function(read)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
