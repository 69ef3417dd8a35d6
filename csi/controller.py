"""The Controller service: volumes as buckets (or prefixes) in the store.

Every call is idempotent because every step is: creating a bucket we own succeeds, markers and
records are plain PUTs, deleting what is gone succeeds. The controller holds no state; what a
volume is (name, capacity, context) lives in its record (see ``csi.volumes``). Credentials come
from each request's secrets, so one controller serves any number of stores and accounts.

RPCs not defined here (publish, listing, snapshots, ...) come from the generated base class,
which raises NotImplementedError; the interceptor turns that into UNIMPLEMENTED, as the spec
asks for calls a plugin does not offer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from csi.capabilities import capability_problem, require_capabilities
from csi.defaultsecret import DefaultSecret
from csi.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from csi.locks import VolumeLocks
from csi.naming import VolumeRef, label_for, parse_volume_id
from csi.params import SHARED_BUCKET, parse_parameters
from csi.pathpattern import claim_of
from csi.secrets import store_config
from csi.v1 import csi_pb2, csi_pb2_grpc
from csi.volumes import VolumeRecord, VolumeStore, open_volume, retry_budget
from obsfs.errors import BucketNotFound

log = logging.getLogger(__name__)

PROVISIONER_SECRET = "csi.storage.k8s.io/provisioner-secret-name"
EXPAND_SECRET = "csi.storage.k8s.io/controller-expand-secret-name"
_RPC = csi_pb2.ControllerServiceCapability.RPC


def requested_capacity(capacity_range: csi_pb2.CapacityRange) -> int:
    """The capacity to record: ``required_bytes``, else ``limit_bytes``, else 0 (unspecified)."""
    required, limit = capacity_range.required_bytes, capacity_range.limit_bytes
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range: required_bytes and limit_bytes must not be negative")
    if limit and required > limit:
        raise InvalidArgument(f"capacity_range: required_bytes {required} is larger than limit_bytes {limit}")
    return required or limit


def capacity_fits(capacity: int, capacity_range: csi_pb2.CapacityRange) -> bool:
    limit = capacity_range.limit_bytes
    return capacity >= capacity_range.required_bytes and (not limit or capacity <= limit)


def _for(record: VolumeRecord) -> str:
    """The volume being created, as messages name it: its claim when known (pathPattern's users
    think in claims), else the CO's volume name."""
    return f"PVC {record.claim}" if record.claim else f"volume {record.name!r}"


