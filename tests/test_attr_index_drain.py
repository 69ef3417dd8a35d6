"""Unmount's rewrite of the attribute indexes (``AttrIndex.flush_all``) against moto through the
real stack (ObsStore in AsyncStore, as mount.serve builds them), with the index's GET held by a
proxy so that a background rewrite is known to be under way when the drain starts."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from obsfs.attrindex import IndexEntry, decode, encode, entry_of, index_key
from obsfs.backend.aio import AsyncStore
from obsfs.backend.obs import ObsStore
from obsfs.indexing import AttrIndex
from obsfs.meta import Defaults
from obsfs.metacache import MetaCache
from tests.conftest import store_config
from tests.gate import Hold
from tests.s3server import S3Server

META = {"mode": "33188", "uid": "1", "gid": "2", "mtime": "1600000000"}


@pytest.fixture
def proxy(moto: S3Server) -> Iterator[Hold]:
    hold = Hold(moto.port)
    hold.start()
    yield hold
    hold.stop()


def test_unmount_waits_for_a_rewrite_already_under_way(moto: S3Server, bucket: str, s3: Any, proxy: Hold,
                                                        tmp_path: Path) -> None:
    """A delete confirmed just before unmount: the background rewrite has taken the change and is
    reading the index (its GET held at the proxy) when the drain starts. flush_all must wait for
    it, not find nothing pending and let serve() stop the writes and cancel the rewriters (the
    rewrite's PUT was then lost, and the index kept the deleted file's entry).

    Deletes only: a rewrite HEADs no file, so nothing here depends on the second of a
    Last-Modified (SETTLE)."""
    for name in ("f5", "f6"):
        s3.put_object(Bucket=bucket, Key=f"w/{name}", Body=name.encode(), Metadata=META)
    direct = ObsStore(store_config(moto), bucket)
    planted: dict[str, IndexEntry] = {}
    for name in ("f5", "f6"):
        entry = entry_of(direct.head(f"w/{name}"))
        assert entry is not None
        planted[name] = entry
    direct.close()
    key = index_key("", "w/")
    s3.put_object(Bucket=bucket, Key=key, Body=encode(planted))

    held = proxy.hold(rb"GET /%s/%s[ ?]" % (bucket.encode(), key.encode()))
    store = ObsStore(store_config(moto, endpoint=f"http://127.0.0.1:{proxy.port}"), bucket)
    astore = AsyncStore(store, read_deadline=10, write_deadline=10)
    meta_cache = MetaCache(tmp_path / "meta.db")
    index = AttrIndex(astore, "", defaults=Defaults(uid=0, gid=0), meta_cache=meta_cache, delay=0.0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            rewriters = trio.CancelScope()  # serve()'s nursery, which holds the index's tasks

            async def run_index(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with rewriters:
                    await index.run(task_status=task_status)

            async def unmount() -> None:  # as serve() does at unmount
                await index.flush_all(30.0)
                astore.stop_writing()
                rewriters.cancel()

            await nursery.start(run_index)
            await astore.delete("w/f6")  # confirmed: the index is told, a rewrite of w/ starts
            assert await trio.to_thread.run_sync(held.arrived.wait, 30), "the rewrite never read the index"
            nursery.start_soon(unmount)
            # The drain has started: it is waiting for the rewrite (or, wrongly, done already).
            await trio.testing.wait_all_tasks_blocked()
            await trio.to_thread.run_sync(functools.partial(held.release, to_store=True))

    try:
        trio.run(main)
    finally:
        store.close()
        meta_cache.close()
    stored = decode(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert stored == {"f5": planted["f5"]}, "the delete confirmed before unmount reached the index"
