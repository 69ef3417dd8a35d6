"""The status report's format, listen addresses and store-request labels, without a mount."""

from __future__ import annotations

import dataclasses
import json

import pytest

from obsfs.backend.obs import operation_of, outcome_of
from obsfs.errors import AccessDenied, NotFound, PreconditionFailed, StoreError, TemporaryFailure
from obsfs.metrics import Metrics
from obsfs.options import METRICS_OFF, ListenAddress, parse_listen_address, parse_options
from obsfs.status import Report, render


def report(**changes: object) -> Report:
    fields: dict[str, object] = dict(mountpoint="/mnt/b", source="bucket:/p", dirty_files=0, dirty_bytes=0, uploading=0,
                                     oldest_dirty_seconds=0.0, store_silence_seconds=2.0, cache_bytes=3 << 20,
                                     cache_limit=1 << 30)
    fields.update(changes)
    return Report(**fields)  # type: ignore[arg-type]


def test_a_quiet_mount() -> None:
    assert render(report()).splitlines() == [
        "mount                /mnt/b (bucket:/p)",
        "waiting for upload   0 file(s), 0 B",
        "uploading now        0 file(s)",
        "also waiting         0 new directory(ies), 0 removal(s)",
        "store last answered  2 s ago",
        "read cache           3.0 MiB of 1.0 GiB",
    ]


def test_waiting_files_and_errors() -> None:
    text = render(report(dirty_files=12, dirty_bytes=5 << 30, uploading=2, oldest_dirty_seconds=600.0,
                         pending=[(f"d/f{i}", 1000) for i in range(10)],
                         recent_errors=[(1000.0, "upload of d/f0 failed: no answer")]), now=1090.0)
    lines = text.splitlines()
    assert "waiting for upload   12 file(s), 5.0 GiB, oldest 10 min" in lines
    assert "      1000 B  d/f0" in lines and "  ... and 2 more" in lines
    assert lines[-1] == "  90 s ago: upload of d/f0 failed: no answer"


def test_report_round_trips_through_json() -> None:
    original = report(pending=[("a", 1)], recent_errors=[(1.5, "x")])
    assert Report.from_json(json.loads(json.dumps(dataclasses.asdict(original)))) == original


@pytest.mark.parametrize("text, address", [
    ("unix:/run/obsfs/m.sock", ListenAddress(path="/run/obsfs/m.sock")),
    ("127.0.0.1:9100", ListenAddress(host="127.0.0.1", port=9100)),
    (":9100", ListenAddress(port=9100)),
    ("[::1]:9100", ListenAddress(host="::1", port=9100)),
])
def test_listen_addresses(text: str, address: ListenAddress) -> None:
    assert parse_listen_address(text) == address


@pytest.mark.parametrize("text", ["9100", "host:0", "host:http", "unix:relative.sock", "", "host:70000"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(text)


def test_store_request_labels_are_a_fixed_set() -> None:
    assert operation_of("HEAD some/key with spaces") == "head"
    assert operation_of("upload part 3 of big.bin") == "upload_part"
    assert operation_of("delete batch of 12 keys") == "delete_batch"
    assert operation_of("LIST bucket b") == "list_bucket"
    assert outcome_of(NotFound("x")) == "not_found"
    assert outcome_of(PreconditionFailed("x")) == "precondition_failed"
    assert outcome_of(AccessDenied("x")) == "denied"
    assert outcome_of(TemporaryFailure("x")) == "unanswered"
    assert outcome_of(TemporaryFailure("x", status=503)) == "server_error"
    assert outcome_of(StoreError("x", status=400)) == "error"


def test_metrics_off_counts_nothing_per_request() -> None:
    metrics = Metrics(counting=False)
    metrics.fuse_operation("write")
    metrics.fuse_error("lookup", 2)
    metrics.store_request("head", "ok", 0.001)
    metrics.to_kernel.inc(4096)
    text = metrics.exposition().decode()
    assert "obsfs_fuse_operations_total{" not in text and "obsfs_store_requests_total{" not in text
    assert "obsfs_read_bytes_total{" not in text
    assert metrics.store_silence_seconds() < 60  # obsfs status still knows when the store last answered
    counting = Metrics()
    counting.fuse_operation("write")
    assert 'obsfs_fuse_operations_total{operation="write"} 1.0' in counting.exposition().decode()


def test_metrics_off_is_an_option() -> None:
    assert parse_options(["metrics=off"]).metrics == METRICS_OFF
    assert parse_options(["metrics=:9100"]).metrics == ListenAddress(port=9100)
