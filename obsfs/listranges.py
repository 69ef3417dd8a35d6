"""Listing one directory in ranges at once, when its names are known in advance.

A LIST returns at most 1,000 keys and says where to go on, so a directory of 10,000 files takes
10 pages one after the other, and nothing else of the listing can start meanwhile. When we
already know (about) the names, from the directory's attribute index or from the metadata cache
of an earlier mount, each page's starting point is known too: the hinted keys are cut into
ranges of ``RANGE_NAMES``, and all ranges are listed at once.

A hint is only a guess at what the store holds, so the result must not depend on it. Range ``i``
is the half-open interval ``(after, upto]`` of the key space, ``after`` being the previous range's
``upto``; the first starts at the beginning, the last runs to the end. Together they cover every
key exactly once, whatever the store holds: a range is listed with ``marker=after`` (the store
answers with what follows it, whether that key still exists or not), keeps what is ``<= upto``
and goes on from the page's end while the page stopped short of ``upto`` (more names there than
the hint knew). A range with no name left is one empty answer.

Common prefixes (subdirectories) stay whole: the bounds are file keys of the directory itself
(no "/" after its prefix), and such a key sorts either before every key under a subdirectory's
prefix or after all of them (they part at a character of the prefix, or the key is the prefix
without its "/"). So a prefix lies in one range, and comparing the prefix with a bound gives the
same answer as comparing any key under it. Python compares strings by code point, which is the
order of their UTF-8 bytes, the order S3 lists in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio

from obsfs.backend.base import ListPage, ObjectInfo
from obsfs.errors import first_error

# Hinted names per range. A page holds 1,000 keys: the room left lets a range that gained a few
# names since the hint still end in one page (the next range's first keys come along, unused).
RANGE_NAMES = 960
# Ranges asked for at once: enough for what one server answered in parallel (the store's threads are
# shared with every lookup and open, so a directory of 250,000 files must not take them all).
RANGES_AT_ONCE = 8

Fetch = Callable[[str | None], Awaitable[ListPage]]  # one LIST page from a marker
Each = Callable[[list[ObjectInfo]], Awaitable[None]]  # told of each range's objects
Hints = Callable[[Callable[[], Awaitable[ListPage]]], Awaitable[list[str]]]  # given a wait for the first page


@dataclass(frozen=True)
class Range:
    """Keys ``after < key <= upto``; None is the start or the end of the listing."""

    after: str | None
    upto: str | None


def split(prefix: str, hints: Iterable[str], size: int = RANGE_NAMES) -> list[Range]:
    """Ranges of about ``size`` hinted keys each, covering the whole listing of ``prefix``.

    Only the directory's own file keys can be bounds (see above), so others are dropped."""
    keys = sorted({k for k in hints if k.startswith(prefix) and len(k) > len(prefix) and "/" not in k[len(prefix):]})
    bounds = keys[size - 1::size]
    if bounds and bounds[-1] == keys[-1]:
        bounds.pop()  # a last range with no hinted name: the one before it runs to the end instead
    edges: list[str | None] = [None, *bounds, None]
    return [Range(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def clip(page: ListPage, span: Range) -> tuple[list[ObjectInfo], list[str], bool]:
    """What of ``page`` lies in ``span``, and whether the span goes on past the page.

    Prefixes are checked against both ends: moto sends every common prefix of the directory with
    every page, whatever the marker. So only the keys tell how far a page reached: a page that
    ended with a prefix past ``upto`` costs one more request, which finds nothing of the span."""
    after, upto = span.after, span.upto
    objects = [o for o in page.objects if (after is None or o.key > after) and (upto is None or o.key <= upto)]
    prefixes = [p for p in page.prefixes if (after is None or p > after) and (upto is None or p <= upto)]
    more = page.next_marker is not None and (upto is None or not page.objects or page.objects[-1].key < upto)
    return objects, prefixes, more


async def list_range(fetch: Fetch, span: Range) -> tuple[list[ObjectInfo], list[str]]:
    """All of one range, in order."""
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    page = await fetch(span.after)
    while True:
        kept, subs, more = clip(page, span)
        objects += kept
        prefixes += [p for p in subs if not prefixes or p > prefixes[-1]]  # moto repeats them on every page
        if not more:
            return objects, prefixes
        assert page.next_marker is not None
        page = await fetch(page.next_marker)


async def list_ranges(fetch: Fetch, spans: list[Range], each: Each | None = None) -> ListPage:
    """All ranges listed at once, joined in order into one page. ``each`` is given every range's
    objects as soon as the range is complete, so that their handling overlaps the ranges still
    waiting for the store."""
    parts: list[tuple[list[ObjectInfo], list[str]]] = [([], [])] * len(spans)
    limiter = trio.CapacityLimiter(RANGES_AT_ONCE)

    async def one(i: int) -> None:
        async with limiter:
            parts[i] = await list_range(fetch, spans[i])
        if each is not None:
            await each(parts[i][0])

    try:
        async with trio.open_nursery() as nursery:
            for i in range(len(spans)):
                nursery.start_soon(one, i)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return ListPage([o for objs, _ in parts for o in objs], [p for _, subs in parts for p in subs], None)


async def list_all(fetch: Fetch, prefix: str, hints: Hints, each: Each | None = None,
                   size: int = RANGE_NAMES) -> ListPage:
    """The whole listing of ``prefix``. Its first page is asked for at once, while ``hints`` are
    awaited (the index's GET; ``hints`` may wait for the first page too, through the function it
    is given, to see whether there is more than one page to split); the other ranges start as
    soon as the hints are known, and the first range takes the first page when it comes. Without
    hints to split by, one range: one page after the other, as a plain listing."""
    early: list[ListPage] = []
    arrived = trio.Event()

    async def first_page() -> None:
        early.append(await fetch(None))
        arrived.set()

    async def fetch_early(marker: str | None) -> ListPage:
        if marker is not None:
            return await fetch(marker)
        await arrived.wait()  # asked for once; if that failed, the nursery raises its error
        return early[0]

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_page)
            return await list_ranges(fetch_early, split(prefix, await hints(lambda: fetch_early(None)), size), each)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
