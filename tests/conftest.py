"""Shared fixtures: a real redis-server on a free port (or a real Sentinel or Cluster
deployment, for the tests parametrised over them), and the real scaler over real gRPC."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from scaler.local_redis import LocalRedis
from tests.harness import FakeClock, ReportPublisher, RunningScaler, scaler_settings
from tests.redis_deployments import (
    ClusterDeployment,
    Deployment,
    SentinelDeployment,
    SingleDeployment,
)

# For `pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)`.
EVERY_DEPLOYMENT = ["single", "sentinel", "cluster"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    server = LocalRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def sentinel_deployment() -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment()
    try:
        yield deployment.start()
    finally:
        deployment.close()


@pytest.fixture(scope="session")
def cluster_deployment() -> Iterator[ClusterDeployment]:
    deployment = ClusterDeployment()
    try:
        yield deployment.start()
    finally:
        deployment.close()


@pytest.fixture
def deployment(request: pytest.FixtureRequest, redis_server: LocalRedis) -> Deployment:
    """The suite's single redis-server unless a test is parametrised over deployments."""
    kind = getattr(request, "param", "single")
    if kind == "single":
        return SingleDeployment(redis_server)
    chosen: Deployment = request.getfixturevalue(f"{kind}_deployment")
    return chosen


@pytest.fixture
def redis_client(redis_server: LocalRedis, deployment: Deployment) -> Iterator[redis.Redis]:
    if deployment.name == "single" and not _answers(redis_server):
        redis_server.start()  # a test that killed it and failed before restarting
    client = deployment.client()
    _flush(client)
    yield client  # type: ignore[misc]  # a RedisCluster on a Cluster: the same commands
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def publisher(redis_client: redis.Redis) -> ReportPublisher:
    return ReportPublisher(redis_client)


@pytest.fixture
def scaler(
    deployment: Deployment, redis_client: redis.Redis, clock: FakeClock
) -> Iterator[RunningScaler]:
    # Tests on a Sentinel or Cluster deployment check answers, not timeouts, and a fresh
    # scaler's first command there reaches several servers: 0.5 s failed on a loaded 2-core
    # machine ("redis did not answer within 0.5 s"). The timeout tests run on the single one.
    timeout_s = 0.5 if deployment.name == "single" else 2.0
    settings = scaler_settings(
        deployment.url,
        redis_sentinel_password=deployment.sentinel_password,
        redis_timeout_s=timeout_s,
    )
    running = RunningScaler(settings, clock)
    yield running
    running.stop()


def _flush(client: redis.Redis) -> None:
    """FLUSHALL on the deployment's master. After an earlier test's failover the client's
    first call may reach the old master, now a replica, before Sentinel names the new one:
    it is asked again until the master answers (at most 10 s)."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            client.flushall()
            return
        except (redis.ConnectionError, redis.ReadOnlyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _answers(server: LocalRedis) -> bool:
    client = redis.Redis(port=server.port, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()
