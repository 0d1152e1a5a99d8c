"""A dict bounded in size, least recently put first out: memory that what clients or pods send
cannot grow (the service's remembered decisions, the store's warned-once messages)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

V = TypeVar("V")


def put_bounded(entries: OrderedDict[str, V], key: str, value: V, limit: int) -> None:
    """Newest last; beyond `limit` entries the least recently put goes."""
    entries[key] = value
    entries.move_to_end(key)
    if len(entries) > limit:
        entries.popitem(last=False)
