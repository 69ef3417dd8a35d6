"""The node service's pure parts: the mount table, the usage cache, the daemon's options, records."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.errors import InvalidArgument
from csi.mountinfo import binds_of, mount_at, parse_line, read_mounts
from csi.node import obsfs_options
from csi.nodestate import NodeState, StagedVolume
from csi.params import parse_mount_flags
from csi.stats import Usage, UsageCache
from obsfs.options import parse_options

STAGING = "/var/lib/kubelet/plugins/kubernetes.io/csi/obs.csi.obsfs.dev/ab12/globalmount"
TARGET = "/var/lib/kubelet/pods/p 1/volumes/kubernetes.io~csi/pv/mount"
ESCAPED_TARGET = TARGET.replace(" ", "\\040")  # as the kernel writes it
TABLE = f"""\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
44 22 0:41 / {STAGING} rw,nosuid,nodev,relatime shared:30 - fuse.obsfs obsfs:bucket:/team\\040a rw,user_id=0
45 22 0:41 / {ESCAPED_TARGET} ro,nosuid,nodev,relatime shared:30 - fuse.obsfs obsfs:bucket:/team\\040a rw
46 22 0:42 / /mnt/other rw - fuse.obsfs obsfs:other rw
"""


def test_mount_table(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(TABLE)
    mounts = read_mounts(str(table))
    staged, bound = mount_at(mounts, STAGING + "/"), mount_at(mounts, TARGET)
    assert staged is not None and bound is not None
    assert (staged.fstype, staged.source, staged.read_only) == ("fuse.obsfs", "obsfs:bucket:/team a", False)
    assert bound.read_only and bound.device == staged.device
    assert binds_of(mounts, staged) == [TARGET]
    assert mount_at(mounts, "/var/lib/kubelet") is None


def test_mount_table_line_with_optional_fields() -> None:
    entry = parse_line("36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 propagate_from:2 - ext3 /dev/root rw")
    assert (entry.root, entry.mount_point, entry.fstype, entry.source) == ("/mnt1", "/mnt/parent", "ext3", "/dev/root")


def test_usage_is_cached_and_survives_a_failed_measurement() -> None:
    now = [0.0]
    cache = UsageCache(ttl=60, clock=lambda: now[0])
    measured: list[Usage] = [Usage(objects=3, bytes=30, capacity=100)]
    assert cache.get("v", lambda: measured[0]) == Usage(3, 30, 100)
    measured[0] = Usage(objects=4, bytes=40, capacity=100)
    now[0] = 59
    assert cache.get("v", lambda: measured[0]).objects == 3  # still fresh
    now[0] = 61
    assert cache.get("v", lambda: measured[0]).objects == 4
    now[0] = 200
    failed = cache.get("v", lambda: Usage(problem="store down"))
    assert (failed.objects, failed.bytes, failed.problem) == (4, 40, "store down")  # last numbers, with the problem
    cache.forget("v")
    assert cache.get("v", lambda: Usage(problem="store down")).objects == 0


def test_daemon_options_parse_as_obsfs_options(tmp_path: Path) -> None:
    """What the node hands to ``obsfs mount`` must be what obsfs understands, commas and all."""
    state = NodeState(str(tmp_path / "state,odd"))
    record = StagedVolume(volume_id="bucket/team", staging_path=STAGING, endpoint="http://127.0.0.1:9000",
                          region="eu-1", signature="v2", path_style=True, fsgroup=2000, read_only=True,
                          options={"uid": "1000", "attr_timeout": "5"}, flags=("noatime",))
    opts = parse_options(obsfs_options(record, state))
    assert (opts.url, opts.region, opts.signature, opts.use_path_request_style) == (
        "http://127.0.0.1:9000", "eu-1", "v2", True)
    assert (opts.fsgroup, opts.ro, opts.uid, opts.attr_timeout, opts.allow_other) == (2000, True, 1000, 5.0, True)
    assert opts.passwd_file == str(state.credentials_path("bucket/team"))
    assert opts.cache_dir == str(state.cache_dir("bucket/team")) and opts.kernel_flags == ["noatime"]


def test_records_round_trip_and_hold_no_keys(tmp_path: Path) -> None:
    state = NodeState(str(tmp_path))
    record = StagedVolume(volume_id="b", staging_path=STAGING, endpoint="http://e", region="r", signature="v4",
                          path_style=False, options={"uid": "1"}, flags=("noatime",))
    state.save(record)
    state.write_credentials("b", "AKID", "SECRET")
    assert state.load("b") == record and list(state.records()) == [record]
    assert state.read_credentials("b") == ("AKID", "SECRET")
    assert b"SECRET" not in state.record_path("b").read_bytes()
    state.record_path("x").write_text("{not json")
    assert list(state.records()) == [record]  # a damaged record is skipped, not fatal
    state.forget("b", clean=True)
    assert state.load("b") is None and state.read_credentials("b") is None


def test_mount_flags() -> None:
    assert parse_mount_flags(["noatime", "uid=1000,attr_timeout=5"]) == (
        {"uid": "1000", "attr_timeout": "5"}, ("noatime",))
    for bad in ("ro", "allow_other", "noallow_other", "cache_dir=/tmp", "uid=root", "attr_index=maybe"):
        with pytest.raises(InvalidArgument, match=f"mount option '{bad.split('=')[0]}'"):
            parse_mount_flags([bad])


def test_yes_no_mount_flags_come_bare_or_negated() -> None:
    """As mount(8) reads noatime: the StorageClass's mountOptions can say ``attr_index`` or
    ``nokeeper``, and the daemon's parser reads what the node passes on the same way."""
    options, plain = parse_mount_flags(["attr_index,nokeeper", "noatime"])
    assert options == {"attr_index": "true", "keeper": "false"} and plain == ("noatime",)
    parsed = parse_options([",".join(f"{name}={value}" for name, value in options.items())])
    assert parsed.attr_index is True and parsed.keeper is False
