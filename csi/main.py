"""``obsfs-csi``: the CSI plugin process.

Exit codes: 0 after a clean stop (SIGTERM or SIGINT), 2 for a configuration it cannot use (one
line on stderr says which), 1 for anything else. Flags fall back to the environment kubelet
deployments already set: ``CSI_ENDPOINT`` and ``NODE_ID``.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
from collections.abc import Mapping

from csi.driver import DRIVER_NAME, MODES, Driver, DriverConfig
from csi.server import serve_until_signalled
from obsfs import __version__
from obsfs.errors import ConfigError

log = logging.getLogger("csi")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obsfs-csi", description="CSI driver for OBS/S3 buckets mounted with obsfs.")
    parser.add_argument("--version", action="version", version=f"obsfs-csi {__version__}")
    parser.add_argument("--endpoint", default=env.get("CSI_ENDPOINT", ""),
                        help="unix:///path/to/csi.sock (default: $CSI_ENDPOINT)")
    parser.add_argument("--nodeid", default=env.get("NODE_ID", ""),
                        help="this node's name, required in node and all modes (default: $NODE_ID)")
    parser.add_argument("--mode", choices=MODES, default="all", help="services to serve (default: all)")
    parser.add_argument("--driver-name", default=DRIVER_NAME, help=f"CSI driver name (default: {DRIVER_NAME})")
    parser.add_argument("--state-dir", default="/var/lib/obsfs-csi",
                        help="node-local state of the node service (default: /var/lib/obsfs-csi)")
    parser.add_argument("--kubelet-dir", default="",
                        help="refuse node paths outside this directory, e.g. /var/lib/kubelet (default: any)")
    parser.add_argument("--credentials", default="",
                        help="the driver's default store credential, for requests without secrets: a mounted "
                             "Secret (one file per key) or a file of key=value lines, mode 0600 (default: none)")
    parser.add_argument("--mounter-socket", default=env.get("OBSFS_MOUNTER_SOCKET", ""),
                        help="have obsfs-mounter on this unix socket run the obsfs daemons, so that they "
                             "outlive this process and its container (default: $OBSFS_MOUNTER_SOCKET; "
                             "empty: run them here)")
    parser.add_argument("--metrics-address", default="",
                        help="HOST:PORT (or :PORT) to serve the Prometheus metrics of every volume on this node, "
                             "labelled by volume_id (node and all modes; default: off)")
    parser.add_argument("--grace-period", type=float, default=10.0,
                        help="seconds running calls get to finish on SIGTERM (default: 10)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG also logs request bodies, secrets redacted (default: INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()
    args = _parser(os.environ).parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s obsfs-csi[%(process)d] %(levelname)s %(name)s: %(message)s")
    if not args.endpoint:
        print("obsfs-csi: no endpoint: set --endpoint or CSI_ENDPOINT", file=sys.stderr)
        return 2
    try:
        driver = Driver(DriverConfig(endpoint=args.endpoint, mode=args.mode, driver_name=args.driver_name,
                                     node_id=args.nodeid, state_dir=args.state_dir,
                                     kubelet_dir=args.kubelet_dir, credentials=args.credentials,
                                     mounter_socket=args.mounter_socket, metrics_address=args.metrics_address))
        driver.start()
    except ConfigError as exc:
        print(f"obsfs-csi: {exc}", file=sys.stderr)
        return 2
    serve_until_signalled(driver.stop, args.grace_period)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
