"""What every ``obsfs`` command needs before it knows which process it will become: the mount
point's check, the state files in the runtime dir, and the options a mount is made with.

Nothing here imports pyfuse3, trio or the SDK (together about 0.2 s of imports). A default mount
forks its first daemon, which imports them, and becomes the keeper (stdlib only, a fresh image
that must stay small): were ``obsfs mount`` to import the filesystem first, the keeper would
carry it, and the imports could not overlap the keeper's start and mount.
``obsfs umount`` and ``obsfs status`` need none of them either, and neither does the CSI node.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from obsfs.errors import ConfigError
from obsfs.options import MountOptions

# Flags mount(8) understands that libfuse hands to the kernel. Not ``suid`` and ``dev``: libfuse
# mounts nosuid,nodev unless told otherwise, and mount.fuse3 tells it so for every fstab line
# that does not say nosuid,nodev. Modes and owners here come from object metadata that anyone
# who may write to the bucket sets, so honouring them would let a bucket writer plant a
# setuid-root program or a device node on this host.
FUSE_KERNEL_FLAGS = {"nosuid", "nodev", "noexec", "exec", "noatime", "atime"}


@dataclass(frozen=True)
class MountSpec:
    bucket: str
    prefix: str
    mountpoint: str
    options: MountOptions
    keeper_socket: str | None = None  # the daemon of a keeper: serve the connection it holds


def keeper_wanted(opts: MountOptions, foreground: bool) -> bool:
    """Whether this mount gets a keeper. By default it does, except in the foreground (``-f``):
    there the process the user started is the one that serves, logs to the terminal, and ends
    the mount on Ctrl-C, as with s3fs. ``-o keeper`` or ``-o nokeeper`` decides either way."""
    return not foreground if opts.keeper is None else opts.keeper


def runtime_dir() -> Path:
    """Where pid and status files live, so ``obsfs umount`` can find the daemon of a mount point."""
    base = Path("/run/obsfs") if os.geteuid() == 0 else Path(tempfile.gettempdir()) / f"obsfs-{os.getuid()}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def state_file(mountpoint: str, suffix: str) -> Path:
    """The pid or status file of the mount at ``mountpoint``, as a user names it."""
    return state_path(os.path.realpath(mountpoint), suffix)


def state_path(real_mountpoint: str, suffix: str) -> Path:
    """The same for a mount point already resolved. The daemon must use this one: resolving
    stats the mount point, which, once mounted, only the daemon's own thread can answer (with
    ``attr_timeout=0`` the kernel asks every time, and the daemon would wait for itself)."""
    digest = hashlib.sha256(real_mountpoint.encode()).hexdigest()[:16]
    return runtime_dir() / f"{digest}.{suffix}"


def write_state(real_mountpoint: str, suffix: str, text: str) -> None:
    path = state_path(real_mountpoint, suffix)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def remove_state(real_mountpoint: str, suffix: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(real_mountpoint, suffix).unlink()


def check_mountpoint(path: str, allow_nonempty: bool) -> str:
    """The mount point must be an existing, empty directory that is not already mounted."""
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise ConfigError(f"mount point {path} does not exist; create it with: mkdir -p {path}") from None
    except OSError as exc:
        raise ConfigError(f"mount point {path} is not usable: {exc.strerror} (a stale mount? "
                          f"try: fusermount3 -u {path})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"mount point {path} is not a directory")
    if os.path.ismount(real):
        raise ConfigError(f"{path} is already a mount point; unmount it first")
    if not allow_nonempty and os.listdir(real):
        raise ConfigError(f"mount point {path} is not empty (use -o nonempty to mount over it)")
    return real


def fuse_options(spec: MountSpec) -> set[str]:
    """The options of the FUSE session. ``default_permissions`` is also all of pyfuse3's
    ``default_options``, which is not imported here (a unit test checks that it stays so)."""
    opts = spec.options
    source = spec.bucket + (f":/{spec.prefix}" if spec.prefix else "")
    fsname = opts.fsname or f"obsfs:{source}"
    options = {f"fsname={fsname}", "subtype=obsfs", "default_permissions"}
    if opts.allow_other:
        options.add("allow_other")
    if opts.ro:
        options.add("ro")
    options.update(flag for flag in opts.kernel_flags if flag in FUSE_KERNEL_FLAGS)
    return options


def keeper_mount_options(spec: MountSpec) -> list[str]:
    """What the keeper gives fusermount3: the options libfuse would mount with, including the
    flags it adds by itself (nosuid,nodev always, as ``FUSE_KERNEL_FLAGS`` explains; rw)."""
    options = fuse_options(spec) | {"nosuid", "nodev"}
    if not spec.options.ro:
        options.add("rw")
    return sorted(options)
