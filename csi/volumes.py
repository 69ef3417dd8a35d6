"""A volume's objects in the store, and the record that says obsfs-csi provisioned them.

Every dynamically provisioned volume holds one small JSON object, ``.obsfs-volume.json``, at its
root (``bucket/.obsfs-volume.json`` or ``bucket/prefix/.obsfs-volume.json``) with the CO's volume
name, the capacity and the volume context. It lives in the store, not in the controller, because
the controller keeps no state of its own, and an object because that is what every S3 server
offers through the ``ObjectStore`` interface we already have:

- OBS bucket quotas (``setBucketQuota``) exist only on OBS: RGW answers 403 and moto a
  meaningless 200, and a quota cannot describe a prefix volume anyway;
- bucket tags are not in ``ObjectStore``, differ between OBS and S3, and a shared bucket would
  run into the 10-50 tag limit after a few prefix volumes;
- metadata on a directory marker would work for prefix volumes only: a bucket root has no marker.

The record also guards deletion: DeleteVolume only removes objects from a volume that has one (or
that is already empty), so a static PV over somebody's existing bucket is never wiped because of
a wrong reclaim policy. It is written last on create and deleted last on delete, so a crash at any
point leaves a state that a retry of the same call completes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from csi.errors import FailedPrecondition
from csi.naming import VolumeRef
from obsfs.backend.base import ObjectInfo, ObjectStore, StoreConfig
from obsfs.backend.obs import ObsStore
from obsfs.backend.retry import call_with_retry
from obsfs.errors import BucketNotFound, NotFound
from obsfs.meta import DIR_CONTENT_TYPE

RECORD_NAME = ".obsfs-volume.json"
# Seconds kept back from the CO's deadline, so that a call that gives up on a slow store still
# answers (UNAVAILABLE, with the reason) before the CO stops listening.
RPC_MARGIN = 1.0
_RECORD_FORMAT = 1
_RECORD_MAX_BYTES = 64 << 10  # a record is ~200 bytes; anything near this was not written by us
T = TypeVar("T")


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    capacity_bytes: int
    volume_context: dict[str, str] = field(default_factory=dict)
    claim: str = ""  # "namespace/name" of the PVC, when external-provisioner passed it: for messages

    def encode(self) -> bytes:
        doc: dict[str, object] = {"format": _RECORD_FORMAT, "name": self.name, "capacityBytes": self.capacity_bytes,
                                  "volumeContext": self.volume_context}
        if self.claim:
            doc["claim"] = self.claim
        return json.dumps(doc, sort_keys=True).encode()

    def owner(self) -> str:
        """The volume, and its claim where known, as a message names them."""
        return f"{self.name} (PVC {self.claim})" if self.claim else self.name

    @staticmethod
    def decode(data: bytes, where: str) -> VolumeRecord:
        try:
            doc = json.loads(data)
            record = VolumeRecord(name=doc["name"], capacity_bytes=doc["capacityBytes"],
                                  volume_context=doc["volumeContext"], claim=doc.get("claim", ""))
            valid = (doc["format"] == _RECORD_FORMAT and isinstance(record.name, str) and isinstance(record.claim, str)
                     and isinstance(record.capacity_bytes, int) and isinstance(record.volume_context, dict)
                     and all(isinstance(v, str) for v in record.volume_context.values()))
        except (ValueError, TypeError, KeyError):
            valid = False
        if not valid:
            raise FailedPrecondition(f"the volume record {where} is damaged or from another version; restore it, "
                                     "or delete the volume's objects by hand")
        return record


def retry_budget(deadline: float, context: Any) -> Callable[[], float]:
    """Seconds left for retrying store calls: ``deadline``, cut to the CO's deadline for the RPC."""
    return lambda: max(0.0, min(deadline, context.time_remaining() - RPC_MARGIN))


@contextmanager
def open_volume(config: StoreConfig, ref: VolumeRef, budget: Callable[[], float]) -> Iterator[VolumeStore]:
    """The volume ``ref`` in the store ``config`` points at, with its client closed afterwards."""
    store = ObsStore(config, ref.bucket)
    try:
        yield VolumeStore(store, ref, budget)
    finally:
        store.close()


