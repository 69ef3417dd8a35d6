"""The bench's own failures, kept apart from programming errors so a broken peer does not stop the run."""

from __future__ import annotations


class BenchError(Exception):
    """A peer or the server misbehaved; the run records it against that peer and goes on."""


class WrongAnswer(BenchError):
    """A peer answered, but not what the store holds: the one failure a bench must never hide."""


class ChecksumMismatch(WrongAnswer):
    """Data read back differs from what was written."""


class AttributeMismatch(WrongAnswer):
    """A listing shows a mode, owner, size or mtime other than the one stored."""


class MountError(BenchError):
    """A peer could not mount, or its daemon died."""


class StoreError(BenchError):
    """An SDK call to RGW failed."""
