"""The obsfs command line: exit codes with one readable line, signals, and where secrets go."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from obsfs.runtime import state_file
from tests.mounting import OBSFS, Mounter, is_mounted, write_passwd
from tests.s3server import S3Server, refusing_port


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_bucket(mounter: Mounter, moto: S3Server) -> None:
    result, mount = mounter.run(moto, "no-such-bucket-here")
    assert result.returncode == 4
    assert "no-such-bucket-here" in one_line(result) and "does not exist" in one_line(result)
    assert not is_mounted(mount.path)


def test_passwd_file_readable_by_others(moto: S3Server, bucket: str, tmp_path: Path) -> None:
    passwd = write_passwd(tmp_path, moto)
    passwd.chmod(0o644)
    (tmp_path / "mnt").mkdir()
    result = subprocess.run([*OBSFS, "mount", bucket, str(tmp_path / "mnt"), "-o",
                             f"url={moto.endpoint},passwd_file={passwd}"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "chmod 600" in one_line(result)
    assert moto.secret_key not in result.stderr


@pytest.mark.parametrize("problem", ["missing", "file", "nonempty"])
def test_bad_mountpoint(mounter: Mounter, moto: S3Server, bucket: str, tmp_path: Path, problem: str) -> None:
    target = tmp_path / "target"
    if problem == "file":
        target.write_text("x")
    elif problem == "nonempty":
        target.mkdir()
        (target / "something").write_text("x")
    result, _ = mounter.run(moto, bucket, target)
    assert result.returncode == 2
    assert str(target) in one_line(result)


def test_unknown_option_is_named(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    result, _ = mounter.run(moto, bucket, None, "r0")
    assert result.returncode == 2
    assert "'r0'" in one_line(result)


def test_unreachable_endpoint(mounter: Mounter, moto: S3Server, bucket: str) -> None:
    with refusing_port() as port:
        closed = S3Server(endpoint=f"http://127.0.0.1:{port}", access_key="a", secret_key="b", kind="moto", port=0)
        start = time.monotonic()
        result, _ = mounter.run(closed, bucket, None, "deadline=2")
    assert result.returncode == 5
    assert "refused" in one_line(result)
    assert time.monotonic() - start < 30


def test_no_credentials(moto: S3Server, bucket: str, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    env = {k: v for k, v in os.environ.items() if "ACCESS_KEY" not in k and "SECRET" not in k}
    env["HOME"] = str(tmp_path)
    result = subprocess.run([*OBSFS, "mount", bucket, str(tmp_path / "mnt"), "-o", f"url={moto.endpoint}"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "passwd_file" in one_line(result)


def daemon_pid(mountpoint: Path) -> int:
    return int(state_file(str(mountpoint), "pid").read_text())


def _argv_of(pid: int) -> list[str]:
    return [arg.decode() for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("keeper", [False, True], ids=["nokeeper", "keeper"])
def test_the_daemon_is_forked_not_started_again(mounter: Mounter, moto: S3Server, bucket: str, keeper: bool) -> None:
    """The daemon that first serves is ``obsfs mount`` itself, forked: it still runs the command
    line it was given. A second interpreter (the slow start: about 0.1 s of its own, plus the
    imports this command already made) would need one of its own, with -f. With a keeper (the
    default), the command forks it before it becomes the keeper, a fresh and small image
    (``python -m obsfs.keeper``) whose child the daemon then is: the daemon imports the filesystem
    while the keeper starts and mounts, instead of after."""
    mnt = mounter.mount(moto, bucket, *([] if keeper else ["nokeeper"]))
    argv = [*OBSFS, "mount", bucket, str(mnt.path)]
    for option in mnt.options:
        argv += ["-o", option]
    daemon = daemon_pid(mnt.path)
    assert _argv_of(daemon) == argv
    if keeper:
        keeper_pid = int(state_file(str(mnt.path), "keeper").read_text())
        assert _argv_of(keeper_pid)[1:3] == ["-m", "obsfs.keeper"]
        assert _parent_of(daemon) == keeper_pid


def test_mount_leaves_the_filesystem_to_the_process_that_serves(mounter: Mounter, moto: S3Server,
                                                                bucket: str) -> None:
    """A default mount runs three programs: ``obsfs mount``, the keeper and the daemon. Only the
    daemon may import pyfuse3, trio and the SDK (0.2 s): were the command to import them
    too, before it becomes the keeper, every mount would pay for them twice."""
    result, _ = mounter.run(moto, bucket, None, env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"))
    assert result.returncode == 0, result.stderr
    # The keeper's and the daemon's stderr is /dev/null: what Python printed is the command's.
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "obsfs.cli" in imported
    assert not {"pyfuse3", "trio", "obs", "obsfs.mount"} & imported


def test_the_mount_answers_before_the_sdk_is_imported(mounter: Mounter, moto: S3Server, bucket: str,
                                                      s3: Any) -> None:
    """The SDK (requests, urllib3, pycryptodome: about 0.1 s of imports, half of a daemon's) is
    not needed for the bucket check, the root's listing or a stat: keepalive.py sends those, so
    the daemon imports it when a call first needs it (here a read), after the mount answers.
    pycryptodome's libraries in the daemon's memory map show whether it has been imported."""
    s3.put_object(Bucket=bucket, Key="f", Body=b"data")
    mnt = mounter.mount(moto, bucket)
    maps = Path(f"/proc/{daemon_pid(mnt.path)}/maps")
    assert os.listdir(mnt.path) == ["f"] and os.stat(mnt.path / "f").st_size == 4
    assert "/Crypto/" not in maps.read_text()
    assert (mnt.path / "f").read_bytes() == b"data"
    assert "/Crypto/" in maps.read_text()


def test_sigterm_flushes_unmounts_and_exits_zero(mounter: Mounter, moto: S3Server, bucket: str, s3: object) -> None:
    mnt = mounter.mount(moto, bucket)
    (mnt.path / "f").write_text("kept")
    pid = daemon_pid(mnt.path)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert not is_mounted(mnt.path)
    assert state_file(str(mnt.path), "status").read_text() == "0"
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"kept"  # type: ignore[attr-defined]


def test_secrets_stay_out_of_argv_env_and_logs(mounter: Mounter, moto: S3Server, bucket: str,
                                               tmp_path: Path) -> None:
    env = dict(os.environ, OBS_ACCESS_KEY_ID=moto.access_key, OBS_SECRET_ACCESS_KEY=moto.secret_key)
    target = tmp_path / "envmnt"
    target.mkdir()
    argv = [*OBSFS, "mount", bucket, str(target), "-o",
            f"url={moto.endpoint},use_path_request_style,logfile={tmp_path}/obsfs-env.log,dbglevel=debug,"
            f"cache_dir={tmp_path}/cache"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    try:
        assert result.returncode == 0, result.stderr
        (target / "f").write_text("x")
        secret = moto.secret_key.encode()
        for pid in (daemon_pid(target), int(state_file(str(target), "keeper").read_text())):
            assert secret not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert secret not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        assert subprocess.run([*OBSFS, "umount", str(target)]).returncode == 0
    assert moto.secret_key not in (tmp_path / "obsfs-env.log").read_text()


def test_umount_of_something_not_mounted(tmp_path: Path) -> None:
    result = subprocess.run([*OBSFS, "umount", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert str(tmp_path) in one_line(result)
