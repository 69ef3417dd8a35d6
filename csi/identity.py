"""The Identity service: name, version, capabilities and readiness.

Probe distinguishes the three answers the spec allows: FAILED_PRECONDITION when a dependency is
missing (the plugin needs fixing or restarting), ``ready=false`` while start-up is still under
way, and ``ready=true`` after it. Dependencies are checks handed in by the driver, so each mode
only checks what it uses.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.wrappers_pb2 import BoolValue

import obsfs
from csi.errors import FailedPrecondition
from csi.v1 import csi_pb2, csi_pb2_grpc

# A dependency check: returns what is wrong, or None when all is well.
Check = Callable[[], str | None]

_SERVICE = csi_pb2.PluginCapability.Service
_EXPANSION = csi_pb2.PluginCapability.VolumeExpansion


def char_device_check(path: str) -> Check:
    def check() -> str | None:
        try:
            if stat.S_ISCHR(os.stat(path).st_mode):
                return None
        except OSError:
            pass
        return f"{path} is not available; the node plugin needs it (privileged container, /dev mounted)"
    return check


def command_check(name: str) -> Check:
    def check() -> str | None:
        if shutil.which(name):
            return None
        return f"the command {name} is not on PATH; the node plugin's image must provide it"
    return check


def writable_dir_check(path: str) -> Check:
    def check() -> str | None:
        if os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK):
            return None
        return f"state directory {path} is missing or not writable; check --state-dir and its hostPath mount"
    return check


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, driver_name: str, ready: threading.Event, checks: Sequence[Check] = ()) -> None:
        self._name = driver_name
        self._ready = ready
        self._checks = checks

    def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest, context: Any) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=self._name, vendor_version=obsfs.__version__)

    def GetPluginCapabilities(self, request: csi_pb2.GetPluginCapabilitiesRequest,
                              context: Any) -> csi_pb2.GetPluginCapabilitiesResponse:
        # The same answer in every mode: the spec asks all instances of one version to agree.
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=[
            csi_pb2.PluginCapability(service=_SERVICE(type=_SERVICE.CONTROLLER_SERVICE)),
            csi_pb2.PluginCapability(volume_expansion=_EXPANSION(type=_EXPANSION.ONLINE)),
        ])

    def Probe(self, request: csi_pb2.ProbeRequest, context: Any) -> csi_pb2.ProbeResponse:
        problems = [problem for check in self._checks if (problem := check())]
        if problems:
            raise FailedPrecondition("; ".join(problems))
        return csi_pb2.ProbeResponse(ready=BoolValue(value=self._ready.is_set()))
