"""``python -m bench.run [--quick]``: start RGW, run every peer through every workload, report.

Peers take turns within each run, and the order rotates from run to run, so that a noisy minute on
this shared machine does not always hit the same peer. Exit status: 0 when every workload of every
peer completed and every checksum matched, 1 otherwise (the table still shows what was measured).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.errors import BenchError
from bench.fixture import prepare
from bench.metrics import SDK, WORKLOADS, Results
from bench.peers import FUSE_PEERS, Peer
from bench.procs import drop_caches
from bench.profile import FULL, QUICK, Profile
from bench.report import failures_text, table, write_chart, write_json
from bench.rgw import ceph_version, running_rgw
from bench.session import Session
from bench.store import Store

log = logging.getLogger("bench")

BUCKET = "obsfs-bench"
RESULTS = Path(__file__).resolve().parent / "results"
ALL_PEERS = [*FUSE_PEERS, SDK]


class ElapsedFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("[%(elapsed)7.1fs] %(message)s")
        self.start = time.monotonic()

    def format(self, record: logging.LogRecord) -> str:
        record.elapsed = time.monotonic() - self.start
        return super().format(record)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes and one run: a smoke test")
    parser.add_argument("--runs", type=int, help="repetitions of every workload (default: 3, quick: 1)")
    parser.add_argument("--peers", default=",".join(ALL_PEERS),
                        help=f"comma-separated subset of {','.join(ALL_PEERS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)}: the groups to run")
    parser.add_argument("--osd-store", choices=["bluestore", "memstore"], default="bluestore",
                        help="RGW's OSD backend (bluestore on a sparse file, as deployed; memstore holds data in RAM)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    parser.add_argument("--hang-guard", type=float, default=1800.0,
                        help="seconds after which a mount that stopped answering is aborted (not a timing check)")
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(ALL_PEERS))
    if unknown or not peers:
        parser.error(f"unknown peers: {', '.join(unknown) or '(none given)'}")
    args.peers = [p for p in ALL_PEERS if p in peers]
    workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    unknown = sorted(workloads - set(WORKLOADS))
    if unknown or not workloads:
        parser.error(f"unknown workloads: {', '.join(unknown) or '(none given)'}")
    args.workloads = frozenset(workloads)
    return args


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP take the same way out as Ctrl-C: through every teardown."""
    raise KeyboardInterrupt(f"signal {signum}")


def check_tools() -> None:
    """What every peer needs; a missing peer of its own is reported in the table (``Peer.missing``)."""
    if shutil.which("fusermount3") is None:
        raise BenchError("fusermount3 is missing; run scripts/install.sh")
    if os.geteuid() != 0:
        raise BenchError("run as root: cold reads drop the page cache and RGW needs root")


def safe_rmtree(path: Path) -> None:
    """Remove the work dir, unless something is still mounted below it: never recurse into a bucket."""
    with open("/proc/self/mountinfo") as stream:
        below = [line.split()[4] for line in stream if line.split()[4].startswith(f"{path}/")]
    if below:
        log.error("leaving %s in place: still mounted below it: %s", path, ", ".join(below))
        return
    shutil.rmtree(path, ignore_errors=True)


def run_all(args: argparse.Namespace, profile: Profile, workdir: Path, results: Results,
            meta: dict[str, Any]) -> None:
    (workdir / "logs").mkdir()
    with running_rgw(workdir / "ceph", args.osd_store, workdir / "logs") as endpoint:
        store = Store(endpoint, BUCKET)
        try:
            fx = prepare(store, profile, workdir)
            peers: dict[str, Peer] = {}
            for name in args.peers:
                if name == SDK:
                    continue
                peer = FUSE_PEERS[name](endpoint, BUCKET, workdir, args.hang_guard)
                reason = peer.missing()
                if reason is None:
                    peers[name] = peer
                else:
                    log.error("%s: left out: %s", name, reason)
                    results.fail(name, 0, "any", reason)
            meta["versions"] = {name: peer.version() for name, peer in peers.items()}
            meta["versions"]["ceph"] = ceph_version()
            running = [name for name in args.peers if name == SDK or name in peers]
            for run in range(1, profile.runs + 1):
                turn = (run - 1) % len(running)
                order = running[turn:] + running[:turn]
                log.info("== run %d of %d: %s", run, profile.runs, ", ".join(order))
                session = Session(fx, results, run, args.workloads)
                try:
                    for name in order:
                        if name == SDK:
                            session.sdk()
                        else:
                            session.fuse(peers[name])
                finally:
                    session.finish()
        finally:
            store.close()


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ElapsedFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)

    base = QUICK if args.quick else FULL
    profile = Profile(**{**base.__dict__, "runs": args.runs or base.runs})
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    meta: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"), "profile": profile.name, "peers": args.peers,
        "osd_store": args.osd_store, "workloads": sorted(args.workloads), "kernel": platform.release(),
        "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "page_cache_dropped": True,
    }
    results = Results()
    check_tools()
    meta["page_cache_dropped"] = drop_caches()
    workdir = Path(tempfile.mkdtemp(prefix="obsfs-bench-"))
    log.info("bench %s, profile %s, peers %s, work dir %s", stamp, profile.name, ",".join(args.peers), workdir)
    fatal: BaseException | None = None
    try:
        run_all(args, profile, workdir, results, meta)
    except KeyboardInterrupt as exc:
        log.error("interrupted; mounts torn down, RGW stopped")
        fatal = exc
    except BenchError as exc:
        log.error("bench aborted: %s", exc)
        fatal = exc
    finally:
        if (results.failures or fatal is not None) and (workdir / "logs").is_dir():
            kept = args.out / f"{stamp}-logs"
            shutil.copytree(workdir / "logs", kept, dirs_exist_ok=True, ignore_dangling_symlinks=True)
            log.info("logs of the mounts kept in %s", kept)
        safe_rmtree(workdir)

    if fatal is not None:
        meta["aborted"] = f"{type(fatal).__name__}: {fatal}"
    meta["loadavg_end"] = os.getloadavg()
    meta["finished"] = datetime.now().isoformat(timespec="seconds")
    text = table(results, profile, args.peers)
    print(text)
    failures = failures_text(results)
    if failures:
        print(failures)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"{stamp}.json", args.out / f"{stamp}.png"
    write_json(json_path, meta, profile, results, args.peers, text)
    write_chart(png_path, profile, results, args.peers)
    print(f"results: {json_path}  chart: {png_path}")
    if isinstance(fatal, KeyboardInterrupt):
        return 130
    return 1 if fatal is not None or results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