class ControllerServicer(csi_pb2_grpc.ControllerServicer):
    def __init__(self, default: DefaultSecret | None = None) -> None:
        self._locks = VolumeLocks()
        self._default = default or DefaultSecret(None)

    @contextmanager
    def _volume(self, secrets: Mapping[str, str], secret_ref: str, ref: VolumeRef,
                context: Any) -> Iterator[VolumeStore]:
        config = store_config(self._default.for_request(secrets), secret_ref)
        with open_volume(config, ref, retry_budget(config.read_deadline, context)) as volume:
            yield volume

    def CreateVolume(self, request: csi_pb2.CreateVolumeRequest, context: Any) -> csi_pb2.CreateVolumeResponse:
        if not request.name:
            raise InvalidArgument("name is missing")
        require_capabilities(request.volume_capabilities)
        if request.HasField("volume_content_source"):
            raise InvalidArgument("obsfs volumes cannot be created from a snapshot or another volume; "
                                  "remove dataSource from the PVC")
        if request.mutable_parameters:
            raise InvalidArgument("mutable_parameters are not supported (no MODIFY_VOLUME capability)")
        params = parse_parameters(request.parameters)
        wanted = VolumeRecord(request.name, requested_capacity(request.capacity_range), params.mount_options,
                              claim_of(request.parameters))
        label = label_for(request.name)
        if params.shared_bucket:
            ref = VolumeRef(params.shared_bucket, params.path.prefix_for(label, request.parameters))
        else:
            ref = VolumeRef(label)
        with self._locks.hold(ref.volume_id), \
                self._volume(request.secrets, PROVISIONER_SECRET, ref, context) as volume:
            if ref.prefix and not volume.bucket_exists():
                raise FailedPrecondition(f"bucket {ref.bucket!r} from StorageClass parameter {SHARED_BUCKET!r} "
                                         "does not exist; create it first")
            if not ref.prefix:
                volume.create_bucket()
            record = volume.read_record()
            if record is None and ref.prefix:
                enclosing = volume.enclosing_volume()
                if enclosing is not None:
                    raise AlreadyExists(f"{_for(wanted)}: {ref.volume_id} would be inside volume "
                                        f"{enclosing[1].owner()} at {enclosing[0]}, and deleting that one would "
                                        "delete this one; change the StorageClass's prefix or pathPattern")
            if record is None:
                foreign = volume.foreign_keys()
                if foreign:
                    raise AlreadyExists(f"{_for(wanted)}: {ref.volume_id} already holds data that obsfs-csi did "
                                        f"not provision (e.g. {foreign[0]!r}); use it as a static PV or choose "
                                        "another name")
                if ref.prefix:
                    volume.write_marker()
                volume.apply_quota(wanted.capacity_bytes)
                volume.write_record(wanted)
                record = wanted
            else:
                self._check_compatible(record, wanted, request.capacity_range, ref)
        return csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(
            volume_id=ref.volume_id, capacity_bytes=record.capacity_bytes, volume_context=record.volume_context))

    @staticmethod
    def _check_compatible(record: VolumeRecord, wanted: VolumeRecord, capacity_range: csi_pb2.CapacityRange,
                          ref: VolumeRef) -> None:
        if record.name != wanted.name:
            raise AlreadyExists(f"{_for(wanted)}: {ref.volume_id} is already volume {record.owner()}; delete that "
                                "volume, or change the StorageClass's prefix or pathPattern so that names differ")
        if not capacity_fits(record.capacity_bytes, capacity_range):
            reason = f"with capacity {record.capacity_bytes} bytes, outside the requested range"
        elif record.volume_context != wanted.volume_context:
            reason = "with other StorageClass parameters"
        else:
            return
        raise AlreadyExists(f"volume {wanted.name!r} already exists as {ref.volume_id}, but {reason}; "
                            "delete it first or use another name")

    def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest, context: Any) -> csi_pb2.DeleteVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is missing")
        try:
            ref = parse_volume_id(request.volume_id)
        except InvalidArgument as exc:
            log.info("DeleteVolume %s: nothing to delete, %s", request.volume_id, exc)
            return csi_pb2.DeleteVolumeResponse()
        with self._locks.hold(ref.volume_id), \
                self._volume(request.secrets, PROVISIONER_SECRET, ref, context) as volume:
            try:
                if volume.read_record() is None:
                    foreign = volume.foreign_keys()
                    if foreign:
                        raise FailedPrecondition(
                            f"{ref.volume_id} holds data (e.g. {foreign[0]!r}) but no record of obsfs-csi "
                            "having provisioned it, so it is left alone; delete it by hand if it must go")
                volume.purge()
            except BucketNotFound:
                pass  # already gone: success, as the spec asks
        return csi_pb2.DeleteVolumeResponse()

    def ValidateVolumeCapabilities(self, request: csi_pb2.ValidateVolumeCapabilitiesRequest,
                                   context: Any) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is missing")
        if not request.volume_capabilities:
            raise InvalidArgument("volume_capabilities is missing")
        parse_parameters(request.parameters)
        try:
            ref = parse_volume_id(request.volume_id)
        except InvalidArgument as exc:
            raise NotFound(str(exc)) from None
        if self._default.for_request(request.secrets):
            with self._volume(request.secrets, PROVISIONER_SECRET, ref, context) as volume:
                if not volume.exists():
                    raise NotFound(f"volume {ref.volume_id} does not exist")
        else:
            # No credential to ask the store with (CSI v0.3 sends none): a well-formed id is all
            # there is to go on. The mount checks the volume itself.
            log.info("ValidateVolumeCapabilities %s: no secrets and no driver credential; not checked in the "
                     "store", ref.volume_id)
        problems = [problem for cap in request.volume_capabilities if (problem := capability_problem(cap))]
        if problems:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message="; ".join(problems))
        return csi_pb2.ValidateVolumeCapabilitiesResponse(
            confirmed=csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=request.volume_context, volume_capabilities=request.volume_capabilities,
                parameters=request.parameters))

    def ControllerGetCapabilities(self, request: csi_pb2.ControllerGetCapabilitiesRequest,
                                  context: Any) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(rpc=_RPC(type=kind))
            for kind in (_RPC.CREATE_DELETE_VOLUME, _RPC.EXPAND_VOLUME)])

    def ControllerExpandVolume(self, request: csi_pb2.ControllerExpandVolumeRequest,
                               context: Any) -> csi_pb2.ControllerExpandVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is missing")
        if request.HasField("volume_capability"):
            require_capabilities([request.volume_capability])
        wanted = requested_capacity(request.capacity_range)
        if not wanted:
            raise InvalidArgument("capacity_range is missing: set required_bytes or limit_bytes")
        try:
            ref = parse_volume_id(request.volume_id)
        except InvalidArgument as exc:
            raise NotFound(str(exc)) from None
        with self._locks.hold(ref.volume_id), self._volume(request.secrets, EXPAND_SECRET, ref, context) as volume:
            record = volume.read_record()
            if record is None:
                if volume.exists():
                    raise FailedPrecondition(f"volume {ref.volume_id} was not provisioned by obsfs-csi, so it has "
                                             "no recorded capacity to change")
                raise NotFound(f"volume {ref.volume_id} does not exist")
            if wanted > record.capacity_bytes:
                record = dataclasses.replace(record, capacity_bytes=wanted)
                volume.apply_quota(record.capacity_bytes)
                volume.write_record(record)
        # A bucket has no filesystem to grow on the node: the new capacity is in force as recorded.
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=record.capacity_bytes,
                                                      node_expansion_required=False)
