"""One Ceph RGW (scripts/rgw.sh) for the whole bench, so every peer talks to the same server.

moto is far too slow to benchmark a client (its 8-way ranged GETs reach about 57 MB/s), so the bench
always uses RGW. All of its ports are picked free, because tests on this machine may run their own
cluster on the script's default monitor ports at the same time.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.procs import first_line

log = logging.getLogger(__name__)

RGW_SH = Path(__file__).resolve().parents[1] / "scripts" / "rgw.sh"
ACCESS_KEY = "AK"
SECRET_KEY = "SK"


@dataclass(frozen=True)
class Endpoint:
    url: str
    access_key: str
    secret_key: str


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free; the sockets stay open until all are picked, so they differ."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@contextmanager
def running_rgw(workdir: Path, osd_store: str, log_dir: Path) -> Iterator[Endpoint]:
    """Start RGW in ``workdir``; stop it and remove its data on the way out, whatever happened."""
    rgw_port, mon_v1, mon_v2 = free_ports(3)
    env = dict(os.environ, RGW_DIR=str(workdir), RGW_PORT=str(rgw_port), MON_PORT_V1=str(mon_v1),
               MON_PORT=str(mon_v2), OSD_STORE=osd_store, S3_ACCESS_KEY=ACCESS_KEY, S3_SECRET_KEY=SECRET_KEY)
    start_log = log_dir / "rgw-start.log"
    try:
        with start_log.open("wb") as out:
            code = subprocess.run([str(RGW_SH), "start"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        if code != 0:
            tail = start_log.read_text(errors="replace")[-2000:]
            raise BenchError(f"rgw.sh start failed with exit code {code}:\n{tail}")
        log.info("RGW (%s) answers on http://127.0.0.1:%d", osd_store, rgw_port)
        yield Endpoint(f"http://127.0.0.1:{rgw_port}", ACCESS_KEY, SECRET_KEY)
    finally:
        subprocess.run([str(RGW_SH), "stop"], env=dict(os.environ, RGW_DIR=str(workdir)),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        log.info("RGW stopped")


def ceph_version() -> str:
    return first_line(["radosgw", "--version"])
