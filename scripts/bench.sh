#!/usr/bin/env bash
# The benchmark of issues #3 and #16: installs everything (scripts/install.sh; the lock includes the bench's
# matplotlib), then runs bench/run.py, which starts Ceph RGW with scripts/rgw.sh and compares obsfs with s3fs,
# rclone mount and the raw SDK. Run as root. Arguments go to bench/run.py:
#   ./scripts/bench.sh --quick            smoke run: small sizes, one run (a few minutes)
#   ./scripts/bench.sh                    full run: 1 GiB, 1,000 files, ls -l of 10,000 objects, rm -r of
#                                         1,000 files and of 6,400 in 1,024 dirs, cp -r of 6,400 in 1,024
#                                         dirs, mount start-up, daemon CPU and RSS; 3 runs
#   ./scripts/bench.sh --peers obsfs,s3fs --runs 5 --osd-store memstore
#   ./scripts/bench.sh --peers obsfs,obsfs-nokeeper --workloads write,read   what the keeper costs (#14.4)
# Results: bench/results/<timestamp>.json and .png (git-ignored); the table, with the ratios of obsfs to
# every peer and the targets of issue #16, is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/python -m bench.run "$@"
