"""Benchmark harness: obsfs against s3fs, rclone mount and the raw OBS SDK on one Ceph RGW (issues #3, #16).

Run it with ``scripts/bench.sh`` (``--quick`` for a smoke run). It is a measurement, not a test:
nothing here asserts on timings, but it fails loudly when data read back differs from what was written.
"""
