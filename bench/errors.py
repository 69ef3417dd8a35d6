"""The bench's own failures, kept apart from programming errors so a broken peer does not stop the run."""

from __future__ import annotations


class BenchError(Exception):
    """A peer or the server misbehaved; the run records it against that peer and goes on."""


class ChecksumMismatch(BenchError):
    """Data read back differs from what was written: the one failure a bench must never hide."""


class MountError(BenchError):
    """A peer could not mount, or its daemon died."""


class StoreError(BenchError):
    """An SDK call to RGW failed."""
