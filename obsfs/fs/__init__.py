"""The FUSE request handlers: a bucket (or prefix) as a POSIX directory tree.

Every handler runs in the one trio thread and owns all mutable state; code between two awaits
is atomic. Each handler sits behind ``@boundary`` (boundary.py), the single place where our
exceptions become errno values, so no exception can kill the mount.

Objects map 1:1 to keys in s3fs's format (see ``meta.py`` and ``layout.py``). What the kernel
sees comes from ``Entry`` values, cached per path; a listing fills that cache without a HEAD per
entry, and entries whose mode is still a default are handed to the kernel with zero timeouts
(and refreshed by a background HEAD), so a guessed mode is never cached as if it were stored.
"""

from obsfs.fs.core import FsConfig
from obsfs.fs.filesystem import Filesystem

__all__ = ["Filesystem", "FsConfig"]
