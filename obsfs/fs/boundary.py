"""The one place where the filesystem's exceptions become errno values.

Each handler sits behind ``@boundary``, so no exception can kill the mount: pyfuse3 ends the
session on anything but a FUSEError. It is also the one place where a reply is about to go out,
so it commits the inode numbers the handler gave out.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import pyfuse3

from obsfs.errors import AccessDenied, BadCredentials, NotFound, ObsfsError
from obsfs.layout import InvalidName

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ReadOnly(ObsfsError):
    """A write on a read-only mount."""


class FsError(ObsfsError):
    """A POSIX condition found by the filesystem logic itself (ENOTEMPTY, EISDIR, ...)."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or os.strerror(err))
        self.errno = err


def errno_for(exc: ObsfsError) -> int:
    """The one mapping from our exception types to errno."""
    if isinstance(exc, FsError):
        return exc.errno
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, AccessDenied | BadCredentials):
        return errno.EACCES
    if isinstance(exc, ReadOnly):
        return errno.EROFS
    if isinstance(exc, InvalidName):
        return errno.ENAMETOOLONG if exc.too_long else errno.EINVAL
    return errno.EIO


# The names pyfuse3's Operations give the parameters that carry an inode number or a file handle.
INODE_PARAMETERS = frozenset({"inode", "parent_inode", "parent_inode_old", "parent_inode_new", "new_parent_inode"})
HANDLE_PARAMETER = "fh"


def _numbers_in(fn: Callable[..., Any]) -> tuple[list[int], list[int]]:
    """Positions (after ``self``) of a handler's inode and file handle parameters."""
    names = list(inspect.signature(fn).parameters)[1:]
    return ([i for i, n in enumerate(names) if n in INODE_PARAMETERS],
            [i for i, n in enumerate(names) if n == HANDLE_PARAMETER])


def boundary(fn: F) -> F:
    """Translate every exception of a handler into a FUSEError, logging unexpected ones once."""

    name = fn.__name__
    inodes, handles = _numbers_in(fn)

    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any) -> Any:
        self.on_request()
        metrics = self.metrics
        metrics.fuse_operation(name)
        try:
            # Numbers an earlier daemon of this kernel session handed out (-o keeper) are made
            # known here, once, so that the handlers need not care (FsCore.revive_inode).
            for index in inodes:
                await self.revive_inode(args[index])
            for index in handles:
                if args[index] is not None:
                    await self.revive_handle(args[index])
            return await fn(self, *args)
        except pyfuse3.FUSEError as exc:
            metrics.fuse_error(name, exc.errno)
            raise
        except OSError as exc:  # the cache disk: ENOSPC, EIO, ...
            log.warning("%s: local cache: %s", name, exc)
            err = exc.errno or errno.EIO
        except ObsfsError as exc:
            err = errno_for(exc)
            level = logging.DEBUG if err in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY) else logging.WARNING
            log.log(level, "%s: %s", name, exc)
        except Exception:
            log.exception("%s: unexpected error, answering EIO", name)
            err = errno.EIO
        finally:
            # pyfuse3 replies once the handler returns: every inode number in that reply must be
            # on disk by then, for a daemon that takes over this kernel session (inodemap.py).
            self.inodes.numbers.commit()
        metrics.fuse_error(name, err)
        raise pyfuse3.FUSEError(err) from None

    return cast(F, wrapper)
