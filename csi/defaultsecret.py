"""The driver's own credential, for requests that carry no secrets.

Some calls never carry secrets (CSI v0.3's ValidateVolumeCapabilities has no field for them),
and some clusters would rather keep one Secret with the driver than reference it from every
StorageClass. ``--credentials PATH`` names either a mounted Kubernetes Secret (a directory with
one file per key, as kubelet writes it) or a file of ``key=value`` lines, with the same keys as a
StorageClass's Secret (``csi.secrets``).

It is read at every use, not at start, so that a rotated Secret (kubelet swaps the mounted
files atomically) takes effect without a restart, and a Secret that appears later is found. The
request's own secrets always win: the default fills in only where a request has none.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path

from csi.errors import FailedPrecondition
from obsfs.errors import ConfigError


class DefaultSecret:
    """The credential at ``path`` (None: the driver has no default)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def check(self) -> None:
        """Refuse to start on a credential that other users can read; a missing one is fine (an
        optional Secret that is not there yet)."""
        for file in self._files():
            mode = file.stat().st_mode  # the target: a Secret volume's keys are symlinks
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"credentials {file} can be read by other users (mode {stat.S_IMODE(mode):04o}); "
                                  "chmod 600 it, or give the Secret volume defaultMode: 0400")

    def for_request(self, secrets: Mapping[str, str]) -> Mapping[str, str]:
        """``secrets`` if the request carries any, else the default (empty if there is none)."""
        if secrets or self.path is None:
            return secrets
        return self.read()

    def read(self) -> dict[str, str]:
        """The default's keys and values; empty if it does not exist."""
        if self.path is None:
            return {}
        if self.path.is_dir():
            return {file.name: file.read_text() for file in self._files()}
        values: dict[str, str] = {}
        for line in self._text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, sep, value = line.partition("=")
                if not sep:
                    raise FailedPrecondition(f"the driver's credentials file {self.path} has a line that is not "
                                             "key=value; fix the file (the request carried no secrets of its own)")
                values[key.strip()] = value.strip()
        return values

    def _text(self) -> str:
        try:
            return self.path.read_text() if self.path is not None else ""
        except FileNotFoundError:
            return ""

    def _files(self) -> list[Path]:
        """The files holding the credential: the keys of a Secret volume (not kubelet's ``..data``
        bookkeeping entries), or the one file."""
        if self.path is None or not self.path.exists():
            return []
        if not self.path.is_dir():
            return [self.path]
        return sorted(entry for entry in self.path.iterdir() if not entry.name.startswith(".") and entry.is_file())
