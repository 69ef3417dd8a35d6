"""Start and stop real S3 servers on 127.0.0.1 for tests: moto by default, Ceph RGW where asked."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RGW_SH = Path(__file__).resolve().parents[1] / "scripts" / "rgw.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses every connection: bound and never listening, so no other
    process can take it while the test uses it (a port found free and let go could be, under load)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up in {timeout} s")


@dataclass
class S3Server:
    """A running server: its endpoint and the keys it accepts."""

    endpoint: str
    access_key: str
    secret_key: str
    kind: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None  # the server's request log, for tests that count requests

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a paused server would ignore SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """Stop the server abruptly, as a crash or a network cut would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): the kernel still accepts connections, nothing ever answers,
        as with a hung server or a network that drops packets."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause``; the requests that queued up meanwhile are then answered."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def start_moto(self) -> None:
        """(Re)start a moto server on the same port; its state starts empty."""
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        wait_http(self.endpoint + "/", proc=self.proc)


    def requests(self, method: str, path_prefix: str) -> int:
        """How many requests of ``method`` for paths starting with ``path_prefix`` the server logged."""
        assert self.log_path is not None, "start the server with a log_path"
        needle = f'"{method} {path_prefix}'
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))  # 206s come coloured
        return sum(needle in line for line in text.splitlines())


def start_moto(port: int | None = None, log_path: Path | None = None) -> S3Server:
    port = port or free_port()
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", access_key="testing-ak",
                      secret_key="testing-sk-0123456789", kind="moto", port=port, log_path=log_path)
    server.start_moto()
    return server


def start_rgw(workdir: Path, osd_store: str = "memstore") -> S3Server:
    """Ceph RGW (scripts/rgw.sh; memstore unless told): the only server here that checks
    signatures. Every port is picked free, so a bench or another test session can run its own
    cluster meanwhile."""
    port, mon, mon_v1 = (free_port() for _ in range(3))
    env = dict(os.environ, RGW_DIR=str(workdir), RGW_PORT=str(port), MON_PORT=str(mon), MON_PORT_V1=str(mon_v1),
               OSD_STORE=osd_store)
    started = subprocess.run([str(RGW_SH), "start"], env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if started.returncode != 0:
        stop_rgw(workdir)
        raise RuntimeError(f"scripts/rgw.sh start failed ({started.returncode}):\n"
                           + started.stderr.decode(errors="replace")[-3000:])
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint + "/")
    return S3Server(endpoint=endpoint, access_key=env.get("S3_ACCESS_KEY", "AK"),
                    secret_key=env.get("S3_SECRET_KEY", "SK"), kind="rgw", port=port)


def stop_rgw(workdir: Path) -> None:
    subprocess.run([str(RGW_SH), "stop"], env=dict(os.environ, RGW_DIR=str(workdir)), check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
