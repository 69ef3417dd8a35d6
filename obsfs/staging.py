"""Local files that hold an object's contents while it is being written.

Writes never go to the store piece by piece: they land here, and the whole file is uploaded on
flush, fsync or release. The write-back cache builds on this: a staged file is the unit that
moves clean -> dirty -> uploading -> clean.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


class StagedFile:
    """One local file, open for reading and writing, plus whether it differs from the store."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.dirty = False
        self.base_etag: str | None = None  # the stored version our contents started from

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def write(self, offset: int, data: bytes) -> int:
        written = os.pwrite(self.fd, data, offset)
        self.dirty = True
        return written

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.dirty = True

    def sync(self) -> None:
        os.fsync(self.fd)

    def remove(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class StagingArea:
    """A private directory of staged files, one per object being written."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory

    def new(self) -> StagedFile:
        fd, path = tempfile.mkstemp(prefix="staged-", dir=self.directory)
        return StagedFile(path, fd)
