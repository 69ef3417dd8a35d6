"""Upload one local file to one key: a single PUT, or a parallel multipart upload.

Parts are read straight from the staged file by the SDK (never through Python bytes), and go out
``parallel`` at a time. A failed multipart upload is aborted so that no orphaned parts keep
costing storage.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import trio

from obsfs.backend.aio import AsyncStore
from obsfs.errors import NotFound, PreconditionFailed, first_error

log = logging.getLogger(__name__)


async def check_precondition(store: AsyncStore, key: str, if_match: str | None, if_none_match: bool) -> None:
    """Multipart uploads cannot be conditional on every server (RGW ignores it), so check by HEAD."""
    if if_match is None and not if_none_match:
        return
    try:
        current: str | None = (await store.head(key)).etag
    except NotFound:
        current = None
    if (if_none_match and current is not None) or (if_match is not None and current != if_match):
        raise PreconditionFailed(f"{key} changed in the store (ETag {current}, expected {if_match})", key=key)


async def abort_quietly(store: AsyncStore, key: str, upload_id: str) -> bool:
    """Drop an unfinished multipart upload so its parts stop costing storage; True if it is gone.

    It runs even in a cancelled scope (for at most 30 s) and only logs its own failure: the
    caller is already on its way out with the error that brought it here.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(30):
        try:
            await store.abort_multipart(key, upload_id)
            return True
        except Exception as exc:
            log.warning("could not abort the multipart upload of %s: %s", key, exc)
    return False


def multipart_etag(parts: Mapping[int, str]) -> str:
    """The ETag S3 servers give a completed multipart upload: the MD5 of the parts' binary MD5s,
    then "-" and the number of parts. Known from the part ETags alone, without reading the file."""
    digests = b"".join(bytes.fromhex(parts[number]) for number in sorted(parts))
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


async def complete_checked(store: AsyncStore, key: str, upload_id: str, parts: Mapping[int, str], *,
                           if_match: str | None, if_none_match: bool) -> str:
    """Complete a multipart upload on its condition, and return the completed object's ETag.

    The condition is checked three times, because servers differ: by HEAD before completing
    (no server checks it on initiate or on the parts), by the server itself on complete (OBS, S3
    and moto do; Ceph RGW 16 ignores it), and by HEAD afterwards: if the key then holds another
    object, a writer that passed the same checks completed just after us and replaced ours. Ours
    is then lost from the key but not from the caller's staged file: PreconditionFailed, and the
    caller keeps it as the conflict copy. What is left on a server that ignores the condition: a
    writer whose first HEAD ran before our complete, and whose complete ends after our last HEAD,
    replaces ours unnoticed (measured in docs/write-back.md).
    """
    await check_precondition(store, key, if_match, if_none_match)
    await store.complete_multipart(key, upload_id, parts.items(), if_match=if_match, if_none_match=if_none_match)
    ours = multipart_etag(parts)
    stored = (await store.head(key)).etag
    if stored != ours:
        raise PreconditionFailed(f"{key} was replaced by another writer as our upload completed "
                                 f"(ETag {stored}, ours {ours})", key=key)
    return stored


def local_etags(path: str, size: int, part_size: int) -> set[str]:
    """The ETags an S3 server may give this file uploaded our way: the MD5 of the body for a
    single PUT, or the MD5 of the parts' MD5s plus "-<parts>" for a multipart upload. After a
    copy onto itself (a streamed upload's final attributes) AWS and moto give the body's MD5 to
    a multipart object too, so for a multipart size both forms count."""
    whole = hashlib.md5(usedforsecurity=False)
    digests = []
    with open(path, "rb") as stream:
        for _ in range(0, max(size, 1), part_size):
            digest = hashlib.md5(usedforsecurity=False)
            remaining = part_size
            while remaining and (block := stream.read(min(remaining, 1 << 20))):
                digest.update(block)
                whole.update(block)
                remaining -= len(block)
            digests.append(digest)
    if size <= part_size:
        return {whole.hexdigest()}
    combined = hashlib.md5(b"".join(d.digest() for d in digests), usedforsecurity=False)
    return {f"{combined.hexdigest()}-{len(digests)}", whole.hexdigest()}


async def upload_file(store: AsyncStore, key: str, local_path: str, size: int, *,
                      metadata: Mapping[str, str], content_type: str, part_size: int, parallel: int,
                      if_match: str | None = None, if_none_match: bool = False) -> str:
    """Upload and return the new ETag.

    ``if_match`` / ``if_none_match`` make it conditional: PreconditionFailed when another writer
    changed (or created) the object since our version was based on it.
    """
    if size <= part_size:
        etag = await store.put_file(key, local_path, metadata=metadata, content_type=content_type,
                                    if_match=if_match, if_none_match=if_none_match)
        return etag or (await store.head(key)).etag
    await check_precondition(store, key, if_match, if_none_match)
    upload_id = await store.initiate_multipart(key, metadata=metadata, content_type=content_type)
    parts: dict[int, str] = {}
    limiter = trio.CapacityLimiter(parallel)

    async def one_part(part_no: int, offset: int, length: int) -> None:
        async with limiter:
            parts[part_no] = await store.upload_part(key, upload_id, part_no, local_path, offset, length)

    try:
        try:
            async with trio.open_nursery() as nursery:
                for part_no, offset in enumerate(range(0, size, part_size), start=1):
                    nursery.start_soon(one_part, part_no, offset, min(part_size, size - offset))
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return await complete_checked(store, key, upload_id, parts, if_match=if_match, if_none_match=if_none_match)
    except BaseException:
        await abort_quietly(store, key, upload_id)  # after a complete: an unknown id, not an error
        raise
