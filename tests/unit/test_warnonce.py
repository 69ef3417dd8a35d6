"""Per-object warnings: once per key, and bounded memory for a bucket full of them."""

from __future__ import annotations

import logging

import pytest

from obsfs.warnonce import WarnOnce

log = logging.getLogger("tests.warnonce")


def test_each_key_is_warned_about_once_up_to_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    warn = WarnOnce(log, limit=2)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for key in ["a", "a", "b", "a", "c", "d", "b"]:
            warn(key, "problem with %s", key)
    assert [r.getMessage() for r in caplog.records] == [
        "problem with a", "problem with b",
        "more than 2 objects with the same kind of problem; no longer logged one by one"]
