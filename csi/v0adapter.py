"""CSI v0.3 (package ``csi.v0``) served by the v1 servicers, on the same socket.

Kubernetes 1.11 / OpenShift 3.11 and the v0.4 sidecars speak only v0.3. Rather than a second
implementation, each v0 call is translated into the v1 request, handed to the v1 servicer, and
its answer translated back, so that both versions share every check, lock and error message.

Translation goes field by field by name. The two versions mostly share names; the differences
are one table per direction (``_TO_V1``, ``_TO_V0``), keyed by field name or by
``Message.field`` where a name means something else elsewhere (``Volume.id``). Enum values are
matched by name. A field that is set but has no counterpart fails the call with
INVALID_ARGUMENT instead of being dropped silently; capabilities v0 cannot express (volume
expansion, VOLUME_CONDITION, VOLUME_MOUNT_GROUP, ...) are left out of the v0 answers.

csi-provisioner v0.4 passes the StorageClass keys naming its Secrets (``csiProvisionerSecretName``
and the like) on in CreateVolume's parameters; they are not options, so they are dropped before
the v1 controller checks the parameters against its allow-list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from csi.controller import ControllerServicer
from csi.errors import InvalidArgument
from csi.identity import IdentityServicer
from csi.node import NodeServicer
from csi.server import Registration
from csi.v0 import csi_pb2 as v0
from csi.v0 import csi_pb2_grpc as v0_grpc
from csi.v1 import csi_pb2 as v1

M = TypeVar("M", bound=Message)

# v0 name -> v1 name; every v0 secrets map is v1's plain ``secrets``.
_TO_V1: Mapping[str, str] = {
    **{f"{kind}_secrets": "secrets" for kind in ("controller_create", "controller_delete", "controller_publish",
                                                  "controller_unpublish", "node_stage", "node_publish")},
    "volume_attributes": "volume_context",
    "publish_info": "publish_context",
    "Volume.id": "volume_id",
    "Volume.attributes": "volume_context",
    "SnapshotSource.id": "snapshot_id",
}
# v1 name -> v0 name, for the answers.
_TO_V0: Mapping[str, str] = {
    "Volume.volume_id": "id",
    "Volume.volume_context": "attributes",
}

# The StorageClass keys csi-provisioner v0.4 reads its Secrets from; it passes them on unchanged.
DEPRECATED_SECRET_PARAMETERS = frozenset(
    f"csi{operation}Secret{part}" for operation in ("Provisioner", "ControllerPublish", "NodeStage", "NodePublish")
    for part in ("Name", "Namespace"))


class Untranslatable(InvalidArgument):
    """A field or enum value that is set on one side and has no counterpart on the other."""


def translate(source: Message, target_type: type[M], renames: Mapping[str, str]) -> M:
    """``source`` as a ``target_type``, its fields renamed by ``renames``."""
    target = target_type()
    _fill(source, target, renames)
    return target


def _fill(source: Message, target: Message, renames: Mapping[str, str]) -> None:
    target.SetInParent()  # an empty message that was set stays set (e.g. VolumeCapability.mount)
    prefix = source.DESCRIPTOR.name
    for field, value in source.ListFields():
        name = renames.get(f"{prefix}.{field.name}", renames.get(field.name, field.name))
        counterpart = target.DESCRIPTOR.fields_by_name.get(name)
        if counterpart is None:
            raise Untranslatable(f"{source.DESCRIPTOR.full_name}: field {field.name} is not supported by obsfs-csi "
                                 f"in {target.DESCRIPTOR.file.package}")
        slot = getattr(target, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            slot.update(value)  # CSI maps are all map<string, string>
        elif field.is_repeated:
            for item in value:
                if field.message_type is not None:
                    _fill(item, slot.add(), renames)
                else:
                    slot.append(_scalar(field, item, counterpart))
        elif field.message_type is not None:
            _fill(value, slot, renames)
        else:
            setattr(target, name, _scalar(field, value, counterpart))


def _scalar(field: FieldDescriptor, value: Any, counterpart: Any) -> Any:
    """Scalars unchanged; enum values by name, since the numbers need not agree. A number the
    sender's enum does not define passes unchanged, for the v1 logic to judge as unknown."""
    if field.enum_type is None or value not in field.enum_type.values_by_number:
        return value
    name = field.enum_type.values_by_number[value].name
    enum = counterpart.enum_type
    if name not in enum.values_by_name:
        raise Untranslatable(f"{field.enum_type.full_name}.{name} has no counterpart in {enum.full_name}")
    return enum.values_by_name[name].number


def _expressible(capabilities: Any, v0_type: type[M]) -> list[M]:
    """The v1 capabilities that v0 can say, as v0 messages; the others are left out."""
    kept = []
    for capability in capabilities:
        try:
            kept.append(translate(capability, v0_type, _TO_V0))
        except Untranslatable:
            continue
    return kept


