"""Requests in flight when the daemon of a ``-o keeper`` mount is killed, and FUSE_INTERRUPT
(issue #14, items 4 and 5; docs/survival.md, "What a crash can cost").

A store proxy (``Hold``, tests/gate.py) keeps chosen requests of the daemon from the store, so the
daemon is known to be inside the FUSE request that made them when it is killed or when the
application is signalled. The application is a child process that makes its syscall through
ctypes: EINTR is seen as the kernel returns it (Python would retry it), and it can be signalled
or told to try again."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import queue
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gate import Held, Hold
from tests.mounting import Mount, Mounter, fsync_dir, fsync_tree, wait_for
from tests.s3server import S3Server
from tests.test_keeper import _mountinfo, _pid
from tests.test_survival import _kill_daemon
from tests.test_writeback import stored

# A held request must outlast the test's steps, not the SDK's timeouts (the Mounter's are short);
# written files stay unsent until the test fsyncs them.
OPTIONS = "keeper,readwrite_timeout=60,deadline=120,upload_delay=600"

APP = r"""
import ctypes, errno, hashlib, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGUSR1, lambda *_: None)  # installed without SA_RESTART
op, path, *rest = sys.argv[1:]
if op in ("read", "read-direct"):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if op == "read-direct" else 0))
    buf = ctypes.create_string_buffer(1 << 20)
    call = lambda: libc.pread(fd, buf, len(buf), ctypes.c_long(0))
elif op == "mkdir":
    call = lambda: libc.mkdir(os.fsencode(path), 0o750)
elif op == "symlink":
    call = lambda: libc.symlink(b"target", os.fsencode(path))
else:
    call = lambda: libc.rename(os.fsencode(path), os.fsencode(rest[0]))
print("ready", flush=True)
while True:
    result = call()
    if result >= 0:
        print("ok", hashlib.sha256(buf.raw[:result]).hexdigest() if op.startswith("read") else "", flush=True)
        break
    print(errno.errorcode[ctypes.get_errno()], flush=True)
    if ctypes.get_errno() != errno.ECONNABORTED or sys.stdin.readline() != "again\n":
        break
