"""Session fixtures: a real moto S3 server on 127.0.0.1 (and Ceph RGW for the tests that need
signature checks), buckets, and store configs pointing at them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from obsfs.backend.base import StoreConfig
from obsfs.runtime import runtime_dir
from tests.mounting import Mount, Mounter, force_unmount, is_mounted, kill_daemon_of
from tests.s3server import S3Server, start_moto, start_rgw, stop_rgw


@pytest.fixture(scope="session", autouse=True)
def no_state_left() -> Iterator[None]:
    """A run leaves nothing behind. Daemons that tests kill (kill -9, crash tests, the CSI node's
    failure tests) or that are unmounted without ``obsfs umount`` leave their pid and status files
    in the runtime dir; those this session made go at its end, but a live daemon's pid file stays."""
    before = set(os.listdir(runtime_dir()))
    yield
    left = set(os.listdir(runtime_dir())) - before
    live = set()  # mounts whose daemon or keeper runs (maybe another session's): keep all their files
    for name in left:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if name.endswith((".pid", ".keeper")) and Path(f"/proc/{int((runtime_dir() / name).read_text())}").exists():
                live.add(name.split(".")[0])
    for name in left:
        if name.split(".")[0] not in live:
            (runtime_dir() / name).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def moto() -> Iterator[S3Server]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture
def private_moto() -> Iterator[S3Server]:
    """A server of the test's own, which it may kill or stop (SIGSTOP) without disturbing others."""
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    workdir = tmp_path_factory.mktemp("rgw")
    server = start_rgw(workdir)
    yield server
    stop_rgw(workdir)


def boto_client(server: S3Server):  # type: ignore[no-untyped-def]
    """An independent S3 client, to check what really reached the store."""
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1",
                        config=Config(connect_timeout=10, read_timeout=30, retries={"max_attempts": 2}))


def store_config(server: S3Server, **overrides: object) -> StoreConfig:
    base: dict[str, object] = dict(endpoint=server.endpoint, access_key=server.access_key,
                                   secret_key=server.secret_key, path_style=True,
                                   signature="v2" if server.kind == "rgw" else "v4",
                                   socket_timeout=5.0, read_deadline=10.0, write_deadline=30.0)
    base.update(overrides)
    return StoreConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def make_bucket(moto: S3Server) -> Callable[[], str]:
    """Create a fresh, uniquely named bucket on the moto server."""
    client = boto_client(moto)

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        client.create_bucket(Bucket=name)
        return name

    return make


@pytest.fixture
def bucket(make_bucket: Callable[[], str]) -> str:
    return make_bucket()


@pytest.fixture
def s3(moto: S3Server):  # type: ignore[no-untyped-def]
    return boto_client(moto)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    """Real FUSE mounts via the obsfs CLI; all are unmounted in teardown, also on failure."""
    m = Mounter(tmp_path)
    yield m
    problems = m.teardown()
    assert not problems, f"{problems}\n--- daemon logs ---\n{m.log_text()}"


@pytest.fixture
def small_disk(mounter: Mounter, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size (``"64m"``) for a cache dir. In teardown the obsfs mounts go
    first (their daemons hold files in it), then the tmpfs, even when the test failed."""
    disks: list[Path] = []

    def make(size: str) -> Path:
        path = tmp_path / f"disk{len(disks)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        disks.append(path)
        return path

    yield make
    problems = mounter.teardown()
    for path in disks:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)
            problems.append(f"{path}: tmpfs still busy after the mounts were gone")
    assert not problems, f"{problems}\n--- daemon logs ---\n{mounter.log_text()}"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A 0755 directory outside pytest's 0700 tmp tree, for mounts that processes of other uids walk
    into. Removed afterwards: anything still mounted inside is taken down first, whatever the order
    in which the test's other fixtures ended."""
    path = Path(tempfile.mkdtemp(prefix="obsfs-public-"))
    path.chmod(0o755)
    yield path
    for entry in path.iterdir():
        if is_mounted(entry):
            kill_daemon_of(entry)
            force_unmount(entry)
    shutil.rmtree(path)


@pytest.fixture
def mnt(mounter: Mounter, moto: S3Server, bucket: str) -> Mount:
    """A fresh bucket mounted at a fresh directory."""
    return mounter.mount(moto, bucket)
