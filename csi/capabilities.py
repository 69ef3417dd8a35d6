"""Which VolumeCapabilities obsfs volumes can satisfy: mount access in every access mode.

A bucket is a filesystem that many nodes can mount read-write at once, so every defined access
mode is supported (Kubernetes' RWO, RWOP, RWX and ROX included). Block access never is: there is
no block device behind a bucket. ``fs_type`` is ignored, since the filesystem is always obsfs and
older provisioners fill in "ext4" on their own.
"""

from __future__ import annotations

from collections.abc import Sequence

from csi.errors import InvalidArgument
from csi.v1 import csi_pb2

_MODE = csi_pb2.VolumeCapability.AccessMode.Mode
SUPPORTED_MODES = frozenset(_MODE.values()) - {_MODE.Value("UNKNOWN")}


def capability_problem(capability: csi_pb2.VolumeCapability) -> str | None:
    """Why obsfs cannot serve ``capability``, or None if it can."""
    if capability.HasField("block"):
        return "block access is not supported: obsfs volumes are filesystems; use volumeMode: Filesystem"
    if not capability.HasField("mount"):
        return "the volume capability has no access type; set mount"
    if capability.access_mode.mode not in SUPPORTED_MODES:
        return f"access mode {capability.access_mode.mode} is missing or unknown"
    return None


def require_capabilities(capabilities: Sequence[csi_pb2.VolumeCapability]) -> None:
    """For calls that must fail on an unsupported capability (CreateVolume, the node calls)."""
    if not capabilities:
        raise InvalidArgument("volume_capabilities is missing: give at least one access mode")
    for capability in capabilities:
        problem = capability_problem(capability)
        if problem:
            raise InvalidArgument(problem)
