"""How long a client refused at a full queue should wait: Retry-After from the drain rate.

The gateway counts, per target, the requests its pods answered in the last `WINDOW_S`
seconds (one-second buckets, so memory is fixed and each count O(1)). A full queue of
`waiting` requests drains in about waiting / rate seconds: retrying sooner would meet the
same full queue. Example: 1000 waiting, 250 answered in the last 10 s (25/s) -> 40 s.
With no answer in the window (the target is at zero, or wedged) there is no rate to go by,
and the client is told `RETRY_AFTER_UNKNOWN_S`. The figure is kept within
[RETRY_AFTER_MIN_S; RETRY_AFTER_MAX_S] so a client neither hammers nor gives up.
"""

from __future__ import annotations

import math

WINDOW_S = 10
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 60
RETRY_AFTER_UNKNOWN_S = 10


class DrainRate:
    """Answers per second over the last WINDOW_S seconds, on a clock passed to each call."""

    def __init__(self) -> None:
        self._counts = [0] * WINDOW_S
        self._seconds = [-1] * WINDOW_S  # the whole second each bucket counts

    def record(self, now_s: float) -> None:
        second = int(now_s)
        slot = second % WINDOW_S
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += 1

    def per_second(self, now_s: float) -> float:
        oldest = int(now_s) - WINDOW_S + 1
        total = sum(c for c, s in zip(self._counts, self._seconds, strict=True) if s >= oldest)
        return total / WINDOW_S


def retry_after_s(waiting: int, rate_per_s: float) -> int:
    """The Retry-After to send: the time to drain `waiting` at `rate_per_s`, bounded."""
    if rate_per_s <= 0:
        return RETRY_AFTER_UNKNOWN_S
    return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, math.ceil(waiting / rate_per_s)))
