"""The Node service: one obsfs daemon per volume per node, bind-mounted into every pod that uses it.

NodeStageVolume runs ``obsfs mount BUCKET[:/PREFIX] <staging path>``; the command returns once the
mount answers, and the service still checks the kernel's mount table for a live ``fuse.obsfs``
mount with the volume's source before it says OK. NodePublishVolume bind-mounts the staging path
onto the pod's target path, read-only when the CO says ``readonly`` or the access mode is a
reader-only one. NodeUnpublishVolume removes the bind and the target directory; NodeUnstageVolume
runs ``obsfs umount``, which returns once the daemon uploaded everything and exited.

An inline (ephemeral) volume, marked ``csi.storage.k8s.io/ephemeral`` in NodePublish's context,
has no NodeStage: NodePublishVolume mounts its daemon straight at the pod's target path, from the
pod spec's volumeAttributes, and NodeUnpublishVolume unmounts it as NodeUnstageVolume would.

Every call checks before it acts, so that the CO may repeat any of them:

- already staged or published as asked: OK; staged or published differently: ALREADY_EXISTS;
- a staging path or target whose daemon is gone (ENOTCONN) is unmounted lazily and mounted again;
- a target or staging path that is already gone: OK;
- anything else mounted where a volume should go is left alone: FAILED_PRECONDITION.

The service keeps no state in memory that matters: each call reads the kernel's mount table and
the records under ``--state-dir`` (see ``csi.nodestate``), and holds the volume in a
``csi.locks.VolumeLocks`` so that a concurrent call on the same volume gets ABORTED.

Input checks, which run before anything touches the filesystem:

- Paths come from kubelet and end up in mount(2) and rmdir: a relative path, or one that climbs
  out of kubelet's directory with ``..``, must be refused before anything acts on it.
- A publish is read-only when the CO says ``readonly`` or the access mode is a reader-only one;
  kubelet sends ``readonly`` only for some of those cases, so the mode must be checked as well.
- ``volume_mount_group`` (the pod's fsGroup) becomes the mount's group: a bucket has no inodes
  kubelet could chown, so the filesystem must present the group itself (``-o fsgroup=G``). One
  staging mount serves every pod on the node, so pods with different fsGroups cannot share a
  volume on one node; the second one gets FAILED_PRECONDITION.
- SINGLE_NODE_WRITER (Kubernetes' ReadWriteOnce) allows several pods on one node, so several
  targets are fine; only SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod) refuses a second target.

Restarts
--------
*The plugin process alone* (a crash, or the server restarted inside a running container): every
obsfs daemon runs in its own session and never notices; the mounts keep working. On start,
``adopt`` matches the records against the mount table and logs what it re-adopted; since every
call reads that state afresh, the new process serves the old volumes like its own.

*The whole node-plugin container* (a DaemonSet rollout, an OOM kill of the container): with
``--mounter-socket`` (the manifests' setting) the daemons are children of ``obsfs-mounter`` in
a container of its own (see ``csi.mounterd`` and docs/survival.md), so they, and the mounts of
running pods, live on. The mounts live on in the host's mount namespace (kubelet's directory
is mounted with Bidirectional propagation), and the records, credentials files and caches in
``--state-dir`` (a hostPath); ``adopt`` finds them as above.

*The daemons* (the mounter's container ends, or one daemon crashes; also the plugin's own
container when it runs obsfs itself): every obsfs mount concerned turns into ENOTCONN. Writes
the daemons had acknowledged are safe in the cache directories; the next daemon of each volume
uploads them. ``adopt`` logs each dead volume, NodeGetVolumeStats reports it abnormal, and the
next NodeStageVolume for it (kubelet sends one when it sets up the volume for a pod again, e.g.
after the pod is restarted) unmounts the dead mount and mounts it again; the next
NodePublishVolume replaces a dead bind at a target. Running pods keep seeing ENOTCONN until
then. Re-mounting at start-up alone would not help: a new mount at the staging path does not
repair the binds in the pods, which still point at the dead connection. Keeping the kernel's
FUSE connection across a daemon's death needs a holder of ``/dev/fuse`` that hands it to the
next daemon, and inode numbers and open handles that the next daemon can rebuild from the
cache dir (issue #14, items 2 and 3).
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from csi.capabilities import require_capabilities
from csi.defaultsecret import DefaultSecret
from csi.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound
from csi.locks import VolumeLocks
from csi.mounter import Mounter
from csi.mountinfo import OBSFS_FSTYPE, MountEntry, binds_of, mount_at
from csi.naming import VolumeRef, parse_volume_id
from csi.nodestate import NodeState, StagedVolume
from csi.params import parse_mount_flags, parse_parameters
from csi.secrets import ACCESS_KEY, SECRET_KEY, store_config
from csi.stats import DEFAULT_TTL, Usage, UsageCache
from csi.v1 import csi_pb2, csi_pb2_grpc
from csi.volumes import RECORD_NAME, open_volume, retry_budget
from obsfs.backend.base import StoreConfig
from obsfs.errors import StoreError

log = logging.getLogger(__name__)

NODE_STAGE_SECRET = "csi.storage.k8s.io/node-stage-secret-name"
NODE_PUBLISH_SECRET = "nodePublishSecretRef"  # where an inline volume's secrets come from, in the pod spec
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
_MODE = csi_pb2.VolumeCapability.AccessMode.Mode
READ_ONLY_MODES = frozenset({_MODE.SINGLE_NODE_READER_ONLY, _MODE.MULTI_NODE_READER_ONLY})
_MAX_GID = 2**32 - 2  # (gid_t)-1 means "no change" to chown(2)
_RPC = csi_pb2.NodeServiceCapability.RPC
_USAGE = csi_pb2.VolumeUsage
# Store calls made for NodeGetVolumeStats: kubelet waits for the answer, so they must be short.
STATS_DEADLINE = 10.0
STATS_SOCKET_TIMEOUT = 5.0
_MAX_STACKED = 8


def kubelet_path(path: str, field: str, root: str | None = None) -> str:
    """``path`` normalised, if it is absolute, has no ``..`` and (given ``root``) lies inside it.

    ``field`` names the request field in the error, e.g. ``target_path``.
    """
    if not path:
        raise InvalidArgument(f"{field} is missing")
    if "\0" in path or not path.startswith("/"):
        raise InvalidArgument(f"{field} {path!r} must be an absolute path")
    if ".." in path.split("/"):
        raise InvalidArgument(f"{field} {path!r} must not contain '..'")
    normal = posixpath.normpath(path)
    if root is not None and posixpath.commonpath([normal, posixpath.normpath(root)]) != posixpath.normpath(root):
        raise InvalidArgument(f"{field} {path!r} is outside kubelet's directory {root}")
    return normal


def publish_read_only(capability: csi_pb2.VolumeCapability, readonly: bool) -> bool:
    """Whether the bind mount into the pod must be read-only."""
    return readonly or capability.access_mode.mode in READ_ONLY_MODES


def mount_gid(capability: csi_pb2.VolumeCapability) -> int | None:
    """The numeric group from ``volume_mount_group``, or None when the CO sent none."""
    group = capability.mount.volume_mount_group
    if not group:
        return None
    if not group.isdecimal() or int(group) > _MAX_GID:
        raise InvalidArgument(f"volume_mount_group {group!r} must be a numeric group id (the pod's fsGroup)")
    return int(group)


def obsfs_source(ref: VolumeRef) -> str:
    """The volume as ``obsfs mount`` takes it: ``BUCKET`` or ``BUCKET:/PREFIX``."""
    return f"{ref.bucket}:/{ref.prefix}" if ref.prefix else ref.bucket


def is_volume_mount(entry: MountEntry, ref: VolumeRef) -> bool:
    """Whether ``entry`` is an obsfs mount (or a bind of one) of the whole volume ``ref``."""
    return entry.fstype == OBSFS_FSTYPE and entry.source == f"obsfs:{obsfs_source(ref)}" and entry.root == "/"


def _escape(option: str) -> str:
    """One ``-o`` item; obsfs splits at commas that are not escaped."""
    return option.replace("\\", "\\\\").replace(",", "\\,")


def obsfs_options(record: StagedVolume, state: NodeState) -> list[str]:
    """The ``-o`` items for the volume's daemon. The keys are in the passwd file, never here."""
    options = [f"url={record.endpoint}", f"region={record.region}", f"signature={record.signature}"]
    if record.path_style:
        options.append("use_path_request_style")
    vid = record.volume_id
    options += [f"passwd_file={state.credentials_path(vid)}", f"cache_dir={state.cache_dir(vid)}",
                f"logfile={state.log_path(vid)}", f"metrics=unix:{state.metrics_socket(vid)}", "allow_other",
                f"hide={RECORD_NAME}"]
    if record.fsgroup is not None:
        options.append(f"fsgroup={record.fsgroup}")
    if record.read_only:
        options.append("ro")
    options += [f"{name}={value}" for name, value in sorted(record.options.items())]
    options += record.flags
    return [_escape(option) for option in options]


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is missing")
    return value