"""


@dataclasses.dataclass
class App:
    """A process making one syscall on the mount; after ECONNABORTED it makes it again when told."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = dataclasses.field(default_factory=queue.Queue)

    @classmethod
    def start(cls, op: str, *paths: Path) -> App:
        app = cls(subprocess.Popen([sys.executable, "-c", APP, op, *map(str, paths)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True))
        threading.Thread(target=app._relay, daemon=True).start()
        assert app.outcome() == "ready"
        return app

    def _relay(self) -> None:
        """Lines into a queue, so that a test waits for one with a timeout (a hang fails)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def outcome(self) -> str:
        """The next line the app prints: it prints one when its syscall has returned."""
        try:
            return self.lines.get(timeout=60)
        except queue.Empty:
            raise AssertionError("the app's syscall hangs") from None

    def again(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("again\n")
        self.proc.stdin.flush()
        return self.outcome()

    def state(self) -> str:
        """The kernel's scheduling state: S while a FUSE request waits interruptibly, D once a
        signal broke that wait (FUSE_INTERRUPT queued if a daemon had read the request) and it
        waits on for the answer."""
        with open(f"/proc/{self.proc.pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0]

    def signal(self) -> None:
        assert self.state() == "S"
        self.proc.send_signal(signal.SIGUSR1)


@dataclasses.dataclass
class Rig:
    """A ``-o keeper`` mount whose store requests pass through ``proxy``, and the apps using it."""

    mnt: Mount
    proxy: Hold
    bucket: str
    apps: list[App] = dataclasses.field(default_factory=list)

    def app(self, op: str, *paths: str) -> App:
        """An app making ``op`` on these paths below the mount."""
        app = App.start(op, *(self.mnt.path / p for p in paths))
        self.apps.append(app)
        return app

    def hold(self, method: str, keys: str, count: int = 1) -> Held:
        """Hold the next ``count`` requests ``method`` of keys matching the regex ``keys``."""
        return self.proxy.hold(rb"%s /%s/(%s)[ ?]" % (method.encode(), self.bucket.encode(), keys.encode()), count)

    def numbered(self) -> set[str]:
        """The paths that have an inode number on disk (inodes.db), the root left out."""
        with sqlite3.connect(self.mnt.path.parent / f"cache-{self.bucket}" / "inodes.db") as db:
            return {path for (path,) in db.execute("SELECT path FROM inodes WHERE path != ''")}


@contextlib.contextmanager
def _rigged(mounter: Mounter, moto: S3Server, bucket: str, options: str) -> Iterator[Rig]:
    """Unmounts before the proxy goes (the daemon's last flush goes through it), and ends the
    apps; ``mounter`` checks how the daemon exited."""
    proxy = Hold(moto.port)
    proxy.start()
    try:
        through = dataclasses.replace(moto, endpoint=f"http://127.0.0.1:{proxy.port}", proc=None)
        rig = Rig(mounter.mount(through, bucket, options), proxy, bucket)
        yield rig
        for app in rig.apps:
            app.proc.kill()
            app.proc.wait()
        assert rig.mnt.umount() == 0
    finally:
        proxy.stop()


@pytest.fixture
def rig(mounter: Mounter, moto: S3Server, bucket: str) -> Iterator[Rig]:
    with _rigged(mounter, moto, bucket, OPTIONS) as made:
        yield made


@pytest.fixture
def eager_rig(mounter: Mounter, moto: S3Server, bucket: str) -> Iterator[Rig]:
    """Uploads start at close (``upload_delay=0``), where they can be held."""
    with _rigged(mounter, moto, bucket, OPTIONS.replace("upload_delay=600", "upload_delay=0")) as made:
        yield made


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _ok(data: bytes) -> str:
    return f"ok {hashlib.sha256(data).hexdigest()}"


def test_requests_in_flight_at_a_kill(rig: Rig, s3: Any) -> None:
    """Five requests the daemon is serving, each waiting for the store, when it is killed (each
    in a directory of its own: the VFS serialises changes in one directory):

    - the READs end with ECONNABORTED. A buffered read(2) never sees it: its READ was readahead,
      and the kernel reads the page again itself, from the next daemon. An O_DIRECT read(2)
      returns it; the retry on the same fd reads the data.
    - two symlinks, whose PUT reached the store (after the kill) or never did: both
      ECONNABORTED; the link exists exactly if the PUT got there, and the retry gets what
      POSIX says for that (EEXIST or success). No inode number was handed out for either.
      (A symlink is stored at once; a mkdir no longer waits for the store, obsfs/dirtimes.py.)
    - a rename of a stored file, a copy and then a delete, killed between the two: both names
      exist (as after any interrupted rename on an object store); the retry completes it.

    And a rename of data not uploaded yet, over an older version in the store, answered before
    the kill: it sent nothing to the store (the old key's delete is journaled), so the next
    daemon shows the new name only. (It used to wait for a DELETE of the old key; killed then,
    the old version reappeared under the old name, and the retried rename copied it over the
    data the application had written.)
    """
    mnt = rig.mnt
    data = {name: os.urandom(1 << 20) for name in ("f1", "f2")}
    for key, body in [*data.items(), ("r/a", b"contents"), ("m1/", b""), ("m2/", b""), ("u/a", b"old")]:
        s3.put_object(Bucket=rig.bucket, Key=key, Body=body)
    info, dev = _mountinfo(mnt.path), os.stat(mnt.path).st_dev
    (mnt.path / "u" / "a").write_bytes(b"new")  # acknowledged at close, not uploaded (upload_delay)
    owed = rig.hold("DELETE", "u/a")
    unsent = rig.app("rename", "u/a", "u/b")
    wait_for(lambda: owed.arrived.is_set() or not unsent.lines.empty(), "the rename answered or sent a DELETE")
    assert not owed.arrived.is_set(), "the rename of unsent data waited for the store"
    assert unsent.outcome() == "ok"
    held = {"reads": rig.hold("GET", "f[12]", count=2), "made": rig.hold("PUT", "m1/d"),
            "lost": rig.hold("PUT", "m2/d"), "moved": rig.hold("DELETE", "r/a")}
    buffered, direct = rig.app("read", "f1"), rig.app("read-direct", "f2")
    made, lost, moved = rig.app("symlink", "m1/d"), rig.app("symlink", "m2/d"), rig.app("rename", "r/a", "r/b")
    assert all(h.arrived.wait(30) for h in held.values())
    _kill_daemon(mnt)  # and the mount answers again within 5 s
    assert [app.outcome() for app in (direct, made, lost, moved)] == ["ECONNABORTED"] * 4
    for name, h in held.items():
        h.release(to_store=name == "made")

    # (u/ is left out: the next daemon replays the journal, u/a's delete and u/b's upload, now.)
    assert [k for k in _keys(s3, rig.bucket) if k[:2] != "u/"] == ["f1", "f2", "m1/", "m1/d", "m2/", "r/a", "r/b"]
    assert not {"m1/d", "m2/d"} & rig.numbered()
    # Asked before any listing, while the kernel may still hold the negative entry of its LOOKUP
    # before the SYMLINK: then the daemon, not the kernel, finds the link that was made.
    assert (made.again(), lost.again()) == ("EEXIST", "ok")
    assert os.listdir(mnt.path / "m1") == os.listdir(mnt.path / "m2") == ["d"]
    assert os.path.islink(mnt.path / "m1" / "d") and os.path.islink(mnt.path / "m2" / "d")
    assert sorted(os.listdir(mnt.path / "r")) == ["a", "b"]
    assert (mnt.path / "r" / "a").read_bytes() == (mnt.path / "r" / "b").read_bytes() == b"contents"
    assert moved.again() == "ok"
    assert os.listdir(mnt.path / "r") == ["b"] and (mnt.path / "r" / "b").read_bytes() == b"contents"
    assert (buffered.outcome(), direct.again()) == (_ok(data["f1"]), _ok(data["f2"]))
    assert os.listdir(mnt.path / "u") == ["b"] and (mnt.path / "u" / "b").read_bytes() == b"new"
    fsync_tree(mnt.path / "u")
    fsync_dir(mnt.path / "u")
    assert _keys(s3, rig.bucket) == ["f1", "f2", "m1/", "m1/d", "m2/", "m2/d", "r/b", "u/b"]
    assert s3.get_object(Bucket=rig.bucket, Key="u/b")["Body"].read() == b"new"
    assert _mountinfo(mnt.path) == info and os.stat(mnt.path).st_dev == dev


def test_mkdir_answers_without_the_store_and_the_next_daemon_stores_it(rig: Rig, s3: Any) -> None:
    """mkdir answers once the directory is journaled; its marker is owed (obsfs/dirtimes.py)
    and goes out ``upload_delay`` later (600 s here). Killed before that, with the store holding
    every PUT of the markers, the next daemon shows both directories and sends their markers at
    once, with the attributes mkdir gave them; the removed one is not brought back."""
    mnt = rig.mnt
    held = rig.hold("PUT", "new/(sub/)?", count=2)
    made = rig.app("mkdir", "new")
    assert made.outcome() == "ok", "mkdir waited for the store"
    (mnt.path / "new" / "sub").mkdir()
    os.chmod(mnt.path / "new" / "sub", 0o700)  # the journal's row takes it
    (mnt.path / "gone").mkdir()
    os.rmdir(mnt.path / "gone")
    assert os.listdir(mnt.path) == ["new"] and os.listdir(mnt.path / "new") == ["sub"]
    assert stat.S_IMODE(os.stat(mnt.path / "new").st_mode) == 0o750
    assert not held.arrived.is_set() and _keys(s3, rig.bucket) == []
    _kill_daemon(mnt)
    assert held.arrived.wait(30), "the next daemon sends the owed markers"
    held.release(to_store=True)
    wait_for(lambda: _keys(s3, rig.bucket) == ["new/", "new/sub/"], "both markers are in the store")
    for key, mode in (("new/", 0o750), ("new/sub/", 0o700)):
        assert int(s3.head_object(Bucket=rig.bucket, Key=key)["Metadata"]["mode"]) == stat.S_IFDIR | mode
    assert os.listdir(mnt.path) == ["new"] and os.listdir(mnt.path / "new") == ["sub"]


def test_directory_rename_waits_for_a_marker_in_flight(rig: Rig, s3: Any) -> None:
    """A marker PUT that is still on its way when a directory above is renamed: the rename waits
    for it (and sends the markers still owed), or the PUT would land under the old name after
    the rename moved everything away, and the directory would be back there."""
    mnt = rig.mnt
    (mnt.path / "a" / "b").mkdir(parents=True)  # both markers owed (upload_delay=600)
    in_flight = rig.hold("PUT", "a/b/")
    flushing = threading.Thread(target=fsync_dir, args=(mnt.path / "a" / "b",))  # sends a/b/, held
    flushing.start()
    assert in_flight.arrived.wait(30)
    own = rig.hold("PUT", "a/")
    listing = rig.proxy.hold(rb"GET /%s/?\?\S*prefix=a%%2F" % rig.bucket.encode())  # what the rename moves
    rename = rig.app("rename", "a", "z")
    assert own.arrived.wait(30), "the rename sends the markers owed below it first"
    own.release(to_store=True)
    # Not a wait for the store: a rename that did not wait for a/b/ lists a/ at once. (Bounded,
    # so it can only miss a broken rename on a very slow machine, never fail a correct one.)
    assert not listing.arrived.wait(1), "the rename listed a/ while the PUT of a/b/ was on its way"
    in_flight.release(to_store=True)
    assert listing.arrived.wait(30)
    listing.release(to_store=True)
    assert rename.outcome() == "ok"
    flushing.join(30)
    assert _keys(s3, rig.bucket) == ["z/", "z/b/"]
    assert os.listdir(mnt.path) == ["z"] and os.listdir(mnt.path / "z") == ["b"]


def test_interrupts(rig: Rig, s3: Any) -> None:
    """pyfuse3 sets no interrupt callback, and libfuse answers no INTERRUPT of a request it knows:
    a signalled application waits for the handler's reply and gets it, not EINTR.

    Then three symlinks the daemon is serving and one queued behind them (the daemon is
    stopped), all signalled, and the daemon is killed (the directories they are made in were
    made just before, their markers still owed: the next daemon stores them). The three end with ECONNABORTED, and their
    INTERRUPTs, never read, end with them: the next daemon gets none for a request it never saw.
    The queued one, and its INTERRUPT, go to the next daemon, which serves it. Nothing is left
    waiting in the kernel afterwards."""
    mnt = rig.mnt
    held = rig.hold("PUT", "x")
    app = rig.app("symlink", "x")
    assert held.arrived.wait(30)
    app.signal()
    wait_for(lambda: app.state() == "D", "the signal broke the interruptible wait")
    held.release(to_store=True)
    assert app.outcome() == "ok"
    assert os.path.islink(mnt.path / "x") and _keys(s3, rig.bucket) == ["x"]

    for n in range(3):
        (mnt.path / f"p{n}").mkdir()
    held = rig.hold("PUT", r"p\d/d", count=3)
    served = [rig.app("symlink", f"p{n}/d") for n in range(3)]
    assert held.arrived.wait(30)
    os.kill(_pid(mnt, "pid"), signal.SIGSTOP)
    queued = rig.app("symlink", "e")
    wait_for(lambda: queued.state() == "S", "the queued symlink waits for a daemon")
    for app in [*served, queued]:
        app.signal()
    wait_for(lambda: all(app.state() == "D" for app in [*served, queued]), "every wait was interrupted")
    _kill_daemon(mnt)
    assert [app.outcome() for app in served] == ["ECONNABORTED"] * 3
    assert queued.outcome() == "ok"
    held.release(to_store=False)
    assert [app.again() for app in served] == ["ok"] * 3
    assert sorted(os.listdir(mnt.path)) == ["e", "p0", "p1", "p2", "x"]
    assert all(os.listdir(mnt.path / f"p{n}") == ["d"] for n in range(3))
    assert _waiting(mnt) == 0


def _waiting(mnt: Mount) -> int:
    """Requests of the mount's FUSE connection the kernel still waits on (fusectl's ``waiting``),
    read in a mount namespace of its own so that fusectl is not left mounted on the host."""
    dev = os.stat(mnt.path).st_dev
    connection = f"/sys/fs/fuse/connections/{os.major(dev) << 20 | os.minor(dev)}"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount -t fusectl none /sys/fs/fuse/connections && cat {connection}/waiting"],
                            capture_output=True, text=True, check=True, timeout=30)
    return int(result.stdout)



@pytest.mark.parametrize("closed", [False, True], ids=["still-open", "closed-again"])
def test_a_write_during_an_upload_goes_on_after_kill_9_without_a_conflict(eager_rig: Rig, s3: Any,
                                                                          closed: bool) -> None:
    """A file journaled at close is written again while its upload is on its way; the daemon is
    killed while the newer bytes' upload is. The journal row said the contents were based on no
    stored version; kept so once the upload had stored one, it made the next daemon's upload
    (``If-None-Match``) fail on our own object: a false conflict, the newer bytes under a
    conflict key and the older ones under the name (the path that fits what CI saw once in
    test_the_keeper_upgrades_itself_in_place, under load; not reproduced there). Closed again,
    the newer bytes were acknowledged: the next daemon uploads them. Still open, they were not:
    the fd goes on with them (handletable.py)."""
    rig = eager_rig
    path = rig.mnt.path / "held"
    # Opened for writing before the upload: an open for writing waits for a running one.
    writer = os.open(path, os.O_RDWR | os.O_CREAT)
    open_fds, sync_errors = [writer], list[int | None]()
    syncing = threading.Thread(target=_fsync, args=(writer, sync_errors))
    try:
        with open(path, "r+b") as other:
            other.write(b"before")
            first = rig.hold("PUT", "held")
        assert first.arrived.wait(30), "the close sends the upload (upload_delay=0)"
        assert os.pwrite(writer, b"after!", 0) == 6
        if closed:
            os.close(open_fds.pop())  # journaled; its upload follows the one on its way
        second = rig.hold("PUT", "held")
        first.release(to_store=True)
        if not closed:  # nothing else sends the open file's bytes: fsync does
            syncing.start()
        assert second.arrived.wait(30), "the newer bytes' upload follows the first one"
        assert stored(s3, rig.bucket, "held") == b"before"
        _kill_daemon(rig.mnt)
        second.release(to_store=False)
        if not closed:
            syncing.join(30)
            assert sync_errors == [errno.ECONNABORTED]
            assert os.pread(writer, 6, 0) == b"after!"
    finally:
        if syncing.is_alive():
            syncing.join(30)
        for fd in open_fds:
            os.close(fd)
    assert path.read_bytes() == b"after!"
    fsync_tree(rig.mnt.path)
    assert stored(s3, rig.bucket, "held") == b"after!"
    assert _keys(s3, rig.bucket) == ["held"]


def _fsync(fd: int, errors: list[int | None]) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        errors.append(exc.errno)
