"""The pure node helpers: kubelet paths, read-only publishes, the mount group."""

from __future__ import annotations

import pytest

from csi.errors import InvalidArgument
from csi.node import kubelet_path, mount_gid, publish_read_only
from csi.v1 import csi_pb2
from tests.csi.helpers import MODE, mount_capability

KUBELET = "/var/lib/kubelet"
TARGET = f"{KUBELET}/pods/0b6f/volumes/kubernetes.io~csi/pvc-1/mount"
STAGING = f"{KUBELET}/plugins/kubernetes.io/csi/obs.csi.obsfs.dev/9f8e/globalmount"


@pytest.mark.parametrize("path, expected", [
    (TARGET, TARGET), (STAGING, STAGING), (f"{KUBELET}//pods/./x/", f"{KUBELET}/pods/x")])
def test_kubelet_paths(path: str, expected: str) -> None:
    assert kubelet_path(path, "target_path", KUBELET) == expected


@pytest.mark.parametrize("path, message", [
    ("", "target_path is missing"),
    ("pods/x/mount", "must be an absolute path"),
    (f"{KUBELET}/pods/\0/mount", "must be an absolute path"),
    (f"{KUBELET}/pods/../../../etc", "must not contain '..'"),
    ("/etc/kubernetes", "outside kubelet's directory"),
    (f"{KUBELET}-evil/pods/x", "outside kubelet's directory"),
])
def test_bad_kubelet_paths(path: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        kubelet_path(path, "target_path", KUBELET)


def test_any_absolute_path_without_root() -> None:
    assert kubelet_path("/mnt/x", "staging_target_path") == "/mnt/x"


@pytest.mark.parametrize("mode, readonly, expected", [
    (MODE.SINGLE_NODE_WRITER, False, False), (MODE.MULTI_NODE_MULTI_WRITER, False, False),
    (MODE.SINGLE_NODE_WRITER, True, True), (MODE.MULTI_NODE_READER_ONLY, False, True),
    (MODE.SINGLE_NODE_READER_ONLY, False, True)])
def test_publish_read_only(mode: int, readonly: bool, expected: bool) -> None:
    assert publish_read_only(mount_capability(mode), readonly) is expected


def _with_group(group: str) -> csi_pb2.VolumeCapability:
    capability = mount_capability()
    capability.mount.volume_mount_group = group
    return capability


def test_mount_gid() -> None:
    assert mount_gid(mount_capability()) is None
    assert mount_gid(_with_group("2000")) == 2000


@pytest.mark.parametrize("group", ["staff", "-1", "4294967295", "1e3"])
def test_bad_mount_group(group: str) -> None:
    with pytest.raises(InvalidArgument, match="volume_mount_group"):
        mount_gid(_with_group(group))
