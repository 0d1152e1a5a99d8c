"""From zero and feed at once: how soon a pod that becomes ready takes queued work.

Real processes: redis-server, `python -m gateway`, `python -m sidecar` with WORKER=on per pod,
each pod's engine the stand-in (tests.benchmarks.engine_standin), whose readiness the
benchmark turns on. Both ends of each figure are stamped inside the stand-in on one clock:
the moment it turned ready, and the arrival of each infer request.

- From zero: 50 requests wait in the gateway while no pod exists; a pod starts (sidecar and
  worker running, its engine not ready yet) and its engine turns ready -> the first request
  arrives at the engine. Every request must be answered with its own value.
- Feed at once: two pods hold their full slots (requests held by their engines), 40 more wait;
  a third pod's engine turns ready -> the third pod holds its full slots.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from gateway.contract import CONSUMER_GROUP, request_streams
from tests.benchmarks.queueing_load import Tally, batch, session
from tests.benchmarks.queueing_procs import NAMESPACE, TARGET, Gateway, Pod, StandIn

ZERO_RUNS = 20
ZERO_REQUESTS = 50
FEED_RUNS = 15
FEED_SLOTS = 8
FEED_WAITING = 40
WAIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WakeRun:
    first_ms: float  # ready -> the first request arrived at the engine
    full_ms: float  # ready -> the last one counted arrived (from zero: all; feed: the slots)
    answered: int
    sent: int


async def control(client: aiohttp.ClientSession, standin: StandIn, **query: int) -> Any:
    """The stand-in's state, after setting `query` (ready, hold, reset) if given."""
    params = {k: str(v) for k, v in query.items()}
    call = client.post if params else client.get
    async with call(f"{standin.url}/control", params=params) as answer:
        return await answer.json()


async def waiting(r: aioredis.Redis) -> int:
    """Requests queued and not taken by any pod: XLEN less pending, every class."""
    total = 0
    for stream in request_streams(NAMESPACE, TARGET):
        length = await r.xlen(stream)
        if length:
            pending = await r.xpending(stream, CONSUMER_GROUP)
            total += length - int(pending["pending"])
    return total


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls `check`: the state is in other processes (Redis, a stand-in), no event to await."""
    try:
        async with asyncio.timeout(WAIT_TIMEOUT_S):
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise TimeoutError(f"waited {WAIT_TIMEOUT_S:g} s for {what}") from None


def _times(state: Any, count: int) -> tuple[float, float]:
    arrivals = sorted(state["arrivals"])
    if len(arrivals) < count:
        raise RuntimeError(f"{len(arrivals)} requests reached the engine, expected {count}")
    ready_at = float(state["ready_at"])
    return (arrivals[0] - ready_at) * 1000, (arrivals[count - 1] - ready_at) * 1000


async def from_zero(redis_url: str, runs: int = ZERO_RUNS) -> list[WakeRun]:
    standin = StandIn(ready=False)
    gateway = Gateway(redis_url)
    r = aioredis.Redis.from_url(redis_url)
    results = []
    try:
        async with session() as client:
            for run in range(runs):
                await control(client, standin, ready=0, reset=1)
                tally = Tally()
                first = run * 1000
                tasks = batch(client, gateway.url, first, ZERO_REQUESTS, tally)

                async def all_queued() -> bool:
                    return await waiting(r) == ZERO_REQUESTS

                await until(all_queued, "every request queued")
                pod = await asyncio.to_thread(Pod, redis_url, f"echo-zero-{run}", standin, 8)
                try:
                    await asyncio.to_thread(pod.wait_reported, False)
                    # Readiness can come at any point of the sidecar's watch period.
                    await asyncio.sleep(random.uniform(0, 0.05))
                    await control(client, standin, ready=1)
                    answered = sum(await asyncio.gather(*tasks))
                    state = await control(client, standin)
                finally:
                    await asyncio.to_thread(pod.stop)
                first_ms, all_ms = _times(state, ZERO_REQUESTS)
                if tally.errors:
                    raise RuntimeError(f"from zero, run {run}: {tally.errors}")
                results.append(WakeRun(first_ms, all_ms, answered, ZERO_REQUESTS))
    finally:
        await r.aclose()
        gateway.stop()
        standin.stop()
    return results


async def feed_at_once(redis_url: str, runs: int = FEED_RUNS) -> list[WakeRun]:
    standins = [StandIn(), StandIn(), StandIn(ready=False)]
    gateway = Gateway(redis_url)
    full = [Pod(redis_url, f"echo-full-{i}", standins[i], FEED_SLOTS) for i in range(2)]
    r = aioredis.Redis.from_url(redis_url)
    results = []
    sent = 2 * FEED_SLOTS + FEED_WAITING
    try:
        for pod in full:
            pod.wait_reported(True)
        async with session() as client:
            for run in range(runs):
                for standin in standins:
                    await control(client, standin, hold=1, reset=1)
                await control(client, standins[2], ready=0)
                third = await asyncio.to_thread(
                    Pod, redis_url, f"echo-new-{run}", standins[2], FEED_SLOTS
                )
                try:
                    await asyncio.to_thread(third.wait_reported, False)
                    tally = Tally()
                    tasks = batch(client, gateway.url, run * 1000, sent, tally)

                    async def two_full() -> bool:
                        held = [(await control(client, s))["held"] for s in standins[:2]]
                        return held == [FEED_SLOTS] * 2 and await waiting(r) == FEED_WAITING

                    await until(two_full, "two pods full, the rest waiting")
                    await asyncio.sleep(random.uniform(0, 0.05))
                    await control(client, standins[2], ready=1)

                    async def third_full() -> bool:
                        return bool((await control(client, standins[2]))["held"] == FEED_SLOTS)

                    await until(third_full, "the third pod full")
                    state = await control(client, standins[2])
                    for standin in standins:
                        await control(client, standin, hold=0)
                    answered = sum(await asyncio.gather(*tasks))
                finally:
                    await asyncio.to_thread(third.stop)
                if tally.errors:
                    raise RuntimeError(f"feed at once, run {run}: {tally.errors}")
                first_ms, full_ms = _times(state, FEED_SLOTS)
                results.append(WakeRun(first_ms, full_ms, answered, sent))
    finally:
        await r.aclose()
        for pod in full:
            pod.stop()
        gateway.stop()
        for standin in standins:
            standin.stop()
    return results
