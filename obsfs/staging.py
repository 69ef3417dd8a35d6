"""Local files that hold an object's contents while it is written and until it is uploaded.

Writes never go to the store piece by piece: they land here. A staged file moves
clean -> dirty (a write) -> uploading -> clean (the store has this version) or back to dirty (a
write during the upload, or a failed upload). ``version`` counts changes, ``synced_version`` is
the version the store is known to have, so "dirty" needs no separate flag that could disagree.
"""

from __future__ import annotations

import contextlib
import os
import uuid


class StagedFile:
    """One local file, open for reading and writing, plus how it relates to the stored object."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.version = 0
        self.synced_version = 0
        self.base_etag: str | None = None  # the stored version our contents started from
        self.journaled = False  # a journal row exists for it
        self.journaled_version = -1  # the version the last commit fsynced and journaled
        # Written only from start to end so far (a new or truncated file): its leading parts are
        # final and may be uploaded before close (partstream.py).
        self.appending = True
        # Kept as the file changes, all of which goes through this class (a download is adopted
        # after it), so a write or a getattr needs no fstat.
        self._size = 0

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def dirty(self) -> bool:
        return self.version != self.synced_version

    @property
    def committed(self) -> bool:
        """Nothing changed since the last commit (close, fsync): its data is on disk, its row current."""
        return self.journaled and self.journaled_version == self.version

    def mark_dirty(self) -> None:
        self.version += 1

    def size(self) -> int:
        return self._size

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def write(self, offset: int, data: bytes) -> int:
        written = os.pwrite(self.fd, data, offset)
        self.mark_dirty()
        if offset != self._size:
            self.appending = False
        self._size = max(self._size, offset + written)
        return written

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.mark_dirty()
        self.appending = size == 0
        self._size = size

    def adopt_contents(self) -> None:
        """The file was filled from elsewhere (a download, an earlier daemon): not a fresh append."""
        self._size = os.fstat(self.fd).st_size
        self.appending = self._size == 0

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
        path = os.path.join(self.directory, uuid.uuid4().hex)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return StagedFile(path, fd)

    def reopen(self, name: str) -> StagedFile | None:
        """A staged file left by an earlier daemon (crash recovery); None if it is gone."""
        path = os.path.join(self.directory, name)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        staged = StagedFile(path, fd)
        staged.adopt_contents()
        staged.version = 1  # dirty: the journal says the store does not have it
        staged.journaled = True
        return staged

    def rewrite(self, name: str, data: bytes) -> None:
        """Make the staged file ``name`` hold exactly ``data`` again (after a reboot that may have
        torn it, from its journal row); not fsynced: the row still holds the same bytes."""
        fd = os.open(os.path.join(self.directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def names(self) -> set[str]:
        return set(os.listdir(self.directory))
