"""Where access keys come from, and that no message ever shows the secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from obsfs import credentials
from obsfs.credentials import Credentials, from_env, parse_passwd, read_fd, read_passwd_file, resolve
from obsfs.errors import ConfigError

SECRET = "S3cr3t-Value-Never-Shown"


def write(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_generic_line() -> None:
    assert parse_passwd(f"AK:{SECRET}\n", "b", "test") == Credentials("AK", SECRET)


@pytest.mark.parametrize("text", [
    "GENERIC:gsk\nmybucket:BAK:bsk\n",
    "mybucket:BAK:bsk\nGENERIC:gsk\n",
    "other:OAK:osk\nGENERIC:gsk\nmybucket:BAK:bsk\n",
])
def test_bucket_line_wins_over_generic(text: str) -> None:
    assert parse_passwd(text, "mybucket", "test") == Credentials("BAK", "bsk")


def test_first_generic_line_is_used_when_no_bucket_line_matches() -> None:
    text = "# comment\n\n  \nother:OAK:osk\nFIRST:fsk\r\nSECOND:ssk\n"
    assert parse_passwd(text, "mybucket", "test") == Credentials("FIRST", "fsk")


def test_no_usable_line() -> None:
    with pytest.raises(ConfigError, match="mybucket") as err:
        parse_passwd(f"other:AK:{SECRET}\n", "mybucket", "passwd_file /p")
    assert "passwd_file /p" in str(err.value)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("line", [f"AK:{SECRET}:x:y", f":{SECRET}", "AK:", f"b::{SECRET}", "justonefield"])
def test_malformed_line_names_the_line_not_the_secret(line: str) -> None:
    with pytest.raises(ConfigError, match="line 2") as err:
        parse_passwd(f"# keys\n{line}\n", "b", "passwd_file /p")
    assert SECRET not in str(err.value)


def test_repr_hides_the_keys() -> None:
    creds = Credentials("AKID", SECRET)
    assert SECRET not in repr(creds)
    assert "AKID" not in repr(creds)


def test_read_passwd_file(tmp_path: Path) -> None:
    path = write(tmp_path / "passwd", f"AK:{SECRET}\n")
    assert read_passwd_file(path, "b") == Credentials("AK", SECRET)
    os.chmod(path, 0o400)
    assert read_passwd_file(path, "b") == Credentials("AK", SECRET)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "passwd", f"AK:{SECRET}\n", mode)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        read_passwd_file(path, "b")
    assert path in str(err.value)
    assert f"{mode:04o}" in str(err.value)
    assert SECRET not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_passwd_file(str(tmp_path / "nope"), "b")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a mode 000 file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "passwd", f"AK:{SECRET}\n", 0o000)
    with pytest.raises(ConfigError, match="not readable"):
        read_passwd_file(path, "b")


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "dir"
    path.mkdir(mode=0o700)
    with pytest.raises(ConfigError):
        read_passwd_file(str(path), "b")


def test_read_fd_reads_and_closes() -> None:
    r, w = os.pipe()
    os.write(w, f"b:AK:{SECRET}\n".encode())
    os.close(w)
    assert read_fd(r, "b") == Credentials("AK", SECRET)
    with pytest.raises(OSError):
        os.fstat(r)


def test_env_obs_before_aws() -> None:
    env = {"OBS_ACCESS_KEY_ID": "oak", "OBS_SECRET_ACCESS_KEY": "osk",
           "AWS_ACCESS_KEY_ID": "aak", "AWS_SECRET_ACCESS_KEY": "ask"}
    assert from_env(env) == Credentials("oak", "osk")
    assert from_env({k: v for k, v in env.items() if k.startswith("AWS")}) == Credentials("aak", "ask")
    # Half a pair does not count.
    assert from_env({"OBS_ACCESS_KEY_ID": "oak", "AWS_ACCESS_KEY_ID": "aak",
                     "AWS_SECRET_ACCESS_KEY": "ask"}) == Credentials("aak", "ask")
    assert from_env({"OBS_ACCESS_KEY_ID": "oak", "OBS_SECRET_ACCESS_KEY": ""}) is None
    assert from_env({}) is None


@pytest.fixture
def default_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    files = [tmp_path / "home-passwd", tmp_path / "etc-passwd"]
    monkeypatch.setattr(credentials, "DEFAULT_PASSWD_FILES", tuple(str(f) for f in files))
    return files


def test_resolve_order(tmp_path: Path, default_files: list[Path]) -> None:
    env = {"OBS_ACCESS_KEY_ID": "eak", "OBS_SECRET_ACCESS_KEY": "esk"}
    explicit = write(tmp_path / "explicit", "XAK:xsk\n")
    write(default_files[1], "DAK:dsk\n")
    assert resolve(explicit, "b", env) == Credentials("XAK", "xsk")
    assert resolve(None, "b", env) == Credentials("eak", "esk")
    assert resolve(None, "b", {}) == Credentials("DAK", "dsk")
    write(default_files[0], "HAK:hsk\n")
    assert resolve(None, "b", {}) == Credentials("HAK", "hsk")


def test_resolve_checks_the_mode_of_default_files(default_files: list[Path]) -> None:
    write(default_files[0], f"AK:{SECRET}\n", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve(None, "b", {})


def test_resolve_without_any_credentials(default_files: list[Path]) -> None:
    with pytest.raises(ConfigError, match="passwd_file") as err:
        resolve(None, "b", {"AWS_SECRET_ACCESS_KEY": SECRET})
    assert SECRET not in str(err.value)
