#!/usr/bin/env bash
# Regenerates the checked-in CSI stubs (csi/v1/csi_pb2.py, csi_pb2.pyi, csi_pb2_grpc.py) from
# csi/proto/csi.proto with the grpcio-tools in .venv. Run it after editing the proto or upgrading
# grpcio-tools; tests/csi/test_proto.py fails while the checked-in stubs differ from its output.
#
# Usage: scripts/gen-proto.sh [OUT_ROOT]   (default: the repository root)
#
# The proto is staged as csi/v1/csi.proto under a temporary include root, so that protoc names
# the Python module csi.v1.csi_pb2 and the gRPC stub imports it by that package path; protoc
# would otherwise emit a bare "import csi_pb2" that only works with csi/v1 on sys.path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo}
python=${PYTHON:-$repo/.venv/bin/python}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/csi/v1" "$out/csi/v1"
cp "$repo/csi/proto/csi.proto" "$stage/csi/v1/csi.proto"

cd "$stage"
"$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  csi/v1/csi.proto

# protoc's .pyi generator annotates module-level extension numbers (CSI_SECRET_FIELD_NUMBER, ...)
# as ClassVar[int], which is only legal inside a class body, so mypy rejects the whole stub.
# Rewrite exactly those lines to plain int; everything else stays as protoc wrote it.
sed -i -E 's/^([A-Z0-9_]+_FIELD_NUMBER): _ClassVar\[int\]$/\1: int/' "$out/csi/v1/csi_pb2.pyi"