class _Adapter:
    """Relays v0 calls of one service to the v1 servicer ``v1_servicer``."""

    _service = ""

    def __init__(self, v1_servicer: Any) -> None:
        self._v1 = v1_servicer

    def _method(self, module: Any, method: str) -> Any:
        """The descriptor of ``method`` of this service in ``module`` (``v0`` or ``v1``)."""
        return module.DESCRIPTOR.services_by_name[self._service].methods_by_name[method]

    def _call(self, method: str, request: Message, context: Any) -> Any:
        """Call the v1 method with ``request`` translated; returns the v1 response."""
        v1_request = getattr(v1, self._method(v1, method).input_type.name)
        return getattr(self._v1, method)(translate(request, v1_request, _TO_V1), context)

    def _relay(self, method: str, request: Message, context: Any) -> Message:
        """``_call``, with the response translated to the v0 method's response type."""
        v0_response = getattr(v0, self._method(v0, method).output_type.name)
        return translate(self._call(method, request, context), v0_response, _TO_V0)


def _relayed(method: str) -> Callable[[_Adapter, Message, Any], Message]:
    """A servicer method that relays ``method`` unchanged in meaning."""
    def relay(self: _Adapter, request: Message, context: Any) -> Message:
        return self._relay(method, request, context)
    relay.__name__ = method
    return relay


class IdentityV0(_Adapter, v0_grpc.IdentityServicer):  # type: ignore[misc]
    _service = "Identity"
    GetPluginInfo = _relayed("GetPluginInfo")
    Probe = _relayed("Probe")

    def GetPluginCapabilities(self, request: v0.GetPluginCapabilitiesRequest,
                              context: Any) -> v0.GetPluginCapabilitiesResponse:
        response = self._call("GetPluginCapabilities", request, context)
        return v0.GetPluginCapabilitiesResponse(
            capabilities=_expressible(response.capabilities, v0.PluginCapability))


class ControllerV0(_Adapter, v0_grpc.ControllerServicer):  # type: ignore[misc]
    _service = "Controller"
    DeleteVolume = _relayed("DeleteVolume")

    def CreateVolume(self, request: v0.CreateVolumeRequest, context: Any) -> Message:
        trimmed = v0.CreateVolumeRequest()
        trimmed.CopyFrom(request)
        for key in DEPRECATED_SECRET_PARAMETERS & set(trimmed.parameters):
            del trimmed.parameters[key]
        return self._relay("CreateVolume", trimmed, context)

    def ValidateVolumeCapabilities(self, request: v0.ValidateVolumeCapabilitiesRequest,
                                   context: Any) -> v0.ValidateVolumeCapabilitiesResponse:
        # v1 echoes what it confirmed; v0 has a flag and a message.
        response = self._call("ValidateVolumeCapabilities", request, context)
        return v0.ValidateVolumeCapabilitiesResponse(supported=response.HasField("confirmed"),
                                                     message=response.message)

    def ControllerGetCapabilities(self, request: v0.ControllerGetCapabilitiesRequest,
                                  context: Any) -> v0.ControllerGetCapabilitiesResponse:
        response = self._call("ControllerGetCapabilities", request, context)
        return v0.ControllerGetCapabilitiesResponse(
            capabilities=_expressible(response.capabilities, v0.ControllerServiceCapability))


class NodeV0(_Adapter, v0_grpc.NodeServicer):  # type: ignore[misc]
    _service = "Node"
    NodeStageVolume = _relayed("NodeStageVolume")
    NodeUnstageVolume = _relayed("NodeUnstageVolume")
    NodePublishVolume = _relayed("NodePublishVolume")
    NodeUnpublishVolume = _relayed("NodeUnpublishVolume")
    NodeGetInfo = _relayed("NodeGetInfo")

    def NodeGetId(self, request: v0.NodeGetIdRequest, context: Any) -> v0.NodeGetIdResponse:
        """Deprecated in v0.3, but driver-registrar v0.4 asks it instead of NodeGetInfo."""
        info: Any = self._v1.NodeGetInfo(v1.NodeGetInfoRequest(), context)
        return v0.NodeGetIdResponse(node_id=info.node_id)

    def NodeGetCapabilities(self, request: v0.NodeGetCapabilitiesRequest,
                            context: Any) -> v0.NodeGetCapabilitiesResponse:
        response = self._call("NodeGetCapabilities", request, context)
        return v0.NodeGetCapabilitiesResponse(capabilities=_expressible(response.capabilities,
                                                                        v0.NodeServiceCapability))


def registrations(identity: IdentityServicer, controller: ControllerServicer | None,
                  node: NodeServicer | None) -> list[Registration]:
    """The v0 counterparts of the v1 servicers a mode serves, for ``csi.server.CsiServer``."""
    found: list[Registration] = [functools.partial(v0_grpc.add_IdentityServicer_to_server, IdentityV0(identity))]
    if controller is not None:
        found.append(functools.partial(v0_grpc.add_ControllerServicer_to_server, ControllerV0(controller)))
    if node is not None:
        found.append(functools.partial(v0_grpc.add_NodeServicer_to_server, NodeV0(node)))
    return found
