"""Ranged listings give exactly what one LIST after the other gives, whatever the hints say.

The store here is a model of a delimited S3 LIST (version 1: marker, max-keys, common prefixes,
NextMarker) over a sorted list of keys; test_attr_index.py lists moto for real."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest
import trio

from obsfs.backend.base import ListPage, ObjectInfo
from obsfs.errors import TemporaryFailure
from obsfs.listranges import Range, list_all, split

PREFIX = "d/"
# Characters around "/" in code point order, a space, non-ASCII: bounds fall between all of them.
ALPHABET = ["a", "b", "z", ".", "-", " ", "/", "0", "~", "é", "\x7f", "中", "😀"]


class Model:
    """A bucket's keys, listed as S3 lists them; counts the requests."""

    def __init__(self, keys: set[str], max_keys: int, *, moto: bool = False) -> None:
        self.keys = sorted(keys)
        self.max_keys = max_keys
        self.moto = moto  # every common prefix on every page, as moto 5 sends them
        self.requests = 0

    def answer(self, marker: str | None) -> ListPage:
        self.requests += 1
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last = None
        # A common prefix as the marker (a NextMarker) skips every key under it.
        rolled = marker if marker is not None and marker.startswith(PREFIX) and "/" in marker[len(PREFIX):] else None
        for key in self.keys:
            if not key.startswith(PREFIX) or (marker is not None and key <= marker) or (
                    rolled is not None and key.startswith(rolled)):
                continue
            rest = key[len(PREFIX):]
            item = PREFIX + rest[:rest.index("/") + 1] if "/" in rest else key
            if item == last:
                continue  # rolled up into the prefix already listed
            if len(objects) + (0 if self.moto else len(prefixes)) == self.max_keys:
                return self.page(objects, prefixes, last)
            if "/" not in rest:
                objects.append(ObjectInfo(key, len(key), "e", 0.0))
            else:
                prefixes.append(item)
            last = item
        return self.page(objects, prefixes, None)

    def page(self, objects: list[ObjectInfo], prefixes: list[str], next_marker: str | None) -> ListPage:
        if self.moto:
            prefixes = self.truth()[1]
            next_marker = next_marker and objects[-1].key
        return ListPage(objects, prefixes, next_marker)

    def truth(self) -> tuple[list[str], list[str]]:
        """What a listing must show, from the keys themselves."""
        mine = [k[len(PREFIX):] for k in self.keys if k.startswith(PREFIX)]
        return ([PREFIX + r for r in mine if "/" not in r],
                sorted({PREFIX + r[:r.index("/") + 1] for r in mine if "/" in r}))

    async def fetch(self, marker: str | None) -> ListPage:
        await trio.lowlevel.checkpoint()
        return self.answer(marker)

    def sequential(self) -> tuple[list[str], list[str]]:
        objects: list[str] = []
        prefixes: list[str] = []
        marker = None
        while True:
            page = self.answer(marker)
            objects += [o.key for o in page.objects]
            prefixes += page.prefixes
            if page.next_marker is None:
                return objects, prefixes
            marker = page.next_marker


def ranged(model: Model, hints: list[str], size: int, rng: random.Random) -> tuple[list[str], list[str]]:
    async def slow_hints(first_page: Callable[[], Awaitable[ListPage]]) -> list[str]:
        for _ in range(rng.randint(0, 3)):  # before, with or after the first page
            await trio.lowlevel.checkpoint()
        if rng.random() < 0.3:
            await first_page()  # as a listing does before it reads meta.db
        return hints

    async def run() -> ListPage:
        return await list_all(model.fetch, PREFIX, slow_hints, size=size)

    page = trio.run(run)
    return [o.key for o in page.objects], page.prefixes


def random_key(rng: random.Random) -> str:
    top = rng.choice(["d/", "d/", "d/", "d/", "c", "d", "d0", "d.", "e/"])
    return top + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4)))


def test_ranged_equals_sequential_whatever_the_store_holds_and_the_hints_say() -> None:
    rng = random.Random(16)
    for run in range(1200):
        hinted = {random_key(rng) for _ in range(rng.randint(0, 60))}
        # The store since the hint: some names gone, some new, subdirectories and markers among them.
        store = {k for k in hinted if rng.random() < 0.7} | {random_key(rng) for _ in range(rng.randint(0, 40))}
        model = Model(store, max_keys=rng.randint(1, 8), moto=run % 2 == 1)
        if not model.moto:
            assert model.sequential() == model.truth()
        size = rng.randint(1, 10)
        got = ranged(model, sorted(hinted), size, rng)
        assert got == model.truth(), (sorted(store), sorted(hinted), size, model.moto)


def test_hints_that_match_the_store_cost_one_request_per_range() -> None:
    names = [f"d/f{i:04d}" for i in range(100)]
    model = Model({"d/", *names, "d/sub/x", "e"}, max_keys=10)
    spans = split(PREFIX, names, 8)
    assert len(spans) == 13
    assert ranged(model, names, 8, random.Random(1)) == model.sequential()
    model.requests = 0
    ranged(model, names, 8, random.Random(2))
    assert model.requests == 13


def test_bounds_are_the_directorys_own_file_keys() -> None:
    hints = ["d/a", "d/b", "d/sub/x", "d/sub/", "d/", "e/z", "c", "d/c", "d/d"]
    assert split(PREFIX, hints, 2) == [Range(None, "d/b"), Range("d/b", None)]
    assert split(PREFIX, [], 2) == [Range(None, None)]
    assert split(PREFIX, ["d/a", "d/b", "d/c"], 1) == [Range(None, "d/a"), Range("d/a", "d/b"), Range("d/b", None)]


@pytest.mark.parametrize("failing", [None, "d/f0049"])
def test_a_failed_page_fails_the_listing_with_its_own_error(failing: str | None) -> None:
    model = Model({f"d/f{i:04d}" for i in range(100)}, max_keys=10)

    async def fetch(marker: str | None) -> ListPage:
        if marker == failing:
            raise TemporaryFailure("LIST d/: no answer")
        return await model.fetch(marker)

    async def hints(first_page: Callable[[], Awaitable[ListPage]]) -> list[str]:
        return model.keys

    with pytest.raises(TemporaryFailure, match="no answer"):
        trio.run(lambda: list_all(fetch, PREFIX, hints, size=10))
