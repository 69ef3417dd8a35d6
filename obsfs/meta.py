"""File attributes and their s3fs-compatible encoding in object metadata.

s3fs stores ``mode`` (decimal st_mode with the type bits), ``uid``, ``gid`` and ``mtime``
(seconds, optionally ``.nanoseconds``) as user metadata; we read and write the same names so a
bucket can be shared with s3fs. Objects written by other tools have none of these; they get the
mount's defaults, and ``exact`` stays False until a HEAD has shown what is really stored.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace

from obsfs.backend.base import ObjectInfo

DIR_CONTENT_TYPE = "application/x-directory"
DEFAULT_FILE_PERM = 0o644
DEFAULT_DIR_PERM = 0o755
NS = 1_000_000_000


@dataclass(frozen=True)
class Defaults:
    """What to show for objects that carry no metadata, and mount-wide overrides."""

    uid: int
    gid: int
    umask: int | None = None  # applied to every mode shown, as s3fs's umask option
    force_uid: bool = False  # -o uid=: every file shows this owner
    force_gid: bool = False
    # -o fsgroup=G (Kubernetes fsGroup): every entry shows group G with group read/write (and
    # search on directories), as kubelet's recursive chgrp + chmod g+rwX would on a block volume.
    fsgroup: int | None = None


@dataclass(frozen=True)
class Attrs:
    """The POSIX view of one object. Immutable: updates make a new value via ``replace``."""

    mode: int  # full st_mode, type bits included
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def with_changes(self, **changes: int) -> Attrs:
        return replace(self, **changes)


def parse_time_ns(value: str | None) -> int | None:
    """Parse s3fs's ``mtime``: ``"1700000000"`` or ``"1700000000.123456789"``."""
    if not value:
        return None
    sec, _, frac = value.strip().partition(".")
    try:
        ns = int(sec) * NS
        if frac:
            ns += int((frac + "000000000")[:9])  # format_time_ns writes floor(seconds) + a positive fraction
    except ValueError:
        return None
    return ns


def format_time_ns(ns: int) -> str:
    sec, frac = divmod(ns, NS)
    return f"{sec}.{frac:09d}" if frac else str(sec)


def _int_meta(meta: Mapping[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


def attrs_from_object(info: ObjectInfo, *, is_dir: bool, defaults: Defaults) -> Attrs:
    """Attributes of a stored object, from its metadata where present, else the defaults."""
    meta = info.metadata or {}
    mode = _int_meta(meta, "mode")
    if is_dir:
        perm = stat.S_IMODE(mode) if mode is not None else DEFAULT_DIR_PERM
        mode = stat.S_IFDIR | perm
    elif mode is None:
        mode = stat.S_IFREG | DEFAULT_FILE_PERM
    elif stat.S_IFMT(mode) not in (stat.S_IFREG, stat.S_IFLNK):
        mode = stat.S_IFREG | stat.S_IMODE(mode)
    mtime = parse_time_ns(meta.get("mtime"))
    if mtime is None:
        mtime = int(info.last_modified * NS)
    ctime = parse_time_ns(meta.get("ctime"))
    uid = _int_meta(meta, "uid")
    gid = _int_meta(meta, "gid")
    return Attrs(mode=mode, uid=defaults.uid if uid is None else uid, gid=defaults.gid if gid is None else gid,
                 size=info.size, mtime_ns=mtime, ctime_ns=ctime if ctime is not None else mtime)


def implicit_dir_attrs(defaults: Defaults, mtime_ns: int) -> Attrs:
    """A directory that exists only as a key prefix: nothing is stored, the defaults are the truth."""
    return Attrs(mode=stat.S_IFDIR | DEFAULT_DIR_PERM, uid=defaults.uid, gid=defaults.gid, size=0,
                 mtime_ns=mtime_ns, ctime_ns=mtime_ns)


def to_metadata(attrs: Attrs) -> dict[str, str]:
    """User metadata in s3fs's format. The SDK adds the x-amz-meta- (or x-obs-meta-) prefix."""
    return {
        "mode": str(attrs.mode),
        "uid": str(attrs.uid),
        "gid": str(attrs.gid),
        "mtime": format_time_ns(attrs.mtime_ns),
        "ctime": format_time_ns(attrs.ctime_ns),
    }


def shown(attrs: Attrs, defaults: Defaults, *, is_root: bool = False) -> Attrs:
    """Apply the mount-wide overrides (uid=, gid=, umask=) to what the kernel sees.

    The mount point's own mode comes from mp_umask alone, as in s3fs.
    """
    mode = attrs.mode
    gid = defaults.gid if defaults.force_gid else attrs.gid
    if defaults.fsgroup is not None:
        gid = defaults.fsgroup
        group_x = stat.S_IXGRP if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0
        mode |= stat.S_IRGRP | stat.S_IWGRP | group_x
    if defaults.umask is not None and not is_root:
        mode = stat.S_IFMT(mode) | (stat.S_IMODE(mode) & ~defaults.umask & 0o7777)
    return replace(attrs, mode=mode, uid=defaults.uid if defaults.force_uid else attrs.uid, gid=gid)
