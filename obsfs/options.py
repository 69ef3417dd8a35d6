"""``-o`` mount options: parsed and validated into one typed value before anything runs.

Names follow s3fs where s3fs has the option, so existing fstab lines and CSI parameters carry
over. An unknown option is an error that names it: silently ignoring ``ro`` misspelled as ``r0``
would mount read-write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from obsfs.errors import ConfigError

# Plain mount(8) flags, as fstab, ``mount -t fuse.obsfs`` (through mount.fuse3) and kubelet pass
# them. mount.fuse3 adds ``dev,suid`` to every mount that does not say ``nodev,nosuid``. The
# FUSE ones of these go to the kernel (``runtime.FUSE_KERNEL_FLAGS``); the rest are accepted and
# ignored, so that an fstab line written for any filesystem mounts. ``nosymfollow`` is not here:
# libfuse 3.14 cannot set it, and a security flag silently dropped is worse than an error.
KERNEL_FLAGS = {"rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "atime",
                "relatime", "norelatime", "strictatime", "nostrictatime", "diratime", "nodiratime",
                "lazytime", "nolazytime", "sync", "async", "dirsync", "iversion", "noiversion", "mand",
                "nomand", "silent", "loud", "symfollow",
                # For mount(8), mount.fuse3 or systemd; they reach us only when given to obsfs itself.
                "_netdev", "nofail", "auto", "noauto", "user", "nouser", "users", "owner", "group",
                "defaults"}
# Options of other programs that carry a value: ``x-systemd.mount-timeout=30``, ``comment=...``.
FOREIGN_PREFIXES = ("x-", "comment=")
DBG_LEVELS = {"crit": "CRITICAL", "critical": "CRITICAL", "err": "ERROR", "error": "ERROR",
              "warn": "WARNING", "warning": "WARNING", "info": "INFO", "dbg": "DEBUG", "debug": "DEBUG"}


def _bool(value: str | None) -> bool:
    if value is None or value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected no value, true or false")


def _octal(value: str | None) -> int:
    if value is None:
        raise ValueError("needs an octal value")
    mask = int(value, 8)
    if not 0 <= mask <= 0o7777:
        raise ValueError("must be between 0 and 7777")
    return mask


def _int(value: str | None) -> int:
    if value is None:
        raise ValueError("needs a value")
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _float(value: str | None) -> float:
    if value is None:
        raise ValueError("needs a value")
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _str(value: str | None) -> str:
    if not value:
        raise ValueError("needs a value")
    return value


def _cache_mb(value: str | None) -> int:
    return _int(value) << 20


def _names(value: str | None) -> list[str]:
    names = [n for n in (value or "").split(":") if n]
    if not names or any("/" in n or n in (".", "..") for n in names):
        raise ValueError("expected NAME[:NAME...], names without '/'")
    return names


def _signature(value: str | None) -> str:
    if value not in ("obs", "v2", "v4"):
        raise ValueError("must be obs, v2 or v4")
    return value


def _dbglevel(value: str | None) -> str:
    if value is None or value.lower() not in DBG_LEVELS:
        raise ValueError(f"must be one of {', '.join(sorted(DBG_LEVELS))}")
    return DBG_LEVELS[value.lower()]


def _size_mb(value: str | None) -> int:
    number = _int(value)
    if number < 5:
        raise ValueError("must be at least 5 (MB), the smallest S3 part size")
    return number << 20


def _ssl_verify(value: str | None) -> bool | str:
    if value is None:
        return True
    try:
        return _bool(value)
    except ValueError:
        return value  # a CA bundle path


@dataclass(frozen=True)
class ListenAddress:
    """Where to listen: a unix socket path, or a TCP host and port."""

    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host or '*'}:{self.port}"


METRICS_OFF = "off"


def _metrics(value: str | None) -> ListenAddress | str:
    """``off`` (count nothing per request) or where to serve the metrics."""
    return METRICS_OFF if value == METRICS_OFF else parse_listen_address(value)


def parse_listen_address(text: str | None) -> ListenAddress:
    """``unix:/PATH``, ``HOST:PORT``, ``:PORT`` or ``[IPv6]:PORT``."""
    text = text or ""
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not os.path.isabs(path):
            raise ValueError(f"{text!r}: the socket path must be absolute")
        return ListenAddress(path=path)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdecimal() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT, :PORT or unix:/PATH")
    return ListenAddress(host=host.strip("[]"), port=int(port))


@dataclass
class MountOptions:
    """Everything ``-o`` can set. Field names are the option names (aliases in ``ALIASES``)."""

    url: str = "https://obs.myhuaweicloud.com"
    region: str = "us-east-1"
    passwd_file: str | None = None
    use_path_request_style: bool = False
    signature: str = "v4"
    ssl_verify: bool | str = False
    allow_other: bool = False
    uid: int | None = None
    gid: int | None = None
    fsgroup: int | None = None
    umask: int | None = None
    mp_umask: int | None = None
    ro: bool = False
    nonempty: bool = False
    stat_cache_expire: float = 60.0
    max_stat_cache_size: int = 100_000
    entry_timeout: float = 60.0
    attr_timeout: float = 60.0
    negative_timeout: float = 5.0
    dbglevel: str = "WARNING"
    logfile: str | None = None
    cache_dir: str | None = None
    multipart_size: int = 16 << 20
    parallel_count: int = 8
    deadline: float = 30.0
    write_deadline: float = 300.0
    readwrite_timeout: float = 20.0
    hide: list[str] = field(default_factory=list)
    cache_size: int = 1 << 30
    read_memory: int = 32 << 20
    upload_workers: int = 16
    upload_delay: float = 0.5
    max_dirty: int = 1 << 30
    drain_deadline: float = 600.0
    fsname: str | None = None
    # Where Prometheus may scrape this mount (not served by default), or "off": no counting at all.
    metrics: ListenAddress | str | None = None
    # A keeper holds the FUSE connection, so that the daemon can die or be replaced under a live
    # mount (docs/survival.md). None: yes, except in the foreground (``runtime.keeper_wanted``).
    keeper: bool | None = None
    # Keep an attribute index per directory in the bucket (obsfs/indexing.py, docs/posix.md).
    attr_index: bool = False
    kernel_flags: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"option url: {self.url!r} must start with http:// or https://")
        if self.parallel_count < 1 or self.upload_workers < 1:
            raise ConfigError("options parallel_count and upload_workers must be at least 1")


PARSERS: dict[str, Callable[[str | None], Any]] = {
    "url": _str, "region": _str, "passwd_file": _str, "use_path_request_style": _bool,
    "signature": _signature, "ssl_verify": _ssl_verify, "allow_other": _bool, "uid": _int, "gid": _int, "fsgroup": _int,
    "umask": _octal, "mp_umask": _octal, "ro": _bool, "nonempty": _bool, "stat_cache_expire": _float,
    "max_stat_cache_size": _int, "entry_timeout": _float, "attr_timeout": _float,
    "negative_timeout": _float, "dbglevel": _dbglevel, "logfile": _str, "cache_dir": _str,
    "multipart_size": _size_mb, "parallel_count": _int, "deadline": _float, "write_deadline": _float,
    "readwrite_timeout": _float, "upload_workers": _int, "cache_size": _cache_mb, "hide": _names,
    "read_memory": _cache_mb,
    "upload_delay": _float,
    "max_dirty": _size_mb, "drain_deadline": _float, "fsname": _str,
    "metrics": _metrics,
    "keeper": _bool,
    "attr_index": _bool,
}
ALIASES = {"endpoint_url": "url", "use_cache": "cache_dir", "connect_timeout": "readwrite_timeout",
           "sigv": "signature"}
assert set(PARSERS) == {f.name for f in fields(MountOptions)} - {"kernel_flags"}
# Yes/no options: NAME alone means yes and noNAME means no, as mount(8) reads noatime.
SWITCHES = frozenset(name for name, parser in PARSERS.items() if parser is _bool)


def switch_value(item: str) -> tuple[str, str] | None:
    """``NAME`` or ``noNAME`` of a yes/no option as (NAME, "true" or "false"); None for anything else."""
    if item in SWITCHES:
        return item, "true"
    if item.startswith("no") and item[2:] in SWITCHES:
        return item[2:], "false"
    return None


def split_options(text: str) -> list[str]:
    """Split ``a=1,b,c=x`` allowing ``\\,`` for a literal comma inside a value."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def join_option(name: str, value: str) -> str:
    """``name=value`` escaped for ``split_options``: a prefix may hold commas and backslashes."""
    escaped = value.replace("\\", "\\\\").replace(",", "\\,")
    return f"{name}={escaped}"


