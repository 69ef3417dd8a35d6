"""The root element of an S3 answer's XML, checked to be the document asked for."""

from __future__ import annotations

from xml.etree import ElementTree


def answer_root(xml: str | bytes, tag: str, unreadable: type[ValueError],
                what: str) -> tuple[ElementTree.Element, str]:
    """The root, which must be ``tag`` in any namespace, and that namespace as ``{uri}`` (or
    ""), to prefix the names looked up in it; ``unreadable`` is raised for anything else."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise unreadable(f"{what} answer is not XML: {exc}") from None
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag != f"{ns}{tag}":
        raise unreadable(f"{what} answer is a {root.tag}, not a {tag}")
    return root, ns
