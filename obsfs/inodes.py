"""Inode numbers for paths, with the kernel's lookup counts.

The kernel holds an inode as long as its lookup count is above zero; we may forget a node only
when that count and our own open count are both zero (pyfuse3's rule: every reply that hands out
an inode adds one, only ``forget`` takes away). Nodes are addressed by path; an unlinked node
loses its path but lives on until forgotten, so open handles on it stay valid.

Only the nodes the kernel holds (or that are open or have data to upload) live here; the number
of every path ever shown is in ``InodeMap`` on disk, and a node made again for a path the kernel
had forgotten takes its number from there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from obsfs.inodemap import ROOT_INO as ROOT_INO
from obsfs.inodemap import InodeMap
from obsfs.layout import is_under, rebase
from obsfs.meta import Attrs

if TYPE_CHECKING:
    from obsfs.partstream import PartStream
    from obsfs.staging import StagedFile


@dataclass(frozen=True)
class Entry:
    """What we know about one path. Replaced, never mutated, so a cached value cannot change
    under a reader between two awaits."""

    attrs: Attrs
    etag: str | None = None  # None: not (yet) in the store, or not known
    content_type: str | None = None
    exact: bool = True  # False: mode/uid/mtime are defaults from a listing, a HEAD is due
    has_marker: bool = False  # directories: a "dir/" object exists
    # directories: the zero-byte object at the name itself marks it (obsfs/dialects.py), so
    # removing the directory removes that object too
    object_marker: bool = False
    link_target: bytes | None = None


@dataclass(eq=False)
class Node:
    ino: int
    path: str | None  # None once unlinked
    entry: Entry
    lookups: int = 0
    opens: int = 0
    staged: StagedFile | None = None
    stream: PartStream | None = None  # its parts being uploaded while it is still written
    local_only: bool = False  # created here and not uploaded yet
    kernel_etag: str | None = None  # the version whose pages the kernel may still cache
    lock: trio.Lock = field(default_factory=trio.Lock)


class InodeTable:
    """ino -> Node and path -> Node, for every inode the kernel may still name."""

    def __init__(self, root_entry: Entry, numbers: InodeMap) -> None:
        root = Node(ino=ROOT_INO, path="", entry=root_entry, lookups=1)
        self._by_ino: dict[int, Node] = {ROOT_INO: root}
        self._by_path: dict[str, Node] = {"": root}
        self.numbers = numbers

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Node | None:
        return self._by_ino.get(ino)

    def by_path(self, path: str) -> Node | None:
        return self._by_path.get(path)

    def add(self, path: str, entry: Entry, *, created: bool = False) -> Node:
        """The node for ``path``, created if needed, with ``entry`` as its current truth.
        ``created``: this mount has just made the entry, so its path most likely has no number
        yet (``InodeMap.created``)."""
        return self.add_many([(path, entry)], created=created)[0]

    def add_many(self, items: Sequence[tuple[str, Entry]], *, created: bool = False) -> list[Node]:
        """``add`` for sibling paths (a readdir batch): new nodes take their numbers from the
        inode map in one go (``InodeMap.numbers``)."""
        missing: list[tuple[str, Entry]] = []
        for path, entry in items:
            node = self._by_path.get(path)
            if node is not None and node.entry.attrs.kind == entry.attrs.kind:
                node.entry = entry
                continue
            if node is not None:
                # The object changed type (file <-> dir) behind our back: a new inode, so the
                # kernel does not see one inode change its type.
                self.detach(node)
            missing.append((path, entry))
        wanted = [(path, entry.attrs.kind) for path, entry in missing]
        if created:
            numbers = [self.numbers.created(path, kind) for path, kind in wanted]
        else:
            numbers = self.numbers.numbers(wanted) if wanted else []
        for (path, entry), ino in zip(missing, numbers, strict=True):
            node = Node(ino=ino, path=path, entry=entry)
            self._by_ino[ino] = node
            self._by_path[path] = node
        return [self._by_path[path] for path, _ in items]

    def unlink(self, path: str) -> None:
        """``path`` (and what was below it) is gone, whether or not the kernel holds its node."""
        node = self._by_path.get(path)
        if node is not None:
            self.detach(node)
        else:
            self.numbers.drop(path)

    def detach(self, node: Node) -> None:
        """Unlink: the path no longer names this node, nor its number; open handles keep it alive."""
        if node.path is not None:
            self.numbers.drop(node.path)
        self._unname(node)

    def _unname(self, node: Node) -> None:
        if node.path is not None and self._by_path.get(node.path) is node:
            del self._by_path[node.path]
        node.path = None
        self.drop_if_unused(node)

    def forget(self, ino: int, count: int) -> None:
        node = self._by_ino.get(ino)
        if node is None or ino == ROOT_INO:
            return
        node.lookups = max(0, node.lookups - count)
        self.drop_if_unused(node)

    def drop_if_unused(self, node: Node) -> None:
        if node.lookups > 0 or node.opens > 0 or node.ino == ROOT_INO or node.staged is not None or node.local_only:
            return
        self._by_ino.pop(node.ino, None)
        if node.path is not None and self._by_path.get(node.path) is node:
            del self._by_path[node.path]

    def under(self, path: str) -> Iterator[Node]:
        """Every node at or below ``path`` (a snapshot, safe to modify the table while iterating)."""
        return iter([n for p, n in self._by_path.items() if is_under(p, path)])

    def move(self, old: str, new: str) -> None:
        """Rename ``old`` (and everything below it) to ``new``; a node already at ``new`` is unlinked."""
        moving = [n for n in self.under(old) if n.path is not None]
        for node in list(self.under(new)):
            if node not in moving:
                self._unname(node)
        self.numbers.move(old, new)
        for node in moving:
            assert node.path is not None
            del self._by_path[node.path]
        for node in moving:
            assert node.path is not None
            node.path = rebase(node.path, old, new)
            self._by_path[node.path] = node
