"""A reply the worker cannot write (Redis restarting, failing over) is retried until the
request's deadline, then given up: stepped on an injected clock, no sleeping."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from sidecar.worker_replies import RETRY_MAX_S, until_written


class SteppedClock:
    """Time moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.pauses: list[float] = []

    def now(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now_s += seconds


def _failing(times: int) -> tuple[list[int], object]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise RedisConnectionError("Error 111 connecting: connection refused")
        return "written"

    return calls, call


def test_a_write_that_fails_while_redis_fails_over_is_retried_until_it_succeeds() -> None:
    clock = SteppedClock()
    calls, call = _failing(times=5)  # about 2.3 s of failover
    result = asyncio.run(until_written(call, give_up_at=8.0, clock=clock, sleep=clock.sleep))  # type: ignore[arg-type]
    assert result == "written" and len(calls) == 6
    assert clock.pauses == [0.1, 0.2, 0.4, 0.8, RETRY_MAX_S]  # doubling, capped


def test_past_the_deadline_the_last_error_is_raised() -> None:
    clock = SteppedClock()
    calls, call = _failing(times=1000)
    with pytest.raises(RedisConnectionError):
        asyncio.run(until_written(call, give_up_at=3.0, clock=clock, sleep=clock.sleep))  # type: ignore[arg-type]
    assert clock.now_s == pytest.approx(3.0)  # the last pause is cut to the deadline
    assert len(calls) == len(clock.pauses) + 1


def test_a_deadline_already_passed_gets_one_try() -> None:
    clock = SteppedClock()
    clock.now_s = 10.0
    calls, call = _failing(times=1)
    with pytest.raises(RedisConnectionError):
        asyncio.run(until_written(call, give_up_at=9.0, clock=clock, sleep=clock.sleep))  # type: ignore[arg-type]
    assert (len(calls), clock.pauses) == (1, [])
