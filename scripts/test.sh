#!/usr/bin/env bash
# Installs everything (scripts/install.sh), then runs the linters, the type checker and the test
# suite. Tests start their own S3 servers on 127.0.0.1 and mount for real, so run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
echo "== ruff"
.venv/bin/ruff check obsfs csi tests
echo "== mypy"
.venv/bin/mypy obsfs csi tests
echo "== pytest"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