def parse_options(option_strings: list[str]) -> MountOptions:
    """Parse every ``-o`` argument into one ``MountOptions``; raises ConfigError naming the option."""
    opts = MountOptions()
    for text in option_strings:
        for item in split_options(text):
            if item.startswith(FOREIGN_PREFIXES):
                continue
            name, has_value, value = item.partition("=")
            name = ALIASES.get(name, name)
            switch = None if has_value else switch_value(name)
            if switch is not None:
                (name, value), has_value = switch, "="
            if name in KERNEL_FLAGS and not has_value:
                if name != "rw":
                    opts.kernel_flags.append(name)
                continue
            parser = PARSERS.get(name)
            if parser is None:
                raise ConfigError(f"unknown mount option {name!r}")
            try:
                setattr(opts, name, parser(value if has_value else None))
            except ValueError as exc:
                raise ConfigError(f"option {name}: {exc}") from None
    opts.check()
    return opts


def parse_source(source: str) -> tuple[str, str]:
    """``BUCKET[:/PREFIX]`` into (bucket, prefix without slashes)."""
    bucket, _, prefix = source.partition(":")
    if not bucket:
        raise ConfigError(f"{source!r}: expected BUCKET or BUCKET:/PREFIX")
    prefix = prefix.strip("/")
    if ".." in prefix.split("/"):
        raise ConfigError(f"{source!r}: the prefix must not contain '..'")
    return bucket, prefix


def default_owner(opts: MountOptions) -> tuple[int, int]:
    return (os.getuid() if opts.uid is None else opts.uid, os.getgid() if opts.gid is None else opts.gid)
