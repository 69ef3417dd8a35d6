"""The checked-in stubs are exactly what scripts/gen-proto.sh makes from csi/proto/csi.proto."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, cast

import pytest

from csi.v1 import csi_pb2

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")
_CSI_SECRET = cast(Any, csi_pb2.csi_secret)


@pytest.mark.parametrize("name", GENERATED)
def test_regenerating_gives_identical_stubs(tmp_path: Path, name: str) -> None:
    subprocess.run([str(REPO / "scripts" / "gen-proto.sh"), str(tmp_path)], check=True, capture_output=True)
    fresh = (tmp_path / "csi" / "v1" / name).read_bytes()
    assert fresh == (REPO / "csi" / "v1" / name).read_bytes(), f"csi/v1/{name} is stale: run scripts/gen-proto.sh"


def _all_messages() -> list[Any]:
    found = []
    pending = list(csi_pb2.DESCRIPTOR.message_types_by_name.values())
    while pending:
        message = pending.pop()
        found.append(message)
        pending.extend(message.nested_types)
    return found


def test_every_secrets_field_is_marked_and_top_level() -> None:
    """The interceptor redacts fields marked csi_secret on the request itself; that covers all
    secrets only if every secrets map is marked and none sits in a nested message."""
    marked = {f for m in _all_messages() for f in m.fields if f.GetOptions().Extensions[_CSI_SECRET]}
    named = {f for m in _all_messages() for f in m.fields if f.name == "secrets"}
    assert marked == named
    assert all(f.containing_type.containing_type is None for f in marked)
    assert "csi.v1.NodeStageVolumeRequest.secrets" in {f.full_name for f in marked}
