#!/usr/bin/env bash
# Regenerates the checked-in CSI stubs (csi/v1/csi_pb2.py, csi_pb2.pyi, csi_pb2_grpc.py) from
# csi/proto/csi.proto, and the same three in csi/v0 from csi/proto/csi_v0.proto (CSI v0.3, for
# Kubernetes 1.11), with the grpcio-tools in .venv. Run it after editing the proto or upgrading
# grpcio-tools; tests/csi/test_proto.py fails while the checked-in stubs differ from its output.
#
# Usage: scripts/gen-proto.sh [OUT_ROOT]   (default: the repository root)
#
# Each proto is staged as csi/vN/csi.proto under a temporary include root, so that protoc names
# the Python module csi.vN.csi_pb2 and the gRPC stub imports it by that package path; protoc
# would otherwise emit a bare "import csi_pb2" that only works with csi/vN on sys.path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo}
python=${PYTHON:-$repo/.venv/bin/python}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cd "$stage"
for pair in v1:csi.proto v0:csi_v0.proto; do
  version=${pair%%:*} proto=${pair#*:}
  mkdir -p "csi/$version" "$out/csi/$version"
  cp "$repo/csi/proto/$proto" "csi/$version/csi.proto"
  "$python" -m grpc_tools.protoc -I . \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    "csi/$version/csi.proto"
  # protoc's .pyi generator annotates module-level extension numbers (CSI_SECRET_FIELD_NUMBER, ...)
  # as ClassVar[int], which is only legal inside a class body, so mypy rejects the whole stub.
  # Rewrite exactly those lines to plain int; everything else stays as protoc wrote it.
  sed -i -E 's/^([A-Z0-9_]+_FIELD_NUMBER): _ClassVar\[int\]$/\1: int/' "$out/csi/$version/csi_pb2.pyi"
done
