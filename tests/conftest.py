"""Shared fixtures: a real redis-server on a free port, and the real scaler over real gRPC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from scaler.local_redis import LocalRedis
from tests.harness import FakeClock, ReportPublisher, RunningScaler, scaler_settings


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    server = LocalRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    if not _answers(redis_server):  # a test that killed it and failed before restarting
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def publisher(redis_client: redis.Redis) -> ReportPublisher:
    return ReportPublisher(redis_client)


@pytest.fixture
def scaler(
    redis_server: LocalRedis, redis_client: redis.Redis, clock: FakeClock
) -> Iterator[RunningScaler]:
    running = RunningScaler(scaler_settings(redis_server.url), clock)
    yield running
    running.stop()


def _answers(server: LocalRedis) -> bool:
    client = redis.Redis(port=server.port, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()
