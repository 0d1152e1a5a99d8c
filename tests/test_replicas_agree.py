"""Several scaler replicas behind KEDA's round robin answer as one: their memory is in Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from scaler.local_redis import LocalRedis
from tests.harness import FakeClock, Poll, RunningScaler, ref, scaler_settings


@pytest.fixture
def replicas(
    redis_server: LocalRedis, redis_client: redis.Redis, clock: FakeClock
) -> Iterator[list[RunningScaler]]:
    running = [RunningScaler(scaler_settings(redis_server.url), clock) for _ in range(2)]
    yield running
    for replica in running:
        replica.stop()


# (seconds since start, queue depth): a burst, a lull, and silence.
TIMELINE = [(0, 12), (15, 30), (30, 4), (45, 4), (90, 0), (150, 0), (200, 0), (420, 0)]


def _replay(
    scalers: list[RunningScaler], client: redis.Redis, clock: FakeClock, start: float
) -> list[Poll]:
    so = ref("llama", queueKey="q", scaleDownDelaySeconds="60", scaleToZeroDelaySeconds="300")
    polls = []
    for i, (at, depth) in enumerate(TIMELINE):
        clock.advance(start + at - clock())
        client.delete("q")
        if depth:
            client.rpush("q", *range(depth))
        polls.append(scalers[i % len(scalers)].keda.poll(so))  # round robin
    return polls


def test_round_robin_over_two_replicas_answers_as_one_replica(
    replicas: list[RunningScaler], redis_client: redis.Redis, clock: FakeClock
) -> None:
    start = clock()
    alternating = _replay(replicas, redis_client, clock, start)
    redis_client.flushall()
    alone = _replay(replicas[:1], redis_client, clock, start + 10_000)

    assert alternating == alone
    values = [(p.value_float, p.active) for p in alternating]
    assert values == [
        (12, True),
        (30, True),
        (30, True),  # held by the window, though the replica answering saw only 4
        (30, True),
        (4, True),
        (0, True),  # no demand since t=45 ... active until t=345
        (0, True),
        (0, False),
    ]


def test_both_replicas_give_the_same_answer_for_the_same_moment(
    replicas: list[RunningScaler], redis_client: redis.Redis, clock: FakeClock
) -> None:
    so = ref("llama", queueKey="q")
    redis_client.rpush("q", *range(20))
    replicas[0].keda.poll(so)
    redis_client.delete("q")
    clock.advance(5)
    assert replicas[0].keda.poll(so) == replicas[1].keda.poll(so)
    assert replicas[1].keda.poll(so).value_float == 20
