"""Time for decisions: read in one place, and injectable so tests step it.

Production decides on Redis's clock (`now()` returns None and the read script
uses Redis TIME), so every scaler replica judges time alike. `wait_until`
sleeps until a time on that same clock, given the `now` the last read saw.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float | None:
        """Seconds since the epoch, or None to use Redis's clock."""

    async def wait_until(self, deadline: float, now: float) -> None:
        """Return once the clock reads `deadline`; `now` is the time the caller last saw."""


class RedisClock:
    def now(self) -> float | None:
        return None

    async def wait_until(self, deadline: float, now: float) -> None:
        await asyncio.sleep(max(0.0, deadline - now))
