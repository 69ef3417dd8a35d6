#!/usr/bin/env bash
# Refreshes the lock files in requirements/ (exact versions, with the sha256 of every file PyPI has
# for them, for any platform, on Python 3.11) from pyproject.toml's ranges and requirements/build.in:
#   dev.txt      everything: runtime, dev and bench extras, build tools  (scripts/install.sh)
#   runtime.txt  runtime and build tools only, at dev.txt's versions   (the Dockerfile)
#   build.txt    the build tools alone, installed first                 (both)
# The resolver is uv, itself pinned with hashes in requirements/tools.txt, in a throw-away venv.
#
#   scripts/lock.sh              after editing dependencies in pyproject.toml: keeps every pin it can
#   scripts/lock.sh --upgrade    to take new releases on purpose (then run the tests; if grpcio-tools
#                                moved, regenerate the CSI stubs with scripts/gen-proto.sh)
# Extra arguments go to `uv pip compile` (e.g. --upgrade-package moto).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/tools.txt

compile() {
  "$tools/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --no-header --annotation-style line "$@"
}
stamp() { printf '# Made by scripts/lock.sh; do not edit. Install with pip --require-hashes (see scripts/install.sh).\n'; }

compile pyproject.toml requirements/build.in --extra dev --extra bench "$@" -o requirements/dev.txt
compile pyproject.toml requirements/build.in -c requirements/dev.txt -o requirements/runtime.txt
compile requirements/build.in -c requirements/dev.txt -o requirements/build.txt
for lock in dev runtime build; do
  { stamp; cat "requirements/$lock.txt"; } >"$tools/$lock" && mv "$tools/$lock" "requirements/$lock.txt"
done
echo "lock.sh: requirements/{dev,runtime,build}.txt refreshed; now run scripts/test.sh"
