"""How many requests the worker runs at once: its slots, or fewer under a token-latency objective.

With `tokenLatencyMs` set, the scaler writes the target's `admit` key: the sequences one pod may
decode together while every token stays within the objective (the decision's current C). A pod
that admits past C slows every token it serves, so the worker takes at most
min(slots, max(1, floor(admit))) and leaves the rest in the stream, where the scaler counts it
and adds replicas. No key (no objective, or nothing decided yet): the slots, as without one.

The key is read by a periodic GET (`Admission.refresh`, every `ADMIT_REFRESH_S`), never on the
path of a take. A lower limit cancels nothing: the worker takes nothing new until it holds fewer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from scaler.redis_connect import AnyRedis
from scaler.reports import report_keys

log = logging.getLogger(__name__)

ADMIT_REFRESH_S = 1.0  # how often the admit key is read again


def admit_key(namespace: str, target: str) -> str:
    """The target's admit key (STRING, a decimal number), written by the scaler."""
    return report_keys(namespace, target).admit


@dataclass(frozen=True)
class Limit:
    """Requests taken at most at once, and why."""

    at_most: int
    bad_value: str | None = None  # the key's value when it could not be read as a number


def admit_limit(raw: Any, slots: int) -> Limit:
    """The limit for the admit key's value `raw` (None: no key): min(slots, max(1, floor))."""
    if raw is None:
        return Limit(slots)
    text = _text(raw)
    try:
        value = float(text)
    except ValueError:
        return Limit(slots, text)
    if not math.isfinite(value) or value < 0:
        return Limit(slots, text)
    return Limit(min(slots, max(1, math.floor(value))))


class Admission:
    """The limit in force for one pod: its slots until the admit key says fewer."""

    def __init__(self, key: str, slots: int) -> None:
        self.key = key
        self._slots = slots
        self.limit = slots
        self._complained: str | None = None  # the bad value logged last: logged once

    async def refresh(self, client: AnyRedis) -> bool:
        """One GET of the key; True when the limit rose (free slots to fill)."""
        try:
            raw = await client.get(self.key)
        except ResponseError as exc:  # e.g. WRONGTYPE: a key that is not a string
            return self._take(Limit(self._slots, f"unreadable ({exc})"), "unreadable")
        return self.apply(raw)

    def apply(self, raw: Any) -> bool:
        """Takes the key's value `raw` (None: absent); True when the limit rose."""
        return self._take(admit_limit(raw, self._slots), "absent" if raw is None else _text(raw))

    def _take(self, read: Limit, shown: str) -> bool:
        if read.bad_value is not None:
            if read.bad_value != self._complained:
                log.warning(
                    "%s = %r is not a number >= 0: taking up to the %d slots",
                    self.key,
                    read.bad_value,
                    self._slots,
                )
                self._complained = read.bad_value
        else:
            self._complained = None
        before, self.limit = self.limit, read.at_most
        if self.limit != before:
            log.info(
                "admitting at most %d requests at once (%s: %s, slots %d)",
                self.limit,
                self.key,
                shown,
                self._slots,
            )
        return self.limit > before


def _text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
