"""File attributes and their s3fs-compatible encoding in object metadata.

s3fs stores ``mode`` (decimal st_mode with the type bits), ``uid``, ``gid``, ``atime``, ``mtime``
and ``ctime`` as user metadata; we read and write the same names so a bucket can be shared with
s3fs. s3fs 1.90 writes times as whole seconds (``"1700000000"``) when it took them from the clock
and as ``seconds.nanoseconds`` (nine digits) when they came from utimensat; we write the same.
FIFOs, sockets and device nodes are empty objects whose mode has their type bits, as s3fs makes
them. s3fs keeps no device number (its devices show st_rdev 0); ours goes in an ``rdev`` field of
our own, which s3fs ignores (docs/posix.md).
Objects written by other tools have none of these; they get the mount's defaults, and ``exact``
stays False until a HEAD has shown what is really stored.

Other tools also write these names with values we cannot show: a negative or 64-bit mode or
owner, an mtime in milliseconds, text. The kernel, pyfuse3 and our SQLite caches hold 16-bit
modes, 32-bit ids and 64-bit nanoseconds, and a value beyond them raised deep inside a handler
(EIO) or a background task (the daemon died). Such a field gets its default, as if it were
absent, and the object is logged once.
"""

from __future__ import annotations

import logging
import re
import stat
from dataclasses import dataclass, replace

from obsfs.backend.base import ObjectInfo
from obsfs.warnonce import WarnOnce

log = logging.getLogger(__name__)

DIR_CONTENT_TYPE = "application/x-directory"
DEFAULT_FILE_PERM = 0o644
DEFAULT_DIR_PERM = 0o755
NS = 1_000_000_000
MODES = range(0o177777 + 1)  # the kernel keeps st_mode in 16 bits: type and permission bits
IDS = range(2**32 - 1)  # uid_t; 2**32 - 1 is (uid_t)-1, which chown takes as "no change", not an owner
TIMES_NS = range(-(2**63), 2**63)  # nanoseconds in an int64, as pyfuse3 and SQLite's INTEGER hold them
# FUSE carries a device number in 32 bits (fuse_attr.rdev: 12 bits major, 20 minor, the kernel's
# encoding, which glibc's makedev shares for every number Linux has).
RDEVS = range(2**32)
# The kinds a file key can hold; anything else in a stored mode shows as a regular file.
FILE_KINDS = frozenset({stat.S_IFREG, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})
SPECIAL_KINDS = frozenset({stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})

# Plain ASCII decimals, as s3fs writes them. int() would also take "1_000" and other scripts'
# digits, and raises on more than 4,300 digits; no representable value has more than 20.
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
_TIME = re.compile(r"([+-]?[0-9]{1,20})(?:\.([0-9]+))?")
_unusable = WarnOnce(log)


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
    atime_ns: int  # as stored: reads do not update it (the mount behaves as noatime, as s3fs does)
    mtime_ns: int
    ctime_ns: int
    rdev: int = 0  # the device of a character or block device node; 0 for everything else

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
    """Parse s3fs's ``atime``, ``mtime`` or ``ctime``: ``"1700000000"`` or ``"1700000000.123456789"``; None if absent or
    not a time we can show."""
    match = _TIME.fullmatch(value.strip()) if value is not None else None
    if match is None:
        return None
    sec, frac = match.groups()
    ns = int(sec) * NS
    if frac:
        ns += int((frac + "000000000")[:9])  # format_time_ns writes floor(seconds) + a positive fraction
    return ns if ns in TIMES_NS else None


def format_time_ns(ns: int) -> str:
    sec, frac = divmod(ns, NS)
    return f"{sec}.{frac:09d}" if frac else str(sec)


def _integer(value: str | None, valid: range) -> int | None:
    match = _INTEGER.fullmatch(value.strip()) if value is not None else None
    number = int(match[0]) if match is not None else None
    return number if number is not None and number in valid else None


def stored_mode(info: ObjectInfo) -> int | None:
    """The mode an object's metadata holds, type bits included; None if absent or unusable."""
    return _integer((info.metadata or {}).get("mode"), MODES)


def device_number(mode: int, rdev: int) -> int:
    """What st_rdev shows: a device node's number; nothing for other kinds, as Linux file systems
    keep none for them whatever mknod was given."""
    return rdev if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0


