"""Upload one local file to one key: a single PUT, or a parallel multipart upload.

Parts are read straight from the staged file by the SDK (never through Python bytes), and go out
``parallel`` at a time. A failed multipart upload is aborted so that no orphaned parts keep
costing storage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from obsfs.backend.aio import AsyncStore

log = logging.getLogger(__name__)


async def upload_file(store: AsyncStore, key: str, local_path: str, size: int, *,
                      metadata: Mapping[str, str], content_type: str, part_size: int,
                      parallel: int) -> str | None:
    """Upload and return the new ETag (None when the server did not say)."""
    if size <= part_size:
        return await store.put_file(key, local_path, metadata=metadata, content_type=content_type) or None
    upload_id = await store.initiate_multipart(key, metadata=metadata, content_type=content_type)
    parts: dict[int, str] = {}
    limiter = trio.CapacityLimiter(parallel)

    async def one_part(part_no: int, offset: int, length: int) -> None:
        async with limiter:
            parts[part_no] = await store.upload_part(key, upload_id, part_no, local_path, offset, length)

    try:
        async with trio.open_nursery() as nursery:
            for part_no, offset in enumerate(range(0, size, part_size), start=1):
                nursery.start_soon(one_part, part_no, offset, min(part_size, size - offset))
        await store.complete_multipart(key, upload_id, parts.items())
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            try:
                await store.abort_multipart(key, upload_id)
            except Exception as exc:  # the upload already failed; say so, then raise that
                log.warning("could not abort multipart upload of %s: %s", key, exc)
        raise
    # RGW returns no ETag from complete; the HEAD is the only reliable source.
    return (await store.head(key)).etag or None
