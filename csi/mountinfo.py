"""What is mounted where, from ``/proc/self/mountinfo``.

The node service trusts the kernel's table, never a file of its own, to decide whether a path is
staged or published: after a crash or a restart of the plugin, the table is the only truth. Three
facts matter and all three are in it:

- the filesystem type and source: obsfs mounts show ``fuse.obsfs`` and ``obsfs:BUCKET[:/PREFIX]``;
- the device (``major:minor``): a bind mount of a FUSE mount shares its device, which is how a
  publish target is recognised as a bind of *this* staging mount and not of an earlier, dead one;
- the per-mount flags, where a read-only bind shows ``ro``.

Reading the table never touches the mounted filesystems, so it cannot hang on a dead daemon.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

OBSFS_FSTYPE = "fuse.obsfs"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in paths as octal escapes (``\\040``)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    device: str  # "major:minor"
    root: str  # the directory of the filesystem that is mounted here ("/" for a whole mount)
    fstype: str
    source: str
    flags: frozenset[str]  # per-mount flags: ro/rw, nosuid, ...

    @property
    def read_only(self) -> bool:
        return "ro" in self.flags


def parse_line(line: str) -> MountEntry:
    """One line: ``id parent major:minor root mountpoint flags [optional...] - fstype source super``."""
    fields = line.split()
    separator = fields.index("-", 6)
    return MountEntry(mount_point=_unescape(fields[4]), device=fields[2], root=_unescape(fields[3]),
                      fstype=fields[separator + 1], source=_unescape(fields[separator + 2]),
                      flags=frozenset(fields[5].split(",")))


def read_mounts(table: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every mount in this process's mount namespace, in mount order (later entries on top)."""
    with open(table) as stream:
        return [parse_line(line) for line in stream if line.strip()]


def canonical(path: str) -> str:
    """``path`` as mountinfo spells it: symlinks in its parents resolved, the last part untouched.

    Resolving the last part would stat the mount itself, which blocks or fails on a dead daemon.
    """
    parent, name = os.path.split(path.rstrip("/") or "/")
    return os.path.join(os.path.realpath(parent), name) if name else "/"


def mount_at(mounts: Sequence[MountEntry], path: str) -> MountEntry | None:
    """The mount on top at ``path``, or None if ``path`` is not a mount point."""
    path = canonical(path)
    for entry in reversed(mounts):
        if entry.mount_point == path:
            return entry
    return None


def binds_of(mounts: Sequence[MountEntry], staged: MountEntry) -> list[str]:
    """Other mount points that show the same filesystem as ``staged``: its publish targets."""
    return [entry.mount_point for entry in mounts
            if entry.device == staged.device and entry.mount_point != staged.mount_point]
