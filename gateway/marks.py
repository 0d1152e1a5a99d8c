"""Cancelled marks: the requests whose client is gone (disconnected, or answered 504).

A worker checks its target's `cancelled` ZSET (contract.cancelled_key) before it starts a
request and skips one found there. Marks are written by one task per process, batched: a
handler only appends (it may be in the middle of being cancelled itself, where awaiting Redis
is no option), and a burst of disconnects costs one round trip. Each mark's score is the time
(ms, wall clock) after which it is useless: the request's deadline plus `MARGIN_MS`, past which
no worker starts it anyway; each write also trims marks already past that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scaler.redis_connect import REDIS_ERRORS, AnyRedis

log = logging.getLogger("gateway.marks")

# Keeps a mark past the deadline by more than any clock skew between the gateway and Redis.
MARGIN_MS = 60_000
RETRY_AFTER_ERROR_S = 0.2


class CancelMarks:
    def __init__(self, client: AnyRedis, wall_ms: Callable[[], int]) -> None:
        self._client = client
        self._wall_ms = wall_ms
        self._pending: dict[str, dict[str, int]] = {}  # cancelled key -> request id -> expiry
        self._wake = asyncio.Event()
        self.written = 0

    def mark(self, cancelled_key: str, request_id: str, deadline_ms: int) -> None:
        """Queue the mark; `deadline_ms` is the request's deadline on the wall clock."""
        self._pending.setdefault(cancelled_key, {})[request_id] = deadline_ms + MARGIN_MS
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(RETRY_AFTER_ERROR_S)
                self._wake.set()

    async def flush(self) -> bool:
        """Write what is pending; False if Redis failed (the marks stay pending)."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, {}
        pipe = self._client.pipeline(transaction=False)
        now_ms = self._wall_ms()
        for key, marks in batch.items():
            pipe.zadd(key, marks)
            pipe.zremrangebyscore(key, "-inf", now_ms)
        try:
            await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("writing %d cancelled marks failed: %s", len(batch), exc)
            for key, marks in batch.items():
                self._pending.setdefault(key, {}).update(marks)
            return False
        self.written += sum(len(m) for m in batch.values())
        return True
