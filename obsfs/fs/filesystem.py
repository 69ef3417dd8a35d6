"""The FUSE request handlers of one mount, put together.

The handlers are split by concern into layers, each a class in its own module that builds on the
one below: ``core`` (state, caches, lookups), ``uploads`` (write-back), ``files`` (open files),
``attributes``, ``listing``, ``namespace`` (create and remove names) and ``rename``. A chain,
not independent mixins, so that each layer's use of the ones below is type-checked.
"""

from __future__ import annotations

import pyfuse3

from obsfs.fs.boundary import boundary
from obsfs.fs.core import BLOCK
from obsfs.fs.rename import Renames


class Filesystem(Renames):
    """pyfuse3 handlers over one bucket or prefix."""

    @boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        # Buckets have no size limit that S3 APIs report; show a large, constant capacity.
        out = pyfuse3.StatvfsData()
        out.f_bsize = BLOCK
        out.f_frsize = BLOCK
        out.f_blocks = out.f_bfree = out.f_bavail = (1 << 48) // BLOCK
        out.f_files = out.f_ffree = out.f_favail = 1 << 32
        out.f_namemax = 255
        return out
