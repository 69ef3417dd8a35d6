"""The blocking object-store interface the rest of obsfs is written against.

It is deliberately small: exactly the calls a 1:1 filesystem and a CSI controller need. All
methods block and raise the types in ``obsfs.errors``; the async layer (``aio.py``) runs them in
worker threads. ETags are always bare (no quotes): the SDK percent-encodes quotes in conditional
headers, so a quoted ETag would never match.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StoreConfig:
    """How to reach one store. ``repr`` hides the keys so a logged config leaks nothing."""

    endpoint: str
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    region: str = "us-east-1"
    signature: str = "v4"  # "obs", "v2" or "v4"
    path_style: bool = False
    ssl_verify: bool | str = False  # False, True (system CA bundle) or a CA file path
    socket_timeout: float = 20.0  # per socket operation, not per call
    read_deadline: float = 60.0  # metadata calls and reads give up (EIO) after this
    write_deadline: float = 300.0  # uploads give up after this

    def __post_init__(self) -> None:
        if self.signature not in ("obs", "v2", "v4"):
            raise ValueError(f"signature must be obs, v2 or v4, not {self.signature!r}")


def bare_etag(etag: str | None) -> str:
    """ETags without quotes: the SDK percent-encodes quotes in If-Match, which then never matches."""
    return (etag or "").strip().strip('"')


@dataclass(frozen=True)
class ObjectInfo:
    """One object as the store describes it.

    ``metadata`` is None when the info came from a listing: listings carry no user metadata, and
    callers must not mistake "unknown" for "empty".
    """

    key: str
    size: int
    etag: str
    last_modified: float  # seconds since the epoch, UTC
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ListPage:
    """One page of a delimited listing; ``next_marker`` is None on the last page."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    next_marker: str | None


class ObjectStore(abc.ABC):
    """Blocking access to one bucket."""

    bucket: str
    # Told of every request's answer, from the thread that made it: (operation, outcome, seconds).
    observer: Callable[[str, str, float], None] | None = None

    # -- objects ---------------------------------------------------------------------------
    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Metadata of ``key``; raises NotFound."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int, *, etag: str | None = None) -> bytearray:
        """Up to ``length`` bytes from ``start``; fewer only at the end of the object.

        With ``etag``, raises PreconditionFailed if the object changed, so a reader never mixes
        two versions.
        """

    @abc.abstractmethod
    def read_small(self, key: str, limit: int) -> bytes:
        """Up to ``limit`` bytes from the start of a small object that is read whole (an attribute
        index): ``get_range(key, 0, limit)``, by a leaner path than file data takes."""

    @abc.abstractmethod
    def get_to_file(self, key: str, fd: int, *, etag: str | None = None) -> int:
        """Download the whole object into the open file ``fd`` from offset 0; returns bytes written."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str, *, metadata: Mapping[str, str], content_type: str,
                 if_match: str | None = None, if_none_match: bool = False) -> str:
        """Single PUT of a local file; returns the new ETag."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, *, metadata: Mapping[str, str], content_type: str) -> str:
        """Single PUT of a small payload (markers, symlink targets); returns the new ETag."""

    @abc.abstractmethod
    def initiate_multipart(self, key: str, *, metadata: Mapping[str, str], content_type: str) -> str:
        """Start a multipart upload; returns its upload id."""

    @abc.abstractmethod
    def upload_part(self, key: str, upload_id: str, part_no: int, path: str, offset: int, size: int) -> str:
        """Upload ``size`` bytes of ``path`` from ``offset`` as part ``part_no``; returns its ETag."""

    @abc.abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: Iterable[tuple[int, str]], *,
                           if_match: str | None = None, if_none_match: bool = False) -> None:
        """Assemble the parts, on the condition given (PreconditionFailed if it does not hold;
        OBS, S3 and moto check it, Ceph RGW 16 ignores it). Take the final ETag from a HEAD:
        RGW returns none here."""

    @abc.abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished multipart upload; an unknown id is not an error."""

    @abc.abstractmethod
    def copy(self, src_key: str, dst_key: str, *, metadata: Mapping[str, str], content_type: str,
             size: int | None = None) -> None:
        """Server-side copy that replaces all user metadata and the content type.

        ``size`` (when the caller knows it) spares a HEAD to choose between one copy and parts.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete one key; a missing key is not an error."""

    @abc.abstractmethod
    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete many keys in batches of 1000; raises StoreError naming the first key that failed."""

    @abc.abstractmethod
    def list(self, prefix: str = "", delimiter: str | None = "/", marker: str | None = None,
             max_keys: int = 1000) -> ListPage:
        """One page of keys under ``prefix``."""

    # -- bucket ----------------------------------------------------------------------------
    @abc.abstractmethod
    def bucket_exists(self) -> bool:
        """True if the bucket exists and these credentials can see it."""

    @abc.abstractmethod
    def create_bucket(self) -> None:
        """Create the bucket; creating one we already own succeeds."""

    @abc.abstractmethod
    def delete_bucket(self) -> None:
        """Delete the (empty) bucket; raises Conflict when it is not empty."""

    def set_quota(self, quota_bytes: int) -> bool:
        """Set the bucket's quota where the store has one; False where it does not (S3 has none)."""
        return False

    @abc.abstractmethod
    def check_access(self, prefix: str = "") -> None:
        """One cheap authenticated call that proves the bucket exists and the keys work.

        Raises BucketNotFound, BadCredentials or AccessDenied with a message a user can act on.
        """
