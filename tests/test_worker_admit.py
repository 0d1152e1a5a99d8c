"""The worker admits at most the target's learned concurrency (its admit key): real Redis, Triton.

The worker runs in the test's event loop with a real engine (tests.test_worker.running_worker);
its admit key is read every `admit_refresh_s`, injected short so a change shows within a fraction
of a second. "Run at once" is what the worker holds and what Redis shows taken (pending in the
group); what waits is what the stream holds beyond that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from gateway.contract import ReplyType
from scaler.local_redis import LocalRedis
from scaler.reports import report_keys
from sidecar.worker_admit import Limit, admit_key, admit_limit
from tests.harness import NAMESPACE
from tests.real_triton import Repository, TritonServer, serving
from tests.test_worker import (
    SLEEPER,
    TARGET,
    Gateway,
    Running,
    infer_body,
    pending_count,
    queued_count,
    running_worker,
    scenario,
    until,
)

ADMIT = f"llm-scaler:{{{NAMESPACE}/{TARGET}}}:admit"  # the contract's key, spelled out

SLOTS = 8
REFRESH_S = 0.1


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("worker_admit_triton")
    repository = Repository(root / "models")
    repository.sleeper(SLEEPER, instances=SLOTS)  # every slot executes at once
    with serving(root / "models", root) as server:
        yield server


class Sampler:
    """(held by the worker, taken in Redis, waiting in the stream), every 5 ms."""

    def __init__(self, running: Running, client: Redis) -> None:
        self.running = running
        self.client = client
        self.seen: list[tuple[int, int, int]] = []
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        # Stopped by a flag, not cancelled: redis-py may turn a cancel inside a call into
        # an error, which pending_count suppresses, and the loop would never end.
        while not self._stop.is_set():
            held = self.running.worker.inflight
            taken = await pending_count(self.client)
            waiting = await queued_count(self.client) - taken
            self.seen.append((held, taken, waiting))
            await asyncio.sleep(0.005)

    def mark(self) -> int:
        return len(self.seen)

    def most(self, since: int = 0) -> tuple[int, int]:
        """The most held and the most taken since sample `since`."""
        window = self.seen[since:]
        assert window, f"no sample since {since}"
        return max(h for h, _, _ in window), max(t for _, t, _ in window)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


@contextlib.asynccontextmanager
async def sampling(running: Running, client: Redis) -> AsyncIterator[Sampler]:
    """Samples while inside; stopped on the way out, also when an assertion fails."""
    sampler = Sampler(running, client)
    try:
        yield sampler
    finally:
        await sampler.stop()


async def _taken(client: Redis, wanted: int, timeout_s: float, what: str) -> float:
    """Waits until Redis shows `wanted` taken; the seconds it took."""
    began = time.monotonic()

    async def there() -> bool:
        return await pending_count(client) == wanted

    await until(there, timeout_s, what)
    return time.monotonic() - began


async def _all_answered_once(gateway: Gateway, ids: list[str]) -> None:
    for request_id in ids:
        (reply,) = await gateway.answered(request_id)
        assert (reply.type, reply.status, reply.attempt) == (ReplyType.FULL, 200, 1)


def test_at_most_admit_run_at_once_and_the_rest_wait_in_the_stream(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    """Admit 3 on 8 slots, 10 queued before the pod starts: its first sweep takes 3, not 8."""

    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        await client.set(ADMIT, "3.7")
        ids = [(await gateway.enqueue(infer_body(0.3)))[0] for _ in range(10)]
        async with (
            running_worker(
                redis_server.url, triton, slots=SLOTS, admit_refresh_s=REFRESH_S
            ) as running,
            sampling(running, client) as sampler,
        ):
            await _all_answered_once(gateway, ids)
            await until(lambda: _none_queued(client), 5, "all acknowledged")
            assert running.worker.admit == 3
            assert running.worker.slots == SLOTS  # the capacity the pod reports
        assert sampler.most() == (3, 3)
        assert any(t == 3 and w == 7 for _, t, w in sampler.seen)  # the rest waited in the stream

    scenario(redis_server, body)


async def _none_queued(client: Redis) -> bool:
    return await queued_count(client) == 0


def test_a_raised_admit_takes_more_within_the_refresh_and_no_key_means_the_slots(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        await client.set(ADMIT, "3")
        ids = [(await gateway.enqueue(infer_body(2.5)))[0] for _ in range(10)]
        async with running_worker(
            redis_server.url, triton, slots=SLOTS, admit_refresh_s=REFRESH_S
        ) as running:
            await _taken(client, 3, 2, "3 taken")
            async with sampling(running, client) as sampler:
                await asyncio.sleep(5 * REFRESH_S)
                assert sampler.most() == (3, 3)  # several refreshes: still 3
                await client.set(ADMIT, "6")
                raised_s = await _taken(client, 6, 1, "6 taken after admit 6")
                mark = sampler.mark()
                await asyncio.sleep(5 * REFRESH_S)
                assert sampler.most(mark) == (6, 6)
                await client.delete(ADMIT)
                unset_s = await _taken(client, SLOTS, 1, "every slot taken without the key")
                assert running.worker.admit == SLOTS
            await _all_answered_once(gateway, ids)
        # One refresh interval, plus the round trips of a take.
        assert raised_s < REFRESH_S + 0.15, f"admit 6 took {raised_s:.3f} s to show"
        assert unset_s < REFRESH_S + 0.15, f"no key took {unset_s:.3f} s to show"

    scenario(redis_server, body)


def test_a_lowered_admit_cancels_nothing_and_takes_nothing_new_above_it(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    """Admit 6 lowered to 2 while 6 run, ending 0.2 s apart: none is cancelled, and the short
    requests behind them start only once fewer than 2 run."""

    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        await client.set(ADMIT, "6")
        first = [(await gateway.enqueue(infer_body(0.6 + 0.2 * i)))[0] for i in range(6)]
        later = [(await gateway.enqueue(infer_body(0.2)))[0] for _ in range(4)]
        async with running_worker(
            redis_server.url, triton, slots=SLOTS, admit_refresh_s=REFRESH_S
        ) as running:
            await _taken(client, 6, 2, "the first 6 taken")
            await client.set(ADMIT, "2")
            await until(lambda: _admits(running, 2), 1, "admit 2 read")
            assert running.worker.inflight == 6  # nothing cancelled
            async with sampling(running, client) as sampler:
                await _all_answered_once(gateway, first[:4])
                # 2 of the first still run (0.2 s more at least): none of the later started.
                await until(lambda: _holds(running, 2), 0.15, "2 of the first held")
                for request_id in later:
                    assert await gateway.replies_to(request_id) == []
                await _all_answered_once(gateway, first[4:])
                mark = sampler.mark()
                await _all_answered_once(gateway, later)
        assert sampler.most(mark)[1] <= 2  # then 2 at a time

    scenario(redis_server, body)


async def _admits(running: Running, wanted: int) -> bool:
    return running.worker.admit == wanted


async def _holds(running: Running, wanted: int) -> bool:
    return running.worker.inflight == wanted


@pytest.mark.parametrize("value", ["lots", "-2", "nan", "a hash"])
def test_an_unreadable_admit_is_logged_once_and_the_slots_used(
    redis_server: LocalRedis, triton: TritonServer, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    caplog.set_level(logging.WARNING, logger="sidecar.worker_admit")

    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        if value == "a hash":
            await client.hset(ADMIT, "c", "3")  # WRONGTYPE for a GET
        else:
            await client.set(ADMIT, value)
        ids = [(await gateway.enqueue(infer_body(0.5)))[0] for _ in range(SLOTS + 2)]
        async with running_worker(
            redis_server.url, triton, slots=SLOTS, admit_refresh_s=REFRESH_S
        ) as running:
            await _taken(client, SLOTS, 2, "every slot taken")
            await asyncio.sleep(5 * REFRESH_S)  # several refreshes of the same bad value
            assert running.worker.admit == SLOTS
            await _all_answered_once(gateway, ids)

    scenario(redis_server, body)
    complaints = [r.getMessage() for r in caplog.records if ADMIT in r.getMessage()]
    assert len(complaints) == 1, complaints
    shown = "unreadable (WRONGTYPE" if value == "a hash" else repr(value)
    assert shown in complaints[0] and f"the {SLOTS} slots" in complaints[0]


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        (None, Limit(8)),
        (b"3", Limit(3)),
        (b"3.99", Limit(3)),
        ("12.5", Limit(8)),  # never above the slots
        (b"0.4", Limit(1)),  # at least 1: a pod that admits nothing serves nothing
        (b"0", Limit(1)),
        (b"1e1", Limit(8)),
        (b"-1", Limit(8, "-1")),
        (b"inf", Limit(8, "inf")),
        (b"NaN", Limit(8, "NaN")),
        (b"", Limit(8, "")),
        (b"three", Limit(8, "three")),
    ],
)
def test_the_limit_read_from_the_key(raw: object, limit: Limit) -> None:
    assert admit_limit(raw, 8) == limit


def test_the_worker_reads_the_key_the_scaler_writes() -> None:
    assert admit_key(NAMESPACE, TARGET) == report_keys(NAMESPACE, TARGET).admit == ADMIT


def test_a_background_loop_stops_when_its_cancellation_was_swallowed() -> None:
    """redis-py can swallow a cancellation that lands inside a call; the worker's background
    loops then check for it themselves, or stopping the worker would wait for them forever."""
    from sidecar.worker import _raise_if_cancelled

    async def swallowing_loop(rounds: list[int]) -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # a call that swallows it
                await asyncio.sleep(0.01)
            rounds.append(1)
            _raise_if_cancelled()

    async def run() -> int:
        rounds: list[int] = []
        task = asyncio.create_task(swallowing_loop(rounds))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        return len(rounds)

    assert asyncio.run(run()) > 0
