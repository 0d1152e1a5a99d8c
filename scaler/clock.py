"""Time, read in one place and injectable so tests step it.

`Clock` is the one clock type of the scaler and the sidecar: `now()` in seconds on a
clock that never goes back (`MONOTONIC`, time.monotonic, in production). The tests'
FakeClock implements it.

Decisions are judged on Redis's clock instead, so every scaler replica judges time alike:
a `DecisionClock`'s `now()` returns None to have the read script use Redis TIME
(`RedisClock`, production), or a time of its own (tests); `wait_until` sleeps until a time
on that same clock, given the `now` the last read saw.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a clock that never goes back; any origin."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


MONOTONIC = MonotonicClock()


class DecisionClock(Protocol):
    def now(self) -> float | None:
        """Seconds since the epoch, or None to use Redis's clock."""

    async def wait_until(self, deadline: float, now: float) -> None:
        """Return once the clock reads `deadline`; `now` is the time the caller last saw."""


class RedisClock:
    def now(self) -> float | None:
        return None

    async def wait_until(self, deadline: float, now: float) -> None:
        await asyncio.sleep(max(0.0, deadline - now))