class VolumeStore:
    """The objects of one volume. Each store call retries temporary failures while ``budget()``,
    the seconds left for retrying, allows."""

    def __init__(self, store: ObjectStore, ref: VolumeRef, budget: Callable[[], float]) -> None:
        self.store = store
        self.ref = ref
        self._budget = budget

    @property
    def record_key(self) -> str:
        return self.ref.key_prefix + RECORD_NAME

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return call_with_retry(fn, what, self._budget())

    def bucket_exists(self) -> bool:
        return self._call(self.store.bucket_exists, f"HEAD bucket {self.ref.bucket}")

    def create_bucket(self) -> None:
        self._call(self.store.create_bucket, f"create bucket {self.ref.bucket}")

    def write_marker(self) -> None:
        """The ``prefix/`` directory marker, so the volume root exists before anything is written."""
        self._call(lambda: self.store.put_bytes(self.ref.key_prefix, b"", metadata={},
                                                content_type=DIR_CONTENT_TYPE), f"PUT {self.ref.key_prefix}")

    def read_record(self) -> VolumeRecord | None:
        """The record, or None if there is none; BucketNotFound if the bucket itself is gone."""
        try:
            data = self._call(lambda: self.store.get_range(self.record_key, 0, _RECORD_MAX_BYTES),
                              f"GET {self.record_key}")
        except BucketNotFound:
            raise
        except NotFound:
            return None
        return VolumeRecord.decode(bytes(data), f"{self.ref.bucket}/{self.record_key}")

    def enclosing_volume(self) -> tuple[str, VolumeRecord] | None:
        """A volume whose prefix (or whole bucket) holds this one's, with its record: deleting it
        would delete this one too, so no volume is made inside another."""
        segments = self.ref.prefix.split("/") if self.ref.prefix else []
        for depth in range(len(segments)):
            outer = VolumeStore(self.store, VolumeRef(self.ref.bucket, "/".join(segments[:depth])), self._budget)
            record = outer.read_record()
            if record is not None:
                return outer.ref.volume_id, record
        return None

    def write_record(self, record: VolumeRecord) -> None:
        self._call(lambda: self.store.put_bytes(self.record_key, record.encode(), metadata={},
                                                content_type="application/json"), f"PUT {self.record_key}")

    def apply_quota(self, capacity_bytes: int) -> bool:
        """Enforce the capacity as the bucket quota where the store has quotas (OBS); a prefix of a
        shared bucket cannot have one. The record keeps the capacity either way."""
        if self.ref.prefix or capacity_bytes <= 0:
            return False
        return self._call(lambda: self.store.set_quota(capacity_bytes), f"set quota of {self.ref.bucket}")

    def check_access(self) -> None:
        """Prove that the bucket exists and the keys may list the volume (what a mount needs)."""
        self._call(lambda: self.store.check_access(self.ref.key_prefix), f"LIST {self.ref.bucket}")

    def _listing(self) -> Iterator[list[ObjectInfo]]:
        """Every object of the volume, one listing page at a time."""
        marker = None
        while True:
            page = self._call(functools.partial(self.store.list, self.ref.key_prefix, delimiter=None, marker=marker),
                              f"LIST {self.ref.bucket}/{self.ref.key_prefix}")
            yield page.objects
            marker = page.next_marker
            if marker is None:
                return

    def _pages(self) -> Iterator[list[str]]:
        """Every key of the volume, one listing page at a time."""
        for objects in self._listing():
            yield [obj.key for obj in objects]

    def usage(self) -> tuple[int, int]:
        """Objects and bytes the volume holds, leaving out the record and the volume's own marker."""
        own = {self.record_key, self.ref.key_prefix}
        objects = size = 0
        for page in self._listing():
            for obj in page:
                if obj.key not in own:
                    objects += 1
                    size += obj.size
        return objects, size

    def exists(self) -> bool:
        """A whole-bucket volume exists with its bucket, a prefix volume while any key is under it."""
        if not self.ref.prefix:
            return self.bucket_exists()
        try:
            return any(next(self._pages()))
        except BucketNotFound:
            return False

    def foreign_keys(self) -> list[str]:
        """A few keys that are neither the record nor the marker: data obsfs-csi did not put there."""
        own = {self.record_key, self.ref.key_prefix}
        for page in self._pages():
            foreign = [key for key in page if key not in own]
            if foreign:
                return foreign[:3]
        return []

    def purge(self) -> None:
        """Delete every object, the record last, then the bucket of a whole-bucket volume.

        A pod that still writes while this runs can leave objects behind; then the record stays,
        the call fails, and the CO's retry deletes them.
        """
        for page in self._pages():
            keys = [key for key in page if key != self.record_key]
            if keys:
                self._call(functools.partial(self.store.delete_many, keys),
                           f"DELETE {len(keys)} keys in {self.ref.bucket}")
        late = self.foreign_keys()
        if late:
            raise FailedPrecondition(f"objects such as {late[0]!r} appeared in volume {self.ref.volume_id} while "
                                     "it was being deleted; is a pod still using it? The CO will retry")
        self._call(lambda: self.store.delete(self.record_key), f"DELETE {self.record_key}")
        if not self.ref.prefix:
            self._call(self.store.delete_bucket, f"delete bucket {self.ref.bucket}")
