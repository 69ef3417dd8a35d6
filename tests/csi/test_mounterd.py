"""obsfs-mounter's protocol and service on a real unix socket, without a store: what it refuses,
whom it refuses, and that obsfs's exit codes and messages reach the plugin as if it ran obsfs itself."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi.errors import Aborted, CsiError, FailedPrecondition, InvalidArgument, Unavailable
from csi.mounter import Mounter, SocketMounter
from csi.mounterd import MounterService
from csi.mounterproto import MAX_LINE, parse_answer, parse_request


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MounterService]:
    kubelet = tmp_path / "kubelet"
    kubelet.mkdir()
    svc = MounterService(str(tmp_path / "run" / "mounter.sock"), kubelet_dir=str(kubelet))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def exchange(path: str, data: bytes) -> bytes:
    """Send raw bytes as one request; the answer line."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(path)
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        return conn.makefile("rb").readline()


@pytest.mark.parametrize(("line", "kind", "words"), [
    (b"not json\n", InvalidArgument, "not JSON"),
    (b"[1]\n", InvalidArgument, "JSON object"),
    (b'{"v": 1, "op": "hello"}', InvalidArgument, "one JSON line"),  # no newline: cut short
    (b'{"v": 2, "op": "hello"}\n', FailedPrecondition, "version 2"),
    (b'{"op": "hello"}\n', FailedPrecondition, "version None"),
    (b'{"v": 1, "op": "format"}\n', InvalidArgument, "unknown op 'format'"),
    (b'{"v": 1, "op": "umount"}\n', InvalidArgument, "'mountpoint'"),
    (b'{"v": 1, "op": "umount", "mountpoint": "rel/path"}\n', InvalidArgument, "absolute"),
    (b'{"v": 1, "op": "alive", "mountpoint": "/a", "force": true}\n', InvalidArgument, "no field 'force'"),
    (b'{"v": 1, "op": "mount", "source": "-ofoo", "mountpoint": "/a", "options": []}\n', InvalidArgument, "'-'"),
    (b'{"v": 1, "op": "mount", "source": "b", "mountpoint": "/a", "options": "ro"}\n', InvalidArgument, "list"),
    (b'{"v": 1, "op": "mount", "source": "b", "mountpoint": "/a", "options": [1]}\n', InvalidArgument, "strings"),
    (b'{"v": 1, "op": "mount", "source": "b\\u0000", "mountpoint": "/a", "options": []}\n', InvalidArgument, "NUL"),
    (b"{" + b" " * MAX_LINE + b"}\n", InvalidArgument, "at most"),
])
def test_bad_requests_are_refused_by_name(line: bytes, kind: type[CsiError], words: str) -> None:
    with pytest.raises(kind, match=words):
        parse_request(line)


def test_the_service_answers_bad_requests_with_their_error(service: MounterService) -> None:
    for line, code in ((b"{}\n", "FAILED_PRECONDITION"), (b"garbage\n", "INVALID_ARGUMENT"),
                       (b'{"v":1,"op":"umount","mountpoint":"/etc"}\n', "INVALID_ARGUMENT")):
        answer = json.loads(exchange(service.path, line))
        assert answer["v"] == 1 and answer["error"]["code"] == code, answer
    outside = json.loads(exchange(service.path, b'{"v":1,"op":"umount","mountpoint":"/etc"}\n'))
    assert "outside kubelet's directory" in outside["error"]["message"]


def test_hello_and_a_root_only_socket(service: MounterService) -> None:
    assert SocketMounter(service.path).hello()["versions"] == [1]
    assert stat.S_IMODE(os.stat(service.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(service.path)).st_mode) == 0o700


def test_a_non_root_peer_is_refused_even_through_open_permissions() -> None:
    """SO_PEERCRED holds when the modes do not: here the socket is open to all, outside pytest's
    0700 tree."""
    directory = tempfile.mkdtemp(prefix="mounter-", dir="/tmp")
    service = MounterService(f"{directory}/run/mounter.sock")
    service.start()
    os.chmod(f"{directory}/run", 0o755)
    os.chmod(directory, 0o755)
    os.chmod(service.path, 0o666)
    script = ("import os, socket, sys; os.setgid(65534); os.setuid(65534); s = socket.socket(socket.AF_UNIX); "
              "s.connect(sys.argv[1]); s.sendall(b'{\"v\":1,\"op\":\"hello\"}\\n'); "
              "sys.stdout.write(s.makefile().readline())")
    try:
        out = subprocess.run([sys.executable, "-c", script, service.path], capture_output=True, text=True,
                             timeout=30)
    finally:
        service.stop()
        shutil.rmtree(directory)
    assert out.returncode == 0, out.stderr
    with pytest.raises(CsiError, match="only root may use the obsfs mounter; uid 65534") as info:
        parse_answer(out.stdout.encode())
    assert info.value.code.name == "PERMISSION_DENIED"


def test_obsfs_exit_codes_and_messages_arrive_unchanged(service: MounterService, tmp_path: Path) -> None:
    """The same refused mount, run here and through the mounter, gives the same CSI error."""
    mountpoint = tmp_path / "kubelet" / "globalmount"
    mountpoint.mkdir()
    args = ("bucket", str(mountpoint), ["no_such_option=1"], "/var/log/x.log")
    errors = []
    for mounter in (Mounter(), SocketMounter(service.path)):
        with pytest.raises(CsiError) as info:
            mounter.mount_obsfs(*args)
        errors.append(info.value)
    assert type(errors[0]) is type(errors[1]) is InvalidArgument
    assert str(errors[0]) == str(errors[1]) and "no_such_option" in str(errors[0])
    # Nothing is mounted there: obsfs umount finds no daemon and fusermount3 says so.
    assert Mounter().unmount_obsfs(str(mountpoint)) == SocketMounter(service.path).unmount_obsfs(str(mountpoint))
    assert SocketMounter(service.path).daemon_alive(str(mountpoint)) is None  # no pid file


def test_a_busy_mount_point_is_aborted(service: MounterService, tmp_path: Path) -> None:
    mountpoint = str(tmp_path / "kubelet" / "globalmount")
    with service.locks.hold(mountpoint), pytest.raises(Aborted, match="already in progress"):
        SocketMounter(service.path).unmount_obsfs(mountpoint)


def test_an_absent_mounter_is_unavailable_and_says_where_to_look(tmp_path: Path) -> None:
    mounter = SocketMounter(str(tmp_path / "nobody.sock"))
    with pytest.raises(Unavailable, match="obsfs-csi-mounter pod"):
        mounter.unmount_obsfs("/x")
    assert mounter.daemon_alive("/x") is None
