"""What one mount counts, in Prometheus's terms, for dashboards, alerts and ``obsfs status``.

Each daemon serves one mount, so each has its own families (the CSI node plugin adds the volume id
when it collects them all). Counters are bumped where things happen: the FUSE boundary, the
reader, the upload path and every store request; gauges are read from the live state when a
scrape asks, in the trio thread that owns that state. Each series has a lock, so the SDK's worker
threads count their own requests beside the trio thread.

The series and the text format are made here rather than by prometheus_client: importing that
library took 17 ms of the ~300 in which a mount must answer, for three kinds of series and one
page of text (https://prometheus.io/docs/instrumenting/exposition_formats/). The tests read what a
scrape shows with prometheus_client's parser, and the CSI node plugin still uses the library.

Label values are fixed sets (operation names, errno names, outcome names), never keys or paths,
so a bucket with a million objects makes no more series than an empty one.
"""

from __future__ import annotations

import bisect
import collections
import errno
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, Self

# The text format's content type (version 0.0.4, which every Prometheus server reads).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: HEADs on a LAN take ~1 ms, parts of a large upload several seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECENT_ERRORS = 20


def _number(value: float) -> str:
    """A value as the format spells it (Go's names for the infinities and NaN)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(text: str, quote: bool) -> str:
    """The format's escapes: backslash and newline in help texts, also the quote in label values."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _label_set(labels: Sequence[tuple[str, str]]) -> str:
    """``{name="value",...}``, or nothing for no labels."""
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value, True)}"' for name, value in labels) + "}"


class _Metric:
    """A family of series of one kind. With label names, ``labels(...)`` makes (once) and returns
    the series for those values, an object of the same class; without, the family is its own only
    series. Each series guards its figures with its own lock."""

    kind: ClassVar[str]
    suffix: ClassVar[str] = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: list[_Metric] | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Self] = {}
        if registry is not None:
            registry.append(self)

    def labels(self, *values: str) -> Self:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} has the labels {self.labelnames}, not {values}")
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = self._series()
            return child

    def _series(self) -> Self:
        """A new series of this family (a histogram's has the same buckets)."""
        return type(self)(self.name, self.documentation)

    def _samples(self, name: str, labels: list[tuple[str, str]]) -> Iterator[str]:
        """This series' sample lines."""
        raise NotImplementedError

    def lines(self) -> Iterator[str]:
        """The family in the text format: its help, its type, then each series' samples."""
        name = self.name + self.suffix
        yield f"# HELP {name} {_escape(self.documentation, False)}"
        yield f"# TYPE {name} {self.kind}"
        if not self.labelnames:
            yield from self._samples(name, [])
            return
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            yield from child._samples(name, list(zip(self.labelnames, values, strict=True)))


class Counter(_Metric):
    """A number that only grows; the format names its sample ``<name>_total``."""

    kind = "counter"
    suffix = "_total"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: list[_Metric] | None = None) -> None:
        super().__init__(name, documentation, labelnames, registry=registry)
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self.value += amount

    def _samples(self, name: str, labels: list[tuple[str, str]]) -> Iterator[str]:
        yield f"{name}{_label_set(labels)} {_number(self.value)}"


class Gauge(_Metric):
    """A number set, or read from a function at each scrape."""

    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: list[_Metric] | None = None) -> None:
        super().__init__(name, documentation, labelnames, registry=registry)
        self.value = 0.0
        self._read: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = float(value)

    def set_to_current_time(self) -> None:
        self.set(time.time())

    def set_function(self, read: Callable[[], float]) -> None:
        self._read = read

    def _samples(self, name: str, labels: list[tuple[str, str]]) -> Iterator[str]:
        value = self.value if self._read is None else self._read()
        yield f"{name}{_label_set(labels)} {_number(value)}"


class Histogram(_Metric):
    """Observations counted in buckets by upper bound, with their count and sum; the format's
    buckets are cumulative, each labelled ``le`` (less or equal), the last one ``+Inf``."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float] = _LATENCY_BUCKETS, registry: list[_Metric] | None = None) -> None:
        super().__init__(name, documentation, labelnames, registry=registry)
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0

    def _series(self) -> Self:
        return type(self)(self.name, self.documentation, buckets=self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)  # the first bound >= value
        with self._lock:
            self.counts[index] += 1
            self.sum += value

    def _samples(self, name: str, labels: list[tuple[str, str]]) -> Iterator[str]:
        with self._lock:
            counts, total = list(self.counts), self.sum
        cumulative = 0
        for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
            cumulative += count
            yield f"{name}_bucket{_label_set([*labels, ('le', _number(bound))])} {_number(cumulative)}"
        yield f"{name}_count{_label_set(labels)} {_number(cumulative)}"
        yield f"{name}_sum{_label_set(labels)} {_number(total)}"


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
        self.families: list[_Metric] = []
        r = self.families
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
        self.dirs_owed = Gauge(
            "obsfs_dirs_owed", "Directories made here whose marker the store does not hold yet", registry=r)
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
        """Every family in the text format, as a scrape of ``/metrics`` answers."""
        return "".join(line + "\n" for family in self.families for line in family.lines()).encode()
