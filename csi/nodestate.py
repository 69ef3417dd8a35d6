"""What the node service keeps on disk, under ``--state-dir``, about the volumes it staged.

    volumes/<key>.json   one record per staged volume: where, how, which store; never a secret
    secrets/<key>        the volume's ``AK:SK``, mode 0600 in a 0700 directory; gone at unstage
    cache/<key>/         the daemon's write-back cache and crash journal
    logs/<key>.log       the daemon's log

``<key>`` is a hash of the volume id, so the same volume always finds the same cache directory:
a volume whose daemon died with writes that were acknowledged but not uploaded gets them
uploaded when it is staged again (obsfs replays its journal). That is also why the cache
directory is removed only after a clean unstage, and kept after anything else.

The credentials file exists because two things need the keys after NodeStageVolume returned:
the daemon, which reads them once at start, and NodeGetVolumeStats, which lists the bucket and
gets no secrets from the CO. Keeping them in the plugin's memory only would lose them on every
restart of the plugin.

The record is a cache of what the CO asked for, not the truth about mounts: the kernel's mount
table is. The node service reads both on every call instead of holding state in memory, which is
what makes a restarted plugin pick up where the last one stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(frozen=True)
class StagedVolume:
    """One staged volume: what ``obsfs mount`` was given, minus the keys."""

    volume_id: str
    staging_path: str
    endpoint: str
    region: str
    signature: str
    path_style: bool
    fsgroup: int | None = None
    read_only: bool = False
    options: dict[str, str] = field(default_factory=dict)  # per-volume options (context, mount flags)
    flags: tuple[str, ...] = ()  # plain mount flags such as noatime
    # An inline (ephemeral) volume: its BUCKET[/PREFIX], as its volume id is kubelet's own name,
    # and its staging path is the pod's target path. "" for a persistent volume.
    source: str = ""

    def encode(self) -> bytes:
        doc = asdict(self)
        doc["flags"] = list(self.flags)
        return json.dumps({"format": _FORMAT, **doc}, sort_keys=True, indent=1).encode()

    @staticmethod
    def decode(data: bytes) -> StagedVolume:
        doc = json.loads(data)
        if doc.pop("format", None) != _FORMAT:
            raise ValueError("unknown format")
        doc["flags"] = tuple(doc.get("flags", ()))
        return StagedVolume(**doc)


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``data``, durable before it is renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class NodeState:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    @staticmethod
    def key(volume_id: str) -> str:
        return hashlib.sha256(volume_id.encode()).hexdigest()[:24]

    def record_path(self, volume_id: str) -> Path:
        return self.root / "volumes" / f"{self.key(volume_id)}.json"

    def credentials_path(self, volume_id: str) -> Path:
        return self.root / "secrets" / self.key(volume_id)

    def cache_dir(self, volume_id: str) -> Path:
        return self.root / "cache" / self.key(volume_id)

    def log_path(self, volume_id: str) -> Path:
        return self.root / "logs" / f"{self.key(volume_id)}.log"

    def metrics_socket(self, volume_id: str) -> Path:
        """The daemon's metrics endpoint: short, as a unix socket path must stay under 108 bytes."""
        return self.root / "m" / f"{self.key(volume_id)}.sock"

    def prepare(self) -> None:
        """Create the directories a daemon writes into."""
        for name in ("volumes", "secrets", "cache", "logs", "m"):
            self._dir(name)

    # -- records ---------------------------------------------------------------------------------
    def load(self, volume_id: str) -> StagedVolume | None:
        try:
            return self._decode(self.record_path(volume_id))
        except FileNotFoundError:
            return None

    @staticmethod
    def _decode(path: Path) -> StagedVolume:
        try:
            return StagedVolume.decode(path.read_bytes())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path} is damaged or from another version ({exc}); delete it after "
                             "unmounting the volume by hand") from None

    def save(self, record: StagedVolume) -> None:
        self._dir("volumes")
        _write_private(self.record_path(record.volume_id), record.encode())

    def records(self) -> Iterator[StagedVolume]:
        """Every readable record; damaged ones are logged and skipped."""
        for path in sorted((self.root / "volumes").glob("*.json")):
            try:
                yield self._decode(path)
            except ValueError as exc:
                log.error("%s", exc)

    # -- credentials -----------------------------------------------------------------------------
    def write_credentials(self, volume_id: str, access_key: str, secret_key: str) -> Path:
        self._dir("secrets")
        path = self.credentials_path(volume_id)
        _write_private(path, f"{access_key}:{secret_key}\n".encode())
        return path

    def read_credentials(self, volume_id: str) -> tuple[str, str] | None:
        try:
            text = self.credentials_path(volume_id).read_text().strip()
        except FileNotFoundError:
            return None
        access_key, _, secret_key = text.partition(":")
        return access_key, secret_key

    # -- forgetting ------------------------------------------------------------------------------
    def forget(self, volume_id: str, clean: bool) -> None:
        """Drop the record and the keys; with ``clean`` (the daemon uploaded everything and
        exited 0) also the cache directory and the log, which are kept otherwise."""
        for path in (self.credentials_path(volume_id), self.record_path(volume_id), self.metrics_socket(volume_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if clean:
            shutil.rmtree(self.cache_dir(volume_id), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.log_path(volume_id).unlink()
