"""Names in the store for CSI volumes, and the volume ids that point at them.

A volume is a whole bucket (volume id ``bucket``) or a prefix in a shared bucket (volume id
``bucket/prefix``). Dynamic volumes get their bucket or prefix name from the CO's request name
through ``label_for``, which is deterministic so that a retried CreateVolume finds what the first
attempt made. Static PVs may use any existing bucket and prefix as volumeHandle.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from csi.errors import InvalidArgument

# What we generate: S3/OBS bucket rules minus dots, so that the name is also a clean prefix and
# works with virtual-host-style TLS (a dot breaks the wildcard certificate match).
_LABEL = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
# What we accept for existing buckets: the S3 rules, dots included.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# AWS reserves these for access points and other internal names; OBS reserves none, but a name
# must work on both.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_HASH_CHARS = 10  # 40 bits of SHA-256: collisions need ~10^6 names that normalise alike
_MAX_PREFIX_BYTES = 512  # leaves room under the 1024-byte key limit for the files inside

BUCKET_RULES = ("3-63 lowercase letters, digits, hyphens or dots, starting and ending with a letter "
                "or digit, not an IP address")


def _reserved(name: str) -> bool:
    return name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES)


def label_for(name: str) -> str:
    """The bucket (or prefix) name for the CO's volume ``name``.

    A name that is already valid is used as is, so ``pvc-<uid>`` becomes bucket ``pvc-<uid>``.
    Anything else is lower-cased, stripped of disallowed characters and shortened, and gets a
    hash of the original name as suffix: two names that normalise alike ("PVC-1" and "pvc-1")
    still get different buckets.
    """
    if _LABEL.fullmatch(name) and not _reserved(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
    stem = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", name.lower()))
    stem = stem.strip("-")[:63 - _HASH_CHARS - 1].strip("-")
    if stem.startswith(_RESERVED_PREFIXES) or not stem:
        stem = f"vol-{stem}".rstrip("-")
    return f"{stem}-{digest}"


def bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` is not a valid bucket name, or None if it is."""
    if not _BUCKET.fullmatch(bucket):
        return f"{bucket!r} is not a valid bucket name: use {BUCKET_RULES}"
    if ".." in bucket or ".-" in bucket or "-." in bucket or _reserved(bucket):
        return f"{bucket!r} is not a valid bucket name: no '..', '.-' or '-.', and no reserved prefix or suffix"
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return None
    return f"{bucket!r} is not a valid bucket name: it looks like an IP address"


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot hold a volume, or None if it can."""
    if len(prefix.encode()) > _MAX_PREFIX_BYTES:
        return f"the prefix is longer than {_MAX_PREFIX_BYTES} bytes"
    if any(segment in ("", ".", "..") for segment in prefix.split("/")):
        return "the prefix must not contain empty, '.' or '..' path segments"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in prefix):
        return "the prefix must not contain control characters"
    return None


@dataclass(frozen=True)
class VolumeRef:
    """Where a volume's objects live: a whole bucket (``prefix == ""``) or ``prefix/`` in it."""

    bucket: str
    prefix: str = ""

    @property
    def volume_id(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    @property
    def key_prefix(self) -> str:
        """The start of every key in the volume: ``""`` or ``"prefix/"`` (also the marker key)."""
        return f"{self.prefix}/" if self.prefix else ""


def parse_volume_id(volume_id: str) -> VolumeRef:
    """``bucket`` or ``bucket/some/prefix`` (a trailing slash is allowed) into a VolumeRef."""
    bucket, _, prefix = volume_id.partition("/")
    prefix = prefix.removesuffix("/")
    problem = bucket_problem(bucket) or (prefix_problem(prefix) if prefix else None)
    if problem:
        raise InvalidArgument(f"volume id {volume_id!r} is not BUCKET or BUCKET/PREFIX: {problem}")
    return VolumeRef(bucket, prefix)