def parse_attrs(info: ObjectInfo, *, is_dir: bool, defaults: Defaults) -> tuple[Attrs, list[str]]:
    """Attributes of a stored object, from its metadata where present, else the defaults; and the
    fields stored in a form we cannot show (``name='value'``), which got their defaults too."""
    meta = info.metadata or {}
    mode = _integer(meta.get("mode"), MODES)
    uid = _integer(meta.get("uid"), IDS)
    gid = _integer(meta.get("gid"), IDS)
    atime = parse_time_ns(meta.get("atime"))
    mtime = parse_time_ns(meta.get("mtime"))
    ctime = parse_time_ns(meta.get("ctime"))
    rdev = _integer(meta.get("rdev"), RDEVS)
    parsed = {"mode": mode, "uid": uid, "gid": gid, "atime": atime, "mtime": mtime, "ctime": ctime, "rdev": rdev}
    unusable = [f"{name}={meta[name]!r}" for name, value in parsed.items() if value is None and name in meta]
    # A key ending in "/" is a directory whatever its stored type bits say: other tools write
    # modes without them, or a file's on a dir marker; their permission bits are still good.
    # Any other key holds one of FILE_KINDS; without type bits, or with a directory's, a regular file.
    if is_dir:
        perm = stat.S_IMODE(mode) if mode is not None else DEFAULT_DIR_PERM
        mode = stat.S_IFDIR | perm
    elif mode is None:
        mode = stat.S_IFREG | DEFAULT_FILE_PERM
    elif stat.S_IFMT(mode) not in FILE_KINDS:
        mode = stat.S_IFREG | stat.S_IMODE(mode)
    if mtime is None:
        mtime = int(info.last_modified * NS)
    attrs = Attrs(mode=mode, uid=defaults.uid if uid is None else uid, gid=defaults.gid if gid is None else gid,
                  size=info.size, atime_ns=atime if atime is not None else mtime, mtime_ns=mtime,
                  ctime_ns=ctime if ctime is not None else mtime, rdev=device_number(mode, rdev or 0))
    return attrs, unusable


def attrs_from_object(info: ObjectInfo, *, is_dir: bool, defaults: Defaults) -> Attrs:
    """``parse_attrs``, logging unusable metadata once per key: every HEAD of it would find it again."""
    attrs, unusable = parse_attrs(info, is_dir=is_dir, defaults=defaults)
    if unusable:
        _unusable(info.key, "%r has user metadata obsfs cannot show; using the defaults for: %s",
                  info.key, ", ".join(unusable))
    return attrs


def representable(attrs: Attrs) -> bool:
    """Whether every field fits what the kernel takes. ``parse_attrs`` only makes such values, but
    the metadata cache may hold rows an older obsfs took from metadata it did not check."""
    return (attrs.mode in MODES and attrs.uid in IDS and attrs.gid in IDS and attrs.rdev in RDEVS
            and all(t in TIMES_NS for t in (attrs.atime_ns, attrs.mtime_ns, attrs.ctime_ns)))


def implicit_dir_attrs(defaults: Defaults, mtime_ns: int) -> Attrs:
    """A directory that exists only as a key prefix: nothing is stored, the defaults are the truth."""
    return Attrs(mode=stat.S_IFDIR | DEFAULT_DIR_PERM, uid=defaults.uid, gid=defaults.gid, size=0,
                 atime_ns=mtime_ns, mtime_ns=mtime_ns, ctime_ns=mtime_ns)


def to_metadata(attrs: Attrs) -> dict[str, str]:
    """User metadata in s3fs's format. The SDK adds the x-amz-meta- (or x-obs-meta-) prefix.
    ``rdev`` only for a device node: every other object's metadata stays exactly s3fs's."""
    meta = {
        "mode": str(attrs.mode),
        "uid": str(attrs.uid),
        "gid": str(attrs.gid),
        "atime": format_time_ns(attrs.atime_ns),
        "mtime": format_time_ns(attrs.mtime_ns),
        "ctime": format_time_ns(attrs.ctime_ns),
    }
    if attrs.rdev:
        meta["rdev"] = str(attrs.rdev)
    return meta


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
    uid = defaults.uid if defaults.force_uid else attrs.uid
    if (mode, uid, gid) == (attrs.mode, attrs.uid, attrs.gid):
        return attrs  # as stored, mostly: no copy for every entry of every listing
    return replace(attrs, mode=mode, uid=uid, gid=gid)
