"""Where the access keys come from: a passwd file, an inherited fd, or the environment.

Never from the command line, where ``ps`` shows them. The passwd file follows s3fs: lines
``AK:SK`` or ``BUCKET:AK:SK``, refused when group or others may read it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from obsfs.errors import ConfigError

ENV_PAIRS = (("OBS_ACCESS_KEY_ID", "OBS_SECRET_ACCESS_KEY"), ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
SECRET_ENV_NAMES = {name for pair in ENV_PAIRS for name in pair} | {"AWS_SESSION_TOKEN", "OBS_SECURITY_TOKEN"}
DEFAULT_PASSWD_FILES = ("~/.passwd-s3fs", "/etc/passwd-s3fs")


@dataclass(frozen=True)
class Credentials:
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)


def parse_passwd(text: str, bucket: str, origin: str) -> Credentials:
    """Pick the line for ``bucket``, else the generic ``AK:SK`` line."""
    generic: Credentials | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) == 2 and all(parts):
            generic = generic or Credentials(parts[0], parts[1])
        elif len(parts) == 3 and all(parts):
            if parts[0] == bucket:
                return Credentials(parts[1], parts[2])
        else:
            raise ConfigError(f"{origin} line {number}: expected AK:SK or BUCKET:AK:SK")
    if generic is None:
        raise ConfigError(f"{origin} has no AK:SK line for bucket {bucket!r}")
    return generic


def read_passwd_file(path: str, bucket: str) -> Credentials:
    try:
        info = os.stat(path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"passwd_file {path} may be read by group or others (mode "
                              f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}")
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"passwd_file {path} does not exist") from None
    except (PermissionError, IsADirectoryError):
        raise ConfigError(f"passwd_file {path} is not a readable file") from None
    return parse_passwd(text, bucket, f"passwd_file {path}")


def read_fd(fd: int, bucket: str) -> Credentials:
    """Read ``AK:SK`` from an inherited pipe or file descriptor, then close it."""
    with os.fdopen(fd, "r") as stream:
        return parse_passwd(stream.read(), bucket, f"credentials fd {fd}")


def from_env(env: Mapping[str, str]) -> Credentials | None:
    for ak_name, sk_name in ENV_PAIRS:
        if env.get(ak_name) and env.get(sk_name):
            return Credentials(env[ak_name], env[sk_name])
    return None


def resolve(passwd_file: str | None, bucket: str, env: Mapping[str, str]) -> Credentials:
    """s3fs's order: the passwd_file option, then the environment, then the default files."""
    if passwd_file:
        return read_passwd_file(passwd_file, bucket)
    creds = from_env(env)
    if creds is not None:
        return creds
    for candidate in DEFAULT_PASSWD_FILES:
        path = os.path.expanduser(candidate)
        if os.path.exists(path):
            return read_passwd_file(path, bucket)
    raise ConfigError("no credentials: give -o passwd_file=FILE (AK:SK, mode 600) or set "
                      "OBS_ACCESS_KEY_ID and OBS_SECRET_ACCESS_KEY")
