"""The keeper's pieces that need no mount: option escaping, the INIT record and the handover
protocol (over a real socket, with a pipe standing in for the device), and the restart policy."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from obsfs import keeper


def test_fusermount_options_escape_commas_and_backslashes() -> None:
    assert keeper.escape_option("fsname=obsfs:b:/a,b\\c") == "fsname=obsfs:b:/a\\,b\\\\c"


def test_restart_policy() -> None:
    assert keeper.restart_wanted(-9, still_mounted=True)  # kill -9, OOM
    assert keeper.restart_wanted(1, still_mounted=True)  # a crash with a traceback
    assert not keeper.restart_wanted(1, still_mounted=False)  # unmounted, some uploads failed
    assert not keeper.restart_wanted(0, still_mounted=True)  # a clean stop: it unmounted
    assert keeper.restart_wanted(keeper.EXIT_HANDOVER, still_mounted=True)


def test_backoff_doubles_while_daemons_die_young_and_resets_after_a_long_life() -> None:
    backoff = keeper.Backoff(first=0.2, limit=1.0, settled_after=60)
    assert [backoff.next(lived=1) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.next(lived=600) == 0.2


def _daemon(path: str, reply: bytes, out: dict[str, object]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(path)
        init, fds, _, _ = socket.recv_fds(conn, keeper.READ_SIZE, 1)
        out["init"] = init
        out["same_device"] = os.fstat(fds[0]).st_ino
        os.close(fds[0])
        conn.send(reply)
        out["verdict"] = conn.recv(64)


def test_first_reply_goes_to_the_device_and_later_ones_must_equal_it(tmp_path: Path) -> None:
    device_r, device_w = os.pipe()
    record = keeper.InitRecord(b"INIT")
    listener = keeper.listen(str(tmp_path / "sock"))
    assert (tmp_path / "sock").stat().st_mode & 0o777 == 0o600
    verdicts = []
    for reply in (b"reply-1", b"reply-1", b"reply-2"):
        out: dict[str, object] = {}
        thread = threading.Thread(target=_daemon, args=(str(tmp_path / "sock"), reply, out))
        thread.start()
        keeper.serve_one(listener, device_w, record)
        thread.join()
        assert out["init"] == b"INIT"
        assert out["same_device"] == os.fstat(device_w).st_ino
        verdicts.append(out["verdict"])
    assert verdicts == [keeper.OK, keeper.OK, keeper.DIFFERS]
    os.set_blocking(device_r, False)
    assert os.read(device_r, 100) == b"reply-1"  # written once, by the first daemon only
    listener.close()


def test_what_a_keeper_carries_across_its_exec_reads_back_the_same() -> None:
    for reply in (None, b"\x00reply"):
        carried = keeper.Carried(device=5, listener=6, init=b"\x01INIT", reply=reply, daemon=1234, ready=-1,
                                 started=12.5, announce=-1, restart_at=None, delay=0.4, generation=2,
                                 handover_wanted=True)
        assert keeper.Carried.loads(carried.dumps()) == carried
    assert carried.fds() == [5, 6]
