"""Warnings about one stored object, given once however often the object is met again.

Metadata obsfs cannot show, or a name it cannot serve, is a property of an object that only
another client can change, and every listing and HEAD of it finds the same thing. The user needs
to hear of it once, not once per ``ls``. A daemon serves one mount, so an instance kept at module
level (as ``meta`` and ``layout`` do) warns once per key per mount, without every caller having
to carry it around.
"""

from __future__ import annotations

import logging


class WarnOnce:
    """Logs a warning per key the first time only; remembers at most ``limit`` keys, so that a
    bucket full of such objects costs bounded memory (and then one line saying so)."""

    def __init__(self, logger: logging.Logger, limit: int = 10_000) -> None:
        self._logger = logger
        self._limit = limit
        self._seen: set[str] = set()
        self._full = False

    def __call__(self, key: str, message: str, *args: object) -> None:
        if key in self._seen or self._full:
            return
        if len(self._seen) >= self._limit:
            self._full = True
            self._logger.warning("more than %d objects with the same kind of problem; no longer logged "
                                 "one by one", self._limit)
            return
        self._seen.add(key)
        self._logger.warning(message, *args)
