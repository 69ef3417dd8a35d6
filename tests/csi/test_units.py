"""Small pure pieces of the driver: capabilities, locks, the volume record, capacity ranges."""

from __future__ import annotations

import pytest

from csi.capabilities import capability_problem, require_capabilities
from csi.controller import capacity_fits, requested_capacity
from csi.errors import Aborted, FailedPrecondition, InvalidArgument
from csi.locks import VolumeLocks
from csi.v1 import csi_pb2
from csi.volumes import VolumeRecord
from tests.csi.helpers import MODE, block_capability, mount_capability


@pytest.mark.parametrize("mode", [m for m in MODE.values() if m != MODE.UNKNOWN])
def test_mount_is_supported_in_every_access_mode(mode: int) -> None:
    assert capability_problem(mount_capability(mode)) is None


@pytest.mark.parametrize("capability, problem", [
    (block_capability(), "block access is not supported"),
    (csi_pb2.VolumeCapability(access_mode=csi_pb2.VolumeCapability.AccessMode(mode=MODE.SINGLE_NODE_WRITER)),
     "no access type"),
    (mount_capability(MODE.UNKNOWN), "access mode 0"),
    (mount_capability(99), "access mode 99"),
])
def test_unsupported_capabilities(capability: csi_pb2.VolumeCapability, problem: str) -> None:
    assert problem in (capability_problem(capability) or "")
    with pytest.raises(InvalidArgument, match=problem):
        require_capabilities([mount_capability(), capability])


def test_capabilities_are_required() -> None:
    with pytest.raises(InvalidArgument, match="volume_capabilities is missing"):
        require_capabilities([])


def test_a_busy_volume_aborts_the_second_call() -> None:
    locks = VolumeLocks()
    with locks.hold("b/v"):
        with pytest.raises(Aborted, match="b/v"), locks.hold("b/v"):
            pass
        with locks.hold("b/other"):
            pass
    with pytest.raises(RuntimeError), locks.hold("b/v"):
        raise RuntimeError("released even on failure")
    with locks.hold("b/v"):
        pass


def test_record_round_trip() -> None:
    record = VolumeRecord("pvc-1", 5 << 30, {"uid": "1000"})
    assert VolumeRecord.decode(record.encode(), "b/.obsfs-volume.json") == record


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"format": 1}',
                                  b'{"format": 9, "name": "x", "capacityBytes": 1, "volumeContext": {}}',
                                  b'{"format": 1, "name": "x", "capacityBytes": "1", "volumeContext": {}}'])
def test_damaged_record(data: bytes) -> None:
    with pytest.raises(FailedPrecondition, match="b/.obsfs-volume.json is damaged"):
        VolumeRecord.decode(data, "b/.obsfs-volume.json")


@pytest.mark.parametrize("required, limit, capacity", [(0, 0, 0), (5, 0, 5), (0, 7, 7), (5, 7, 5), (5, 5, 5)])
def test_requested_capacity(required: int, limit: int, capacity: int) -> None:
    assert requested_capacity(csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit)) == capacity


@pytest.mark.parametrize("required, limit", [(-1, 0), (0, -1), (8, 7)])
def test_impossible_capacity(required: int, limit: int) -> None:
    with pytest.raises(InvalidArgument, match="capacity_range"):
        requested_capacity(csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit))


@pytest.mark.parametrize("capacity, required, limit, fits", [
    (5, 5, 0, True), (5, 0, 0, True), (5, 6, 0, False), (5, 0, 4, False), (5, 4, 6, True), (0, 1, 0, False)])
def test_capacity_fits(capacity: int, required: int, limit: int, fits: bool) -> None:
    assert capacity_fits(capacity, csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit)) is fits
