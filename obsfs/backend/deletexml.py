"""A multi-object delete's XML: the request body, and the keys its answer says were not deleted.

Sent by ``keepalive.py`` rather than the SDK: a fresh mount's first batch of deletes (``rm -r``)
imported the SDK, which held the GIL for 0.28 s (py-spy) of an ``rm -r`` of 1,000 files that
takes 2.4 s unprofiled. The body is the SDK's (``Quiet`` false, one ``Object`` per key), so the
store sees the same request.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree import ElementTree

from obsfs.backend.xmlanswer import answer_root


class DeleteAnswerUnreadable(ValueError):
    """The answer is not a multi-object delete's result."""


def delete_body(keys: Iterable[str]) -> bytes:
    """The XML that asks to delete ``keys``; ElementTree escapes what XML needs escaped."""
    root = ElementTree.Element("Delete")
    ElementTree.SubElement(root, "Quiet").text = "false"
    for key in keys:
        ElementTree.SubElement(ElementTree.SubElement(root, "Object"), "Key").text = key
    return ElementTree.tostring(root, "UTF-8")


def delete_failures(xml: bytes) -> list[tuple[str, str]]:
    """(key, error code) of each key the store reports it did not delete."""
    root, ns = answer_root(xml, "DeleteResult", DeleteAnswerUnreadable, "delete")
    return [(error.findtext(f"{ns}Key") or "", error.findtext(f"{ns}Code") or "")
            for error in root.iterfind(f"{ns}Error")]