def _capability(request: csi_pb2.NodeStageVolumeRequest | csi_pb2.NodePublishVolumeRequest
                ) -> csi_pb2.VolumeCapability:
    if not request.HasField("volume_capability"):
        raise InvalidArgument("volume_capability is missing")
    require_capabilities([request.volume_capability])
    return request.volume_capability


def _volume_ref(volume_id: str) -> VolumeRef:
    """A volume id that cannot name a bucket names no volume: NOT_FOUND, as the controller says."""
    try:
        return parse_volume_id(volume_id)
    except InvalidArgument as exc:
        raise NotFound(str(exc)) from None


def record_ref(record: StagedVolume) -> VolumeRef:
    """Where a staged volume's objects are: its volume id, or an inline volume's own source."""
    return parse_volume_id(record.source or record.volume_id)


def is_ephemeral(context: Mapping[str, str]) -> bool:
    """kubelet marks inline volumes in NodePublish's context (the CSIDriver has podInfoOnMount)."""
    return context.get(EPHEMERAL) == "true"


def _checked_keys(secrets: Mapping[str, str]) -> None:
    """The keys go into an ``AK:SK`` line, which cannot hold a colon or a line break."""
    for key in (ACCESS_KEY, SECRET_KEY):
        value = secrets.get(key, "").strip()
        if ":" in value or "\n" in value or "\r" in value:
            raise InvalidArgument(f"secret key {key} must not contain ':' or line breaks")


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(self, node_id: str, state_dir: str, kubelet_dir: str | None = None,
                 mounter: Mounter | None = None, stats_ttl: float = DEFAULT_TTL,
                 default_secret: DefaultSecret | None = None) -> None:
        self._node_id = node_id
        self.default_secret = default_secret or DefaultSecret(None)
        self.state = NodeState(state_dir)
        self._kubelet_dir = kubelet_dir or None
        self.mounter = mounter or Mounter()
        self.locks = VolumeLocks()
        self._usage = UsageCache(stats_ttl)

    def _path(self, path: str, field: str) -> str:
        return kubelet_path(path, field, self._kubelet_dir)

    def metric_sources(self) -> list[tuple[str, Path]]:
        """Each staged volume and its daemon's metrics socket (``csi.metrics`` asks them all)."""
        return [(record.volume_id, self.state.metrics_socket(record.volume_id)) for record in self.state.records()]

    # -- start-up --------------------------------------------------------------------------------
    def adopt(self) -> dict[str, str]:
        """Match the records of an earlier run against the mount table; returns volume -> state.

        Nothing is mounted or unmounted here: a dead volume is mounted again by the next
        NodeStageVolume, when the CO hands over the request (and its secrets) again.
        """
        states: dict[str, str] = {}
        mounts = self.mounter.mounts()
        for record in self.state.records():
            entry = mount_at(mounts, record.staging_path)
            try:
                ref = record_ref(record)
            except InvalidArgument as exc:
                log.error("record %s: %s", self.state.record_path(record.volume_id), exc)
                continue
            if entry is None or not is_volume_mount(entry, ref):
                states[record.volume_id] = "not mounted"
                log.warning("volume %s is not mounted at %s any more; the next NodeStageVolume mounts it, "
                            "NodeUnstageVolume forgets it", record.volume_id, record.staging_path)
            elif (problem := self.mounter.probe(record.staging_path)) is not None:
                states[record.volume_id] = "dead"
                log.warning("volume %s at %s: %s; the next NodeStageVolume mounts it again, and the next "
                            "NodePublishVolume of each pod re-binds it", record.volume_id, record.staging_path,
                            problem)
            else:
                states[record.volume_id] = "live"
                log.info("re-adopted volume %s staged at %s", record.volume_id, record.staging_path)
        return states

    # -- stage -----------------------------------------------------------------------------------
    def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest,
                        context: Any) -> csi_pb2.NodeStageVolumeResponse:
        volume_id = _required(request.volume_id, "volume_id")
        staging = self._path(request.staging_target_path, "staging_target_path")
        capability = _capability(request)
        ref = _volume_ref(volume_id)
        secrets = self.default_secret.for_request(request.secrets)
        config = store_config(secrets, NODE_STAGE_SECRET)
        _checked_keys(secrets)
        params = parse_parameters(request.volume_context, "volume context key")
        if params.shared_bucket is not None and params.shared_bucket != ref.bucket:
            raise InvalidArgument(f"volume context key 'bucket' is {params.shared_bucket!r}, but volume "
                                  f"{ref.volume_id} is in bucket {ref.bucket!r}")
        wanted = _wanted(volume_id, staging, capability, params.mount_options, config,
                         read_only=capability.access_mode.mode in READ_ONLY_MODES)
        with self.locks.hold(volume_id):
            self._stage(wanted, config, ref, context)
        return csi_pb2.NodeStageVolumeResponse()

    def _stage(self, wanted: StagedVolume, config: StoreConfig, ref: VolumeRef, context: Any) -> None:
        """Mount the volume's daemon at ``wanted.staging_path``, unless it is already there as asked."""
        volume_id, staging = wanted.volume_id, wanted.staging_path
        mounts = self.mounter.mounts()
        self._check_staged_elsewhere(mounts, wanted, ref)
        entry = mount_at(mounts, staging)
        if entry is not None:
            if not is_volume_mount(entry, ref):
                raise FailedPrecondition(f"{staging} already has a {entry.fstype} mount of {entry.source!r}, "
                                         f"not volume {volume_id}; unmount it first")
            problem = self.mounter.probe(staging)
            if problem is None:
                self._already_staged(wanted, config)
                return
            log.warning("volume %s at %s: %s; unmounting it and mounting it again", volume_id, staging, problem)
            self.mounter.detach_obsfs(staging)
        self._check_store(config, ref, context)
        self._mount(wanted, config, ref)

    def _check_staged_elsewhere(self, mounts: list[MountEntry], wanted: StagedVolume, ref: VolumeRef) -> None:
        """One staging path per volume: a second daemon could not share the volume's cache dir."""
        current = self.state.load(wanted.volume_id)
        if current is None or current.staging_path == wanted.staging_path:
            return
        entry = mount_at(mounts, current.staging_path)
        if entry is not None and is_volume_mount(entry, ref):
            raise FailedPrecondition(f"volume {wanted.volume_id} is already staged on this node at "
                                     f"{current.staging_path}; unstage it there first")

    def _already_staged(self, wanted: StagedVolume, config: StoreConfig) -> None:
        current = self.state.load(wanted.volume_id)
        if current is None:
            # The state dir was lost, or the mount finished after its call had given up and the
            # record was removed: the mount table is the truth, so take the volume on as asked.
            log.warning("volume %s is mounted at %s without a record; adopting it", wanted.volume_id,
                        wanted.staging_path)
            self.state.save(wanted)
        elif current != wanted:
            raise AlreadyExists(f"volume {wanted.volume_id} is already staged at {wanted.staging_path} with "
                                f"{_difference(current, wanted)}; unstage it first")
        # The CO's latest keys, for NodeGetVolumeStats (the daemon read its own at start).
        self.state.write_credentials(wanted.volume_id, config.access_key, config.secret_key)

    @staticmethod
    def _check_store(config: StoreConfig, ref: VolumeRef, context: Any) -> None:
        """Ask the store first: its typed errors give the same codes and hints as the controller's
        (wrong keys UNAUTHENTICATED, missing bucket NOT_FOUND, ...), which the one exit code obsfs
        mount has for "credentials refused or access denied" cannot."""
        with open_volume(config, ref, retry_budget(config.read_deadline, context)) as volume:
            volume.check_access()

    def _mount(self, wanted: StagedVolume, config: StoreConfig, ref: VolumeRef) -> None:
        vid, staging = wanted.volume_id, wanted.staging_path
        os.makedirs(staging, mode=0o750, exist_ok=True)
        # The record first: a mount that completes after the CO gave up is then recognised.
        self.state.save(wanted)
        self.state.write_credentials(vid, config.access_key, config.secret_key)
        self.state.prepare()
        log_path = str(self.state.log_path(vid))
        try:
            self.mounter.mount_obsfs(obsfs_source(ref), staging, obsfs_options(wanted, self.state), log_path)
            entry = mount_at(self.mounter.mounts(), staging)
            if entry is None or not is_volume_mount(entry, ref):
                raise Internal(f"obsfs mount succeeded, but {staging} shows no obsfs mount of {vid}; "
                               f"the daemon's log is {log_path}")
            problem = self.mounter.probe(staging)
            if problem is not None:
                raise Internal(f"volume {vid} was mounted at {staging}, but then: {problem}; the daemon's log "
                               f"is {log_path}")
        except Exception:
            if mount_at(self.mounter.mounts(), staging) is None:
                self.state.forget(vid, clean=False)
            raise
        self._usage.forget(vid)
        log.info("staged volume %s at %s", vid, staging)

    # -- unstage ---------------------------------------------------------------------------------
    def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest,
                          context: Any) -> csi_pb2.NodeUnstageVolumeResponse:
        volume_id = _required(request.volume_id, "volume_id")
        staging = self._path(request.staging_target_path, "staging_target_path")
        with self.locks.hold(volume_id):
            self._usage.forget(volume_id)
            mounts = self.mounter.mounts()
            entry = mount_at(mounts, staging)
            if entry is None:
                record = self.state.load(volume_id)
                if record is None or record.staging_path == staging or mount_at(mounts, record.staging_path) is None:
                    self.state.forget(volume_id, clean=False)
                return csi_pb2.NodeUnstageVolumeResponse()
            if not is_volume_mount(entry, _volume_ref(volume_id)):
                raise FailedPrecondition(f"{staging} has a {entry.fstype} mount of {entry.source!r}, not volume "
                                         f"{volume_id}; it is left alone")
            targets = binds_of(mounts, entry)
            if targets:
                raise FailedPrecondition(f"volume {volume_id} is still published at {targets[0]}; "
                                         "NodeUnpublishVolume must come first")
            self._take_down(volume_id, staging)
        return csi_pb2.NodeUnstageVolumeResponse()

    def _take_down(self, volume_id: str, staging: str) -> None:
        """Unmount the volume's daemon: drained through ``obsfs umount`` if it still answers."""
        problem = self.mounter.probe(staging)
        if problem is None:
            self._unmount(volume_id, staging)
            return
        log.warning("volume %s at %s: %s; unmounting it; writes it acknowledged but did not upload stay in "
                    "%s until the volume is staged on this node again", volume_id, staging, problem,
                    self.state.cache_dir(volume_id))
        self.mounter.detach_obsfs(staging)
        self.state.forget(volume_id, clean=False)

    def _unmount(self, volume_id: str, staging: str) -> None:
        # Without a pid file, obsfs umount can only unmount and cannot wait for the daemon's flush,
        # which still reads the cache dir: it must then stay.
        waited = self.mounter.daemon_alive(staging) is True
        code, message = self.mounter.unmount_obsfs(staging)
        if code == 0:
            self.state.forget(volume_id, clean=waited)
            log.info("unstaged volume %s from %s", volume_id, staging)
            return
        log_path = self.state.log_path(volume_id)
        if mount_at(self.mounter.mounts(), staging) is not None:
            raise Internal(f"obsfs umount of volume {volume_id} failed (exit {code}): {message}; it stays staged; "
                           f"the daemon's log is {log_path}")
        self.state.forget(volume_id, clean=False)
        raise Internal(f"volume {volume_id} is unmounted, but some written data could not be uploaded: {message}. "
                       f"It is kept in {self.state.cache_dir(volume_id)} and uploaded when the volume is staged on "
                       f"this node again; the daemon's log is {log_path}")

    # -- publish ---------------------------------------------------------------------------------
    def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest,
                          context: Any) -> csi_pb2.NodePublishVolumeResponse:
        volume_id = _required(request.volume_id, "volume_id")
        target = self._path(request.target_path, "target_path")
        capability = _capability(request)
        if is_ephemeral(request.volume_context):
            self._publish_inline(request, target, capability, context)
            return csi_pb2.NodePublishVolumeResponse()
        if not request.staging_target_path:
            raise FailedPrecondition("staging_target_path is missing: this plugin stages volumes, so "
                                     "NodeStageVolume must come first")
        staging = self._path(request.staging_target_path, "staging_target_path")
        ref = _volume_ref(volume_id)
        read_only = publish_read_only(capability, request.readonly)
        group = mount_gid(capability)
        with self.locks.hold(volume_id):
            mounts = self.mounter.mounts()
            staged = mount_at(mounts, staging)
            if staged is None or not is_volume_mount(staged, ref):
                raise FailedPrecondition(f"volume {volume_id} is not staged at {staging}; NodeStageVolume must "
                                         "come first")
            problem = self.mounter.probe(staging)
            if problem is not None:
                raise FailedPrecondition(f"volume {volume_id} at {staging}: {problem}; NodeStageVolume mounts it "
                                         "again")
            record = self.state.load(volume_id)
            if group is not None and record is not None and record.fsgroup != group:
                raise FailedPrecondition(f"volume {volume_id} is staged on this node for group {record.fsgroup}, "
                                         f"so it cannot serve a pod with fsGroup {group} as well")
            current = mount_at(mounts, target)
            if current is not None:
                if current.device == staged.device:
                    if current.read_only != read_only:
                        raise AlreadyExists(f"volume {volume_id} is already published at {target} "
                                            f"{'read-only' if current.read_only else 'read-write'}; "
                                            "unpublish it first")
                    return csi_pb2.NodePublishVolumeResponse()
                if not is_volume_mount(current, ref) or self.mounter.probe(target) is None:
                    raise FailedPrecondition(f"{target} already has a {current.fstype} mount of "
                                             f"{current.source!r}; unmount it first")
                log.warning("volume %s: %s is a bind of a dead mount; binding it again", volume_id, target)
                self.mounter.unmount(target, lazy=True)
            if capability.access_mode.mode == _MODE.SINGLE_NODE_SINGLE_WRITER:
                others = [path for path in binds_of(mounts, staged) if path != target]
                if others:
                    raise FailedPrecondition(f"volume {volume_id} is SINGLE_NODE_SINGLE_WRITER and already "
                                             f"published at {others[0]}")
            self._bind(volume_id, staging, target, read_only)
        return csi_pb2.NodePublishVolumeResponse()

    def _publish_inline(self, request: csi_pb2.NodePublishVolumeRequest, target: str,
                        capability: csi_pb2.VolumeCapability, context: Any) -> None:
        """An inline volume has no NodeStage: its daemon is mounted at the pod's target itself, with
        the pod spec's volumeAttributes as the only description and nodePublishSecretRef's keys."""
        params = parse_parameters(request.volume_context, "volumeAttributes key")
        if params.shared_bucket is None:
            raise InvalidArgument("an inline obsfs volume needs volumeAttributes 'bucket' (and optionally 'prefix', "
                                  "the path in it)")
        if params.path.pattern is not None:
            raise InvalidArgument("volumeAttributes 'pathPattern' is for StorageClasses; give an inline volume "
                                  "its 'prefix'")
        ref = VolumeRef(params.shared_bucket, params.path.root)
        secrets = self.default_secret.for_request(request.secrets)
        config = store_config(secrets, NODE_PUBLISH_SECRET)
        _checked_keys(secrets)
        wanted = replace(_wanted(request.volume_id, target, capability, params.mount_options, config,
                                 read_only=publish_read_only(capability, request.readonly)), source=ref.volume_id)
        if not os.path.isdir(os.path.dirname(target)):
            raise FailedPrecondition(f"the parent directory of target_path {target} does not exist; the CO "
                                     "creates it")
        with self.locks.hold(request.volume_id):
            self._stage(wanted, config, ref, context)

    def _bind(self, volume_id: str, staging: str, target: str, read_only: bool) -> None:
        try:
            os.mkdir(target, 0o750)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                raise FailedPrecondition(f"target_path {target} exists and is not a directory") from None
        except FileNotFoundError:
            raise FailedPrecondition(f"the parent directory of target_path {target} does not exist; the CO "
                                     "creates it") from None
        self.mounter.bind(staging, target, read_only)
        mounts = self.mounter.mounts()
        staged, bound = mount_at(mounts, staging), mount_at(mounts, target)
        if staged is None or bound is None or bound.device != staged.device or bound.read_only != read_only:
            if bound is not None:
                self.mounter.unmount(target)
            raise Internal(f"the bind mount of {staging} at {target} did not come out as asked "
                           f"({'read-only' if read_only else 'read-write'})")
        log.info("published volume %s at %s%s", volume_id, target, " read-only" if read_only else "")

    # -- unpublish -------------------------------------------------------------------------------
    def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest,
                            context: Any) -> csi_pb2.NodeUnpublishVolumeResponse:
        volume_id = _required(request.volume_id, "volume_id")
        target = self._path(request.target_path, "target_path")
        with self.locks.hold(volume_id):
            record = self.state.load(volume_id)
            if record is not None and record.source and record.staging_path == target:
                # An inline volume: its own daemon serves the target; drain it, then unmount.
                entry = mount_at(self.mounter.mounts(), target)
                if entry is not None and is_volume_mount(entry, record_ref(record)):
                    self._take_down(volume_id, target)
                else:
                    self.state.forget(volume_id, clean=False)
            # The mount table first: a stat of a target whose daemon hangs would hang as well.
            for _ in range(_MAX_STACKED):  # a bind may have been made twice over the same target
                entry = mount_at(self.mounter.mounts(), target)
                if entry is None:
                    break
                if entry.fstype != OBSFS_FSTYPE:
                    raise FailedPrecondition(f"{target} has a {entry.fstype} mount of {entry.source!r}, not an "
                                             f"obsfs volume; it is left alone")
                self.mounter.unmount(target, lazy=self.mounter.probe(target) is not None)
            else:
                raise Internal(f"{target} is still a mount point after {_MAX_STACKED} unmounts")
            try:
                os.rmdir(target)
            except FileNotFoundError:
                return csi_pb2.NodeUnpublishVolumeResponse()  # never published, or already gone
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                raise FailedPrecondition(f"{target} is not an empty directory after unmounting; it is left "
                                         "alone") from None
        log.info("unpublished volume %s from %s", volume_id, target)
        return csi_pb2.NodeUnpublishVolumeResponse()

    # -- stats -----------------------------------------------------------------------------------
    def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest,
                           context: Any) -> csi_pb2.NodeGetVolumeStatsResponse:
        volume_id = _required(request.volume_id, "volume_id")
        path = _required(request.volume_path, "volume_path")
        record = self.state.load(volume_id)
        try:
            path = self._path(path, "volume_path")
        except InvalidArgument as exc:
            raise NotFound(f"volume {volume_id} is not at {path!r}: {exc}") from None
        if record is None:
            raise NotFound(f"volume {volume_id} is not staged on this node")
        entry = mount_at(self.mounter.mounts(), path)
        if entry is None or not is_volume_mount(entry, record_ref(record)):
            raise NotFound(f"volume {volume_id} is neither staged nor published at {path}")
        problems = []
        if (problem := self.mounter.probe(path)) is not None:
            problems.append(f"{path}: {problem}")
            # Only a mount that does not answer needs its daemon looked up: one that answers has
            # one, even while a keeper's new daemon has yet to write its pid.
            if self.mounter.daemon_alive(record.staging_path) is False:
                problems.append(f"the obsfs daemon of {record.staging_path} is not running")
        if problems:
            problems.append("NodeStageVolume mounts it again, NodePublishVolume re-binds the pods' targets")
        usage = self._usage.get(volume_id, lambda: self._measure(record, context))
        if usage.problem is not None:
            problems.append(usage.problem)
        condition = csi_pb2.VolumeCondition(abnormal=bool(problems), message="; ".join(problems) or "healthy")
        if problems:
            log.warning("volume %s at %s is abnormal: %s", volume_id, path, condition.message)
        used = usage.bytes
        return csi_pb2.NodeGetVolumeStatsResponse(volume_condition=condition, usage=[
            _USAGE(unit=_USAGE.BYTES, used=used, total=usage.capacity,
                   available=max(0, usage.capacity - used) if usage.capacity else 0),
            _USAGE(unit=_USAGE.INODES, used=usage.objects),
        ])

    def _measure(self, record: StagedVolume, context: Any) -> Usage:
        """Count the volume's objects and bytes and read its capacity, with the keys of its stage."""
        keys = self.state.read_credentials(record.volume_id)
        if keys is None:
            return Usage(problem="the volume's credentials file is missing, so its usage cannot be measured")
        config = StoreConfig(endpoint=record.endpoint, access_key=keys[0], secret_key=keys[1], region=record.region,
                             signature=record.signature, path_style=record.path_style,
                             socket_timeout=STATS_SOCKET_TIMEOUT, read_deadline=STATS_DEADLINE)
        try:
            with open_volume(config, record_ref(record),
                             retry_budget(STATS_DEADLINE, context)) as volume:
                objects, size = volume.usage()
                try:
                    saved = volume.read_record()
                except FailedPrecondition as exc:  # a damaged record: usage without capacity
                    log.warning("volume %s: %s", record.volume_id, exc)
                    saved = None
        except StoreError as exc:
            return Usage(problem=f"the store cannot be asked about the volume: {exc}")
        return Usage(objects=objects, bytes=size, capacity=saved.capacity_bytes if saved else 0)

    # -- node ------------------------------------------------------------------------------------
    def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest,
                            context: Any) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[
            csi_pb2.NodeServiceCapability(rpc=_RPC(type=kind))
            for kind in (_RPC.STAGE_UNSTAGE_VOLUME, _RPC.GET_VOLUME_STATS, _RPC.VOLUME_CONDITION,
                         _RPC.VOLUME_MOUNT_GROUP)])

    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest, context: Any) -> csi_pb2.NodeGetInfoResponse:
        # No topology: every node reaches the store, so a volume may be used anywhere.
        return csi_pb2.NodeGetInfoResponse(node_id=self._node_id)


def _wanted(volume_id: str, staging: str, capability: csi_pb2.VolumeCapability, options: Mapping[str, str],
            config: StoreConfig, *, read_only: bool) -> StagedVolume:
    """The record of a volume about to be mounted at ``staging``: what its daemon is to be given."""
    flag_options, flags = parse_mount_flags(capability.mount.mount_flags)
    return StagedVolume(
        volume_id=volume_id, staging_path=staging, endpoint=config.endpoint, region=config.region,
        signature=config.signature, path_style=config.path_style, fsgroup=mount_gid(capability),
        read_only=read_only, options={**options, **flag_options}, flags=flags)


def _difference(current: StagedVolume, wanted: StagedVolume) -> str:
    """What differs, named by field (never a secret: records hold none)."""
    names = [name for name in ("endpoint", "region", "signature", "path_style", "fsgroup", "read_only", "options",
                               "flags", "staging_path") if getattr(current, name) != getattr(wanted, name)]
    return "other " + ", ".join(names)
