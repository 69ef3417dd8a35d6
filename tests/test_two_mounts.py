"""Two mounts (two nodes) writing one key at the same moment: whoever loses the race keeps its
bytes in a conflict copy; neither version vanishes while both writers are told it succeeded."""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import boto_client
from tests.gate import Gate
from tests.mounting import Mount, Mounter
from tests.s3server import S3Server

MIB = 1 << 20


def write_together(targets: list[Path], payloads: list[bytes]) -> None:
    """Each payload to its path from its own thread, released at once, closed with no delay."""
    start = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def write(path: Path, payload: bytes) -> None:
        try:
            start.wait()
            path.write_bytes(payload)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=write, args=pair) for pair in zip(targets, payloads, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def two_mounts(mounter: Mounter, server: S3Server, bucket: str, tmp_path: Path, *options: str) -> list[Mount]:
    return [mounter.mount(server, bucket, f"cache_dir={tmp_path / f'cache-{n}'}", "upload_delay=0", *options)
            for n in (1, 2)]


def versions_kept(s3: Any, bucket: str, name: str) -> set[bytes]:
    """The bodies at ``name`` and at its conflict copies."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=name)
            for o in page.get("Contents", [])]
    return {s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys
            if key == name or key.startswith(f"{name}.obsfs-conflict-")}


@pytest.fixture(params=["moto", "rgw"])
def server(request: pytest.FixtureRequest) -> S3Server:
    """moto checks the condition on CompleteMultipartUpload; Ceph RGW 16 ignores it."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("size", "options"), [
    (40 * MIB, ("multipart_size=5",)),  # streamed: parts go out while the files are written
    (12 * MIB, ("multipart_size=5", "parallel_count=1")),  # whole-file multipart after close
], ids=["streamed", "after-close"])
@pytest.mark.parametrize("head_between", [False, True], ids=["look-after-both", "look-between"])
def test_two_multipart_uploads_completing_together(mounter: Mounter, server: S3Server, tmp_path: Path,
                                                   size: int, options: tuple[str, ...], head_between: bool) -> None:
    """Both writers pass their checks, then both complete, one just after the other: the race
    that lost one version silently. The gate makes it happen every time. Whoever completes second
    is refused by the server (moto) or replaces the first (RGW). The first finds that out when it
    looks after completing, or (head_between: its look came before the second complete) when it
    looks again after the copy that gives a streamed upload its final attributes."""
    s3 = boto_client(server)
    bucket = f"race-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    gate = Gate(server.port, hold_completes=2, head_between=head_between)
    gate.start()
    try:
        gated = dataclasses.replace(server, endpoint=f"http://127.0.0.1:{gate.port}", proc=None)
        mounts = two_mounts(mounter, gated, bucket, tmp_path, *options)
        versions = [os.urandom(size), os.urandom(size)]
        write_together([m.path / "f" for m in mounts], versions)
        assert [m.umount() for m in mounts] == [0, 0]
        assert gate.completes == 2, "the uploads did not both complete: the race was not run"
    finally:
        gate.stop()
    assert versions_kept(s3, bucket, "f") == set(versions)


def test_two_single_puts_at_once(mounter: Mounter, moto: S3Server, tmp_path: Path) -> None:
    """Small files: the conditional PUT itself decides. On moto only: RGW 16 checks the condition
    apart from the write, so two PUTs checked at the same moment both pass and one version is lost,
    about 1 round in 70 (docs/write-back.md, measured without a proxy); four rounds would fail this
    test about one run in eighteen, for a loss no client can prevent there."""
    server = moto
    s3 = boto_client(server)
    bucket = f"race-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    mounts = two_mounts(mounter, server, bucket, tmp_path)
    payloads = {f"f{n}": [os.urandom(MIB), os.urandom(MIB)] for n in range(4)}
    for name, versions in payloads.items():
        write_together([m.path / name for m in mounts], versions)
    assert [m.umount() for m in mounts] == [0, 0]
    for name, versions in payloads.items():
        assert versions_kept(s3, bucket, name) == set(versions), name
