"""Failure injection: the store goes away under a live mount. Readers get EIO within the deadline."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import boto_client
from tests.mounting import Mounter
from tests.s3server import S3Server

READER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
os.read(fd, 1 << 20)
print("started", flush=True)
sys.stdin.readline()  # the test kills the server, then lets us go on
start = time.monotonic()
try:
    while os.read(fd, 1 << 20):
        pass
    print("EOF", flush=True)
except OSError as exc:
    print(f"errno {exc.errno} after {time.monotonic() - start:.1f}", flush=True)
"""


def test_server_killed_during_read(private_moto: S3Server, mounter: Mounter) -> None:
    s3 = boto_client(private_moto)
    s3.create_bucket(Bucket="victim")
    s3.put_object(Bucket="victim", Key="big", Body=os.urandom(48 << 20))
    mnt = mounter.mount(private_moto, "victim", "deadline=3,readwrite_timeout=2")
    reader = subprocess.Popen([sys.executable, "-c", READER, str(mnt.path / "big")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdin is not None
    assert reader.stdout.readline().strip() == "started"
    private_moto.kill()
    reader.stdin.write("go\n")
    reader.stdin.flush()
    out, _ = reader.communicate(timeout=60)  # a hang fails here instead of blocking the suite
    word, code, _, seconds = out.split()
    assert (word, int(code)) == ("errno", errno.EIO)
    assert float(seconds) < 3 + 10
    # The mount itself still answers: cached metadata, and EIO (not a hang) for new lookups.
    start = time.monotonic()
    with pytest.raises(OSError) as err:
        os.listdir(mnt.path / "not-cached-dir")
    assert err.value.errno in (errno.EIO, errno.ENOENT)
    assert time.monotonic() - start < 3 + 10
    assert os.path.ismount(mnt.path)
