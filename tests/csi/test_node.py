"""The Node service over the real socket, with real FUSE mounts of the moto server, called in
kubelet's order and with kubelet's paths: the whole life of a volume, every idempotent repeat,
read-only publishes, the pod's fsGroup, volume stats, and the exact code for each bad input."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.mountinfo import mount_at, read_mounts
from csi.node import NODE_STAGE_SECRET
from csi.v1 import csi_pb2
from csi.volumes import RECORD_NAME
from tests.csi.helpers import GIB, MODE, block_capability, bucket_exists, create_request, rpc_error, store_secrets
from tests.csi.kubelet import NodeEnv, capability
from tests.mounting import fsync_tree
from tests.s3server import S3Server

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
USAGE = csi_pb2.VolumeUsage


def create_volume(env: NodeEnv, name: str, parameters: dict[str, str] | None = None) -> csi_pb2.Volume:
    return env.controller.CreateVolume(create_request(name, dict(env.kubelet.secrets), parameters=parameters),
                                       timeout=30).volume


def usage(stats: csi_pb2.NodeGetVolumeStatsResponse, unit: int) -> csi_pb2.VolumeUsage:
    return next(u for u in stats.usage if u.unit == unit)


# -- the life of a volume --------------------------------------------------------------------------

def test_a_volume_from_create_to_delete(node_env: NodeEnv, s3: Any, volume_name: str) -> None:
    kubelet = node_env.kubelet
    volume = create_volume(node_env, volume_name)
    vid = volume.volume_id
    staging = kubelet.stage(vid, context=volume.volume_context)
    assert kubelet.stage(vid, context=volume.volume_context) == staging  # repeat: OK
    entry = mount_at(read_mounts(), staging)
    assert entry is not None and (entry.fstype, entry.source) == ("fuse.obsfs", f"obsfs:{vid}")

    pod_a, pod_b = kubelet.publish(vid, "pod-a"), kubelet.publish(vid, "pod-b")
    assert kubelet.publish(vid, "pod-a") == pod_a  # repeat: OK
    Path(pod_a, "hello.txt").write_text("written in pod a\n")
    os.mkdir(Path(pod_a, "dir"))
    Path(pod_a, "dir", "big.bin").write_bytes(os.urandom(3 << 20))
    fsync_tree(Path(pod_a))
    assert Path(pod_b, "hello.txt").read_text() == "written in pod a\n"
    assert Path(pod_b, "dir", "big.bin").read_bytes() == Path(pod_a, "dir", "big.bin").read_bytes()

    for target in (pod_a, pod_b):
        kubelet.unpublish(vid, target)
        kubelet.unpublish(vid, target)  # repeat: OK
        assert not os.path.exists(target)  # the plugin removes the directory it created
    kubelet.unstage(vid)
    kubelet.unstage(vid)  # repeat: OK
    assert mount_at(read_mounts(), staging) is None
    for kept_while_staged in ("volumes", "secrets", "cache", "logs"):  # a clean unstage leaves nothing
        assert not list((node_env.state_dir / kept_while_staged).iterdir()), kept_while_staged
    assert s3.get_object(Bucket=vid, Key="hello.txt")["Body"].read() == b"written in pod a\n"

    delete = csi_pb2.DeleteVolumeRequest(volume_id=vid, secrets=dict(kubelet.secrets))
    node_env.controller.DeleteVolume(delete, timeout=30)
    node_env.controller.DeleteVolume(delete, timeout=30)
    assert not bucket_exists(s3, vid)


def test_calls_on_what_is_already_gone_succeed(node_env: NodeEnv) -> None:
    kubelet = node_env.kubelet
    kubelet.unpublish("never-published", kubelet.target_path("pod", "pv"))
    kubelet.unstage("never-staged")
    os.makedirs(kubelet.staging_path("never-staged"))
    kubelet.unstage("never-staged")


def test_a_prefix_volume_in_a_shared_bucket(node_env: NodeEnv, s3: Any, make_bucket: Callable[[], str],
                                            volume_name: str) -> None:
    shared = make_bucket()
    s3.put_object(Bucket=shared, Key="neighbour/keep.txt", Body=b"not ours")
    vid = create_volume(node_env, volume_name, {"bucket": shared}).volume_id
    kubelet = node_env.kubelet
    kubelet.stage(vid)
    target = kubelet.publish(vid)
    # Only the volume shows, not its neighbour; the controller's record does show (obsfs cannot
    # hide a key yet).
    assert set(os.listdir(target)) <= {RECORD_NAME}
    Path(target, "mine.txt").write_text("x")
    fsync_tree(Path(target))
    kubelet.unpublish(vid, target)
    kubelet.unstage(vid)
    assert s3.get_object(Bucket=shared, Key=f"{volume_name}/mine.txt")["Body"].read() == b"x"


# -- read-only -------------------------------------------------------------------------------------

def test_readonly_publish_refuses_writes(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    kubelet.stage(bucket)
    writable = kubelet.publish(bucket, "writer")
    readonly = kubelet.publish(bucket, "reader", readonly=True)
    reader_mode = kubelet.publish(bucket, "rox", cap=capability(MODE.MULTI_NODE_READER_ONLY))
    Path(writable, "shared.txt").write_text("from the writer")
    for target in (readonly, reader_mode):
        assert Path(target, "shared.txt").read_text() == "from the writer"
        for attempt in (lambda t: Path(t, "new.txt").write_text("x"), lambda t: os.mkdir(Path(t, "d")),
                        lambda t: Path(t, "shared.txt").write_text("overwritten")):
            with pytest.raises(OSError) as info:
                attempt(target)
            assert info.value.errno == errno.EROFS
    assert kubelet.publish(bucket, "reader", readonly=True) == readonly  # repeat: OK
    error = rpc_error(kubelet.publish, bucket, "reader", readonly=False)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "read-only" in error.details()


def test_reader_only_volume_is_mounted_read_only(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    rox = capability(MODE.MULTI_NODE_READER_ONLY)
    staging = kubelet.stage(bucket, cap=rox)
    target = kubelet.publish(bucket, cap=rox)
    for path in (staging, target):
        with pytest.raises(OSError) as info:
            Path(path, "x").write_text("x")
        assert info.value.errno == errno.EROFS
    error = rpc_error(kubelet.stage, bucket, capability(MODE.MULTI_NODE_MULTI_WRITER))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "read_only" in error.details()


# -- fsGroup ---------------------------------------------------------------------------------------

def run_as_1000(groups: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    group_args = [f"--groups={groups}"] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", *group_args, "/bin/sh", "-c", script,
                           "sh", *args], capture_output=True, text=True, timeout=30)


def test_fsgroup_lets_a_non_root_pod_write(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    cap = capability(group="4242")
    kubelet.stage(bucket, cap=cap)
    target = kubelet.publish(bucket, cap=cap)
    result = run_as_1000("4242", 'mkdir "$1/dir" && echo hello > "$1/dir/f" && cat "$1/dir/f"', target)
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr
    assert os.stat(Path(target, "dir", "f")).st_gid == 4242
    outsider = run_as_1000("", 'echo x > "$1/g"', target)
    assert outsider.returncode != 0 and "Permission denied" in outsider.stderr

    error = rpc_error(kubelet.publish, bucket, cap=capability(group="5555"))
    assert error.code() == PRECONDITION and "fsGroup 5555" in error.details()
    error = rpc_error(kubelet.stage, bucket, capability(group="5555"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "fsgroup" in error.details()


# -- stats -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [False, True], ids=["bucket", "prefix"])
def test_stats_count_objects_and_bytes(node_env: NodeEnv, s3: Any, make_bucket: Callable[[], str],
                                       volume_name: str, shared: bool) -> None:
    kubelet = node_env.kubelet
    volume = create_volume(node_env, volume_name, {"bucket": make_bucket()} if shared else None)
    vid = volume.volume_id
    staging = kubelet.stage(vid)
    target = kubelet.publish(vid)
    os.mkdir(Path(target, "d"))
    sizes = {"d/a.bin": 10, "d/b.bin": 2000, "empty": 0}
    for name, size in sizes.items():
        Path(target, name).write_bytes(b"x" * size)
    fsync_tree(Path(target))
    bucket, _, prefix = vid.partition("/")
    listed = s3.list_objects(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")["Contents"]
    expected = [obj for obj in listed if obj["Key"] not in (RECORD_NAME, f"{prefix}/", f"{prefix}/{RECORD_NAME}")]
    assert len(expected) >= len(sizes)  # the files, and a marker for the directory

    for path in (target, staging):
        stats = kubelet.stats(vid, path)
        assert not stats.volume_condition.abnormal, stats.volume_condition.message
        inodes, space = usage(stats, USAGE.INODES), usage(stats, USAGE.BYTES)
        assert inodes.used == len(expected)
        assert (space.used, space.total, space.available) == (2010, GIB, GIB - 2010)


def test_stats_of_a_static_volume_have_no_capacity(node_env: NodeEnv, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="data.bin", Body=b"12345")
    node_env.kubelet.stage(bucket)
    target = node_env.kubelet.publish(bucket)
    space = usage(node_env.kubelet.stats(bucket, target), USAGE.BYTES)
    assert (space.used, space.total, space.available) == (5, 0, 0)


def test_stats_of_what_is_not_a_volume_are_not_found(node_env: NodeEnv, bucket: str, tmp_path: Path) -> None:
    kubelet = node_env.kubelet
    kubelet.stage(bucket)
    for volume_id, path in (("never-staged", kubelet.staging_path(bucket)), (bucket, "some/path"),
                            (bucket, str(kubelet.root / "pods")), (bucket, kubelet.target_path("p", "pv"))):
        error = rpc_error(kubelet.stats, volume_id, path)
        assert error.code() == grpc.StatusCode.NOT_FOUND, (volume_id, path)


# -- capabilities, info, locks ---------------------------------------------------------------------

def test_node_capabilities_and_info(node_env: NodeEnv) -> None:
    caps = node_env.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest()).capabilities
    rpc = csi_pb2.NodeServiceCapability.RPC
    assert sorted(c.rpc.type for c in caps) == sorted(
        [rpc.STAGE_UNSTAGE_VOLUME, rpc.GET_VOLUME_STATS, rpc.VOLUME_CONDITION, rpc.VOLUME_MOUNT_GROUP])
    info = node_env.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert (info.node_id, info.max_volumes_per_node, info.HasField("accessible_topology")) == ("node-1", 0, False)


def test_a_call_on_a_busy_volume_is_aborted(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    assert node_env.driver.node is not None
    with node_env.driver.node.locks.hold(bucket):
        for call, args in ((kubelet.stage, (bucket,)), (kubelet.publish, (bucket,)),
                           (kubelet.unpublish, (bucket, kubelet.target_path("p", "pv"))), (kubelet.unstage, (bucket,))):
            error = rpc_error(call, *args)
            assert error.code() == grpc.StatusCode.ABORTED and "in progress" in error.details()
    kubelet.stage(bucket)


# -- bad input -------------------------------------------------------------------------------------

SOME = "some-bucket"  # a valid name; no such bucket exists


def _stage(env: NodeEnv, overrides: dict[str, Any]) -> csi_pb2.NodeStageVolumeRequest:
    fields: dict[str, Any] = {"volume_id": SOME, "staging_target_path": env.kubelet.staging_path(SOME),
                              "volume_capability": capability(), "secrets": dict(env.kubelet.secrets)}
    fields.update(overrides)
    return csi_pb2.NodeStageVolumeRequest(**{k: v for k, v in fields.items() if v is not None})


def _publish(env: NodeEnv, overrides: dict[str, Any]) -> csi_pb2.NodePublishVolumeRequest:
    fields: dict[str, Any] = {"volume_id": SOME, "staging_target_path": env.kubelet.staging_path(SOME),
                              "target_path": env.kubelet.target_path("pod", "pv"), "volume_capability": capability()}
    fields.update(overrides)
    return csi_pb2.NodePublishVolumeRequest(**{k: v for k, v in fields.items() if v is not None})


BAD_STAGES: list[tuple[str, dict[str, Any], grpc.StatusCode, str]] = [
    ("no volume id", {"volume_id": None}, INVALID, "volume_id is missing"),
    ("no staging path", {"staging_target_path": None}, INVALID, "staging_target_path is missing"),
    ("relative staging path", {"staging_target_path": "plugins/x/globalmount"}, INVALID, "must be an absolute path"),
    ("staging path outside kubelet", {"staging_target_path": "/etc/x"}, INVALID, "outside kubelet's directory"),
    ("no capability", {"volume_capability": None}, INVALID, "volume_capability is missing"),
    ("block", {"volume_capability": block_capability()}, INVALID, "block access is not supported"),
    ("unknown context key", {"volume_context": {"colour": "blue"}}, INVALID, "unknown volume context key 'colour'"),
    ("bad context value", {"volume_context": {"uid": "root"}}, INVALID, "volume context key 'uid'"),
    ("unknown mount flag", {"volume_capability": capability(flags=("bad",))}, INVALID, "unknown mount option 'bad'"),
    ("ro mount flag", {"volume_capability": capability(flags=("ro",))}, INVALID, "unknown mount option 'ro'"),
    ("bad group", {"volume_capability": capability(group="staff")}, INVALID, "volume_mount_group 'staff'"),
    ("no secrets", {"secrets": None}, INVALID, NODE_STAGE_SECRET),
    ("invalid bucket", {"volume_id": "Not_A_Bucket"}, grpc.StatusCode.NOT_FOUND, "'Not_A_Bucket' is not a valid"),
    ("missing bucket", {"volume_id": "no-such-bucket-0123456789"}, grpc.StatusCode.NOT_FOUND, "does not exist"),
]


@pytest.mark.parametrize("overrides, code, message", [c[1:] for c in BAD_STAGES], ids=[c[0] for c in BAD_STAGES])
def test_bad_stage_requests(node_env: NodeEnv, overrides: dict[str, Any], code: grpc.StatusCode,
                            message: str) -> None:
    error = rpc_error(node_env.node.NodeStageVolume, _stage(node_env, overrides), timeout=30)
    assert (error.code(), message in error.details()) == (code, True), error.details()
    assert not [e for e in read_mounts() if e.mount_point.startswith(str(node_env.kubelet.root))]


@pytest.mark.parametrize("key, value", [("secretAccessKey", ""), ("accessKeyID", "with:colon"),
                                        ("signature", "v3"), ("endpoint", "obs.example.com")])
def test_bad_secrets_name_the_key(node_env: NodeEnv, moto: S3Server, key: str, value: str) -> None:
    request = _stage(node_env, {"secrets": store_secrets(moto, **{key: value})})
    error = rpc_error(node_env.node.NodeStageVolume, request, timeout=30)
    assert error.code() == INVALID and key in error.details()


def test_wrong_keys_are_unauthenticated(node_env: NodeEnv, rgw: S3Server) -> None:
    wrong = f"Wrong{uuid.uuid4().hex}"
    request = _stage(node_env, {"secrets": store_secrets(rgw, accessKeyID=wrong)})
    error = rpc_error(node_env.node.NodeStageVolume, request, timeout=30)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "accessKeyID and secretAccessKey" in error.details() and wrong not in error.details()


BAD_PUBLISHES: list[tuple[str, dict[str, Any], grpc.StatusCode, str]] = [
    ("no volume id", {"volume_id": None}, INVALID, "volume_id is missing"),
    ("no target path", {"target_path": None}, INVALID, "target_path is missing"),
    ("relative target path", {"target_path": "pods/p/volumes/kubernetes.io~csi/pv/mount"}, INVALID,
     "must be an absolute path"),
    ("escaping target path", {"target_path": "/tmp/kubelet/pods/../../../etc"}, INVALID, "must not contain '..'"),
    ("no capability", {"volume_capability": None}, INVALID, "volume_capability is missing"),
    ("block", {"volume_capability": block_capability()}, INVALID, "block access is not supported"),
    ("no staging path", {"staging_target_path": None}, PRECONDITION, "NodeStageVolume must come first"),
    ("not staged", {}, PRECONDITION, "is not staged at"),
    ("invalid bucket", {"volume_id": "Not_A_Bucket"}, grpc.StatusCode.NOT_FOUND, "is not a valid bucket"),
]


@pytest.mark.parametrize("overrides, code, message", [c[1:] for c in BAD_PUBLISHES],
                         ids=[c[0] for c in BAD_PUBLISHES])
def test_bad_publish_requests(node_env: NodeEnv, overrides: dict[str, Any], code: grpc.StatusCode,
                              message: str) -> None:
    error = rpc_error(node_env.node.NodePublishVolume, _publish(node_env, overrides))
    assert (error.code(), message in error.details()) == (code, True), error.details()


def test_other_bad_requests(node_env: NodeEnv) -> None:
    node, kubelet = node_env.node, node_env.kubelet
    cases: list[tuple[Callable[..., Any], Any, str]] = [
        (node.NodeUnpublishVolume, csi_pb2.NodeUnpublishVolumeRequest(target_path=kubelet.target_path("p", "v")),
         "volume_id is missing"),
        (node.NodeUnpublishVolume, csi_pb2.NodeUnpublishVolumeRequest(volume_id="b"), "target_path is missing"),
        (node.NodeUnpublishVolume, csi_pb2.NodeUnpublishVolumeRequest(volume_id="b", target_path="pods/p/mount"),
         "must be an absolute path"),
        (node.NodeUnstageVolume, csi_pb2.NodeUnstageVolumeRequest(staging_target_path=kubelet.staging_path("b")),
         "volume_id is missing"),
        (node.NodeUnstageVolume, csi_pb2.NodeUnstageVolumeRequest(volume_id="b"), "staging_target_path is missing"),
        (node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(volume_path="some/path"), "volume_id is missing"),
        (node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(volume_id="b"), "volume_path is missing"),
    ]
    for call, request, message in cases:
        error = rpc_error(call, request)
        assert (error.code(), message in error.details()) == (INVALID, True), error.details()


def test_a_second_target_of_a_single_writer_pod_volume_is_refused(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    rwop = capability(MODE.SINGLE_NODE_SINGLE_WRITER)
    kubelet.stage(bucket, cap=rwop)
    kubelet.publish(bucket, "one", cap=rwop)
    error = rpc_error(kubelet.publish, bucket, "two", cap=rwop)
    assert error.code() == PRECONDITION and "SINGLE_NODE_SINGLE_WRITER" in error.details()
    rwo = capability(MODE.SINGLE_NODE_WRITER)  # ReadWriteOnce: any number of pods on the one node
    kubelet.publish(bucket, "three", cap=rwo)


def test_something_else_mounted_is_left_alone(node_env: NodeEnv, bucket: str, make_bucket: Callable[[], str]) -> None:
    kubelet = node_env.kubelet
    other = make_bucket()
    kubelet.stage(bucket)
    kubelet.stage(other)
    target = kubelet.publish(other, "pod")
    error = rpc_error(kubelet.publish, bucket, "pod", target=target)
    assert error.code() == PRECONDITION and f"obsfs:{other}" in error.details()
    staging = kubelet.staging_path(bucket)
    error = rpc_error(node_env.node.NodeUnstageVolume, csi_pb2.NodeUnstageVolumeRequest(
        volume_id=bucket, staging_target_path=kubelet.staging_path(other)))
    assert error.code() == PRECONDITION and "left alone" in error.details()
    error = rpc_error(node_env.node.NodeUnstageVolume, csi_pb2.NodeUnstageVolumeRequest(
        volume_id=other, staging_target_path=kubelet.staging_path(other)))
    assert error.code() == PRECONDITION and "still published" in error.details()
    assert mount_at(read_mounts(), staging) is not None


def test_one_staging_path_per_volume(node_env: NodeEnv, bucket: str) -> None:
    kubelet = node_env.kubelet
    staging = kubelet.stage(bucket)
    elsewhere = str(kubelet.root / "plugins" / "kubernetes.io" / "csi" / "elsewhere" / "globalmount")
    os.makedirs(elsewhere)
    error = rpc_error(node_env.node.NodeStageVolume, _stage(node_env, {
        "volume_id": bucket, "staging_target_path": elsewhere}), timeout=30)
    assert error.code() == PRECONDITION and f"already staged on this node at {staging}" in error.details()
    assert mount_at(read_mounts(), elsewhere) is None
    assert not condition_of(node_env, bucket, staging).abnormal  # the first mount is untouched


def condition_of(env: NodeEnv, volume_id: str, path: str) -> csi_pb2.VolumeCondition:
    return env.kubelet.stats(volume_id, path).volume_condition
