#!/usr/bin/env bash
# The benchmark of issue #3: installs everything (scripts/install.sh; the lock includes the bench's
# matplotlib), then runs bench/run.py, which starts Ceph RGW with scripts/rgw.sh and compares obsfs with s3fs,
# rclone mount and the raw SDK. Run as root. Arguments go to bench/run.py:
#   ./scripts/bench.sh --quick            smoke run: small sizes, one run (a few minutes)
#   ./scripts/bench.sh                    full run: 1 GiB, 1,000 files, 10,000 objects, 3 runs
#   ./scripts/bench.sh --peers obsfs,s3fs --runs 5 --osd-store memstore
# Results: bench/results/<timestamp>.json and .png (git-ignored); the table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/python -m bench.run "$@"
