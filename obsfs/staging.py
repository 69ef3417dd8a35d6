"""Local files that hold an object's contents while it is written and until it is uploaded.

Writes never go to the store piece by piece: they land here. A staged file moves
clean -> dirty (a write) -> uploading -> clean (the store has this version) or back to dirty (a
write during the upload, or a failed upload). ``version`` counts changes, ``synced_version`` is
the version the store is known to have, so "dirty" needs no separate flag that could disagree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


# Spare files made ahead by a thread (``make_spares``): creating a file costs this filesystem's
# trio thread 0.1-0.2 ms of CPU on ext4 (inode allocation), moving one in from the spare directory
# 5 us. A refill starts when fewer than SPARES_LOW are left; each costs one thread hand-off.
SPARES = 32
SPARES_LOW = 16


class StagingArea:
    """A private directory of staged files, one per object being written.

    Spare files wait empty in a sibling directory (``<staging>.spare``), never in the staging
    directory itself: what is there is always some file's contents, which recovery reads by
    name. A spare is renamed in when it is handed out. None holds data, so those a crash leaves
    are deleted when the next daemon opens the staging area.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self.spare_directory = directory + ".spare"
        shutil.rmtree(self.spare_directory, ignore_errors=True)
        os.makedirs(self.spare_directory, mode=0o700, exist_ok=True)
        self._spares: list[StagedFile] = []
        self._refilling = False

    def new(self) -> StagedFile:
        if self._spares:
            staged = self._spares.pop()
            path = os.path.join(self.directory, staged.name)
            try:
                os.rename(staged.path, path)
            except OSError:
                staged.remove()
                raise
            staged.path = path
            return staged
        return self._create(self.directory)

    @staticmethod
    def _create(directory: str) -> StagedFile:
        path = os.path.join(directory, uuid.uuid4().hex)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return StagedFile(path, fd)

    def spares_wanted(self) -> int:
        """How many spares a refill should make now: 0 while one is under way or enough are left.
        Otherwise the caller runs ``make_spares`` in a thread and hands its result to ``add_spares``."""
        if self._refilling or len(self._spares) >= SPARES_LOW:
            return 0
        self._refilling = True
        return SPARES - len(self._spares)

    def make_spares(self, count: int) -> list[StagedFile]:
        """Create ``count`` empty files in the spare directory; runs in a thread, so it touches no
        state of ours. Stops at the first failure (a full disk): ``new`` then creates its own."""
        made: list[StagedFile] = []
        with contextlib.suppress(OSError):
            for _ in range(count):
                made.append(self._create(self.spare_directory))
        return made

    def add_spares(self, made: list[StagedFile]) -> None:
        self._spares.extend(made)
        self._refilling = False

    def close(self) -> None:
        """Delete the spare files (the unmount)."""
        while self._spares:
            self._spares.pop().remove()

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
