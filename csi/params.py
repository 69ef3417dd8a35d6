"""StorageClass parameters: which keys a user may set, checked at CreateVolume.

Parameters are obsfs mount options under their ``obsfs mount -o`` names (s3fs names, aliases
included), validated with obsfs's own parsers, so a bad value fails CreateVolume with a message
naming the key instead of failing every later mount. Only per-volume tuning is allowed. Options
that say where the store is (url, region, signature, ...) come from the Secret; options about
node paths and mount flags (cache_dir, logfile, allow_other, ro, ...) are the node service's
choice. Validated options travel to the node in the volume context, unchanged except for the
canonical option name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from csi.errors import InvalidArgument
from csi.naming import bucket_problem
from csi.pathpattern import VolumePath, check_pattern, parse_root
from obsfs.options import ALIASES, KERNEL_FLAGS, PARSERS, split_options, switch_value

SHARED_BUCKET = "bucket"
ROOT_PREFIX = "prefix"  # where in the shared bucket the volumes go
PATH_PATTERN = "pathPattern"  # each volume's prefix below it, from the claim's metadata
# Keys Kubernetes adds on its own; they describe objects and are not options: external-provisioner
# adds csi.storage.k8s.io/pvc/name, pvc/namespace and pv/name with --extra-create-metadata, and
# storage.kubernetes.io/csiProvisionerIdentity to every PV's volumeAttributes (the volume context
# the node gets); kubelet adds csi.storage.k8s.io/pod.name etc. with podInfoOnMount.
CO_KEY_PREFIXES = ("csi.storage.k8s.io/", "storage.kubernetes.io/")
MOUNT_OPTIONS = frozenset({
    "uid", "gid", "umask", "stat_cache_expire", "max_stat_cache_size", "entry_timeout", "attr_timeout",
    "negative_timeout", "dbglevel", "multipart_size", "parallel_count", "deadline", "write_deadline",
    "readwrite_timeout", "attr_index", "keeper",
})


@dataclass(frozen=True)
class VolumeParams:
    """The parsed parameters: where the volume goes and how the node mounts it."""

    shared_bucket: str | None
    mount_options: dict[str, str]
    path: VolumePath = VolumePath()


def parse_parameters(parameters: Mapping[str, str], what: str = "StorageClass parameter") -> VolumeParams:
    """Check every key against the allow-list; raise InvalidArgument naming the first bad key.

    The node checks the volume context the same way (``what`` names it in messages): it holds
    these parameters for a dynamic volume, and the PV's volumeAttributes for a static one.
    """
    shared_bucket = None
    root, pattern = "", None
    options: dict[str, str] = {}
    for key, value in sorted(parameters.items()):
        if key == SHARED_BUCKET:
            problem = bucket_problem(value)
            if problem:
                raise InvalidArgument(f"{what} {key!r}: {problem}")
            shared_bucket = value
        elif key == ROOT_PREFIX:
            root = parse_root(value, key)
        elif key == PATH_PATTERN:
            pattern = check_pattern(value, key)
        elif not key.startswith(CO_KEY_PREFIXES):
            name, value = _mount_option(key, value, what, f"{SHARED_BUCKET}, {ROOT_PREFIX}, {PATH_PATTERN}, ")
            options[name] = value
    if (root or pattern) and shared_bucket is None:
        placed = ROOT_PREFIX if root else PATH_PATTERN
        raise InvalidArgument(f"{what} {placed!r} places volumes in a shared bucket: set {SHARED_BUCKET!r} too")
    return VolumeParams(shared_bucket, options, VolumePath(root, pattern))


def _mount_option(key: str, value: str, what: str, also_allowed: str = "") -> tuple[str, str]:
    """``key`` under its canonical name, if it is on the allow-list and ``value`` parses; a
    yes/no option may come as ``NAME`` or ``noNAME`` with no value."""
    name = ALIASES.get(key, key)
    switch = None if value else switch_value(name)
    if switch is not None:
        name, value = switch
    if name not in MOUNT_OPTIONS:
        raise InvalidArgument(f"unknown {what} {key!r}; allowed: {also_allowed}{', '.join(sorted(MOUNT_OPTIONS))}")
    try:
        PARSERS[name](value)
    except ValueError as exc:
        raise InvalidArgument(f"{what} {key!r}: {exc}") from None
    return name, value


def parse_mount_flags(flags: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The PV's or StorageClass's ``mountOptions`` (kubelet's ``mount_flags``): options from the
    same allow-list as the parameters, and plain flags the kernel takes (``noatime``, ...).

    Read-only is not a mount option here: ``readOnly`` in the pod or a ReadOnlyMany access mode
    says it, and the node service makes the bind mount read-only.
    """
    options: dict[str, str] = {}
    plain: list[str] = []
    for flag in flags:
        for item in split_options(flag):
            key, has_value, value = item.partition("=")
            if not has_value and key in KERNEL_FLAGS:
                plain.append(key)
                continue
            name, value = _mount_option(key, value, "mount option", f"{', '.join(sorted(KERNEL_FLAGS))}, ")
            options[name] = value
    return options, tuple(plain)
