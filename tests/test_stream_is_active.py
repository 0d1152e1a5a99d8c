"""StreamIsActive (trigger type external-push): pushed by key events and by the clock, not polled.

The scaler under test re-checks open streams only every 30 s (see harness), so
every answer these tests wait for had to be pushed by an event."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from scaler._generated import externalscaler_pb2 as pb
from scaler.local_redis import LocalRedis
from tests.conftest import EVERY_DEPLOYMENT
from tests.harness import FakeClock, ReportPublisher, RunningScaler, pod_report, ref

# Pushed by key events on one Redis, Sentinel's master, and every master of a Cluster.
every_deployment = pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)


def _next(stream: Iterator[pb.IsActiveResponse]) -> bool:
    return next(stream).result


@every_deployment
def test_first_request_queued_at_zero_is_pushed(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    for queue_type, push in (
        ("list", lambda: redis_client.lpush("q:list", "r")),
        ("zset", lambda: redis_client.zadd("q:zset", {"r": 1})),
    ):
        stream = scaler.stub.StreamIsActive(
            ref(f"m-{queue_type}", queueKey=f"q:{queue_type}", queueType=queue_type), timeout=10
        )
        assert _next(stream) is False
        push()
        assert _next(stream) is True
        stream.cancel()


@every_deployment
def test_first_request_on_a_stream_queue_is_pushed(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    redis_client.xgroup_create("s", "workers", id="0", mkstream=True)
    so = ref("m", queueKey="s", queueType="stream", consumerGroup="workers")
    stream = scaler.stub.StreamIsActive(so, timeout=10)
    assert _next(stream) is False
    redis_client.xadd("s", {"prompt": "hello"})
    assert _next(stream) is True
    stream.cancel()


@every_deployment
def test_a_pod_reporting_load_at_zero_is_pushed(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    stream = scaler.stub.StreamIsActive(ref("m"), timeout=10)
    assert _next(stream) is False
    publisher.publish("m", pod_report("p", inflight=2), at=clock())
    assert _next(stream) is True
    stream.cancel()


@every_deployment
def test_demand_below_activation_threshold_is_not_pushed_until_it_crosses(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    stream = scaler.stub.StreamIsActive(ref("m", queueKey="q", activationThreshold="2"), timeout=10)
    assert _next(stream) is False
    redis_client.rpush("q", "a", "b")  # 2: not above the threshold, nothing to push
    redis_client.rpush("q", "c")
    assert _next(stream) is True
    stream.cancel()


@every_deployment
def test_last_demand_gone_is_pushed_after_the_scale_to_zero_delay(
    scaler: RunningScaler, redis_client: redis.Redis, clock: FakeClock
) -> None:
    so = ref("m", queueKey="q", scaleToZeroDelaySeconds="300")
    redis_client.rpush("q", "r")
    stream = scaler.stub.StreamIsActive(so, timeout=10)
    assert _next(stream) is True
    redis_client.delete("q")
    assert scaler.stub.IsActive(so).result is True  # polls see it held too
    clock.advance(299)
    assert scaler.stub.IsActive(so).result is True
    clock.advance(2)
    assert _next(stream) is False  # woken by the clock: nothing changed in Redis
    stream.cancel()


def test_stream_survives_a_redis_restart_and_pushes_again(
    scaler: RunningScaler, redis_server: LocalRedis
) -> None:
    stream = scaler.stub.StreamIsActive(ref("m", queueKey="q"), timeout=20)
    assert _next(stream) is False
    redis_server.kill()
    redis_server.start()  # empty, notifications off, nobody subscribed
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as fresh:
        channel = "__keyspace@0__:q"
        assert _eventually(lambda: dict(fresh.pubsub_numsub(channel))[channel] >= 1)
        assert "K" in fresh.config_get("notify-keyspace-events")["notify-keyspace-events"]
        fresh.rpush("q", "r")
    assert _next(stream) is True
    stream.cancel()


def test_a_subscription_redis_py_reconnects_by_itself_turns_notifications_back_on(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    # A Redis restarted between two reads looks like this to redis-py: the connection
    # drops, its one retry reconnects and subscribes again, and raises nothing; the new
    # server's notifications are off. Here without a restart: config cleared, link cut.
    stream = scaler.stub.StreamIsActive(ref("m", queueKey="q"), timeout=20)
    assert _next(stream) is False
    channel = "__keyspace@0__:q"
    # The link to cut must exist first: the stream's SUBSCRIBE may follow its first answer,
    # and a cut that finds no link leaves nothing to turn the notifications back on.
    assert _eventually(lambda: dict(redis_client.pubsub_numsub(channel))[channel] >= 1)
    redis_client.config_set("notify-keyspace-events", "")
    redis_client.client_kill_filter(_type="pubsub")
    assert _eventually(
        lambda: "K" in redis_client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    )
    assert _eventually(lambda: dict(redis_client.pubsub_numsub(channel))[channel] >= 1)
    redis_client.rpush("q", "r")
    assert _next(stream) is True  # woken by the event: the timer re-check is 30 s away
    stream.cancel()


def _eventually(condition: Callable[[], bool], attempts: int = 1500) -> bool:
    """Poll a real event no clock can stand in for (a reconnect), bounded in attempts: up to
    15 s, over twice the subscriber's longest reconnect backoff (5 s), for a loaded machine."""
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_explicit_zero_delays_go_inactive_at_the_drain_and_wake_within_100_ms(
    scaler: RunningScaler, redis_client: redis.Redis, clock: FakeClock
) -> None:
    # The SLO-aware hold on, scaleToZeroDelaySeconds and scaleDownDelaySeconds written "0":
    # what is written wins over the hold's derived delay (15 cold starts), so the drain is
    # seen at once by a polling KEDA (metric 0, IsActive false) and by the stream, and the
    # next request is pushed as soon as it is queued.
    so = ref(
        "m",
        queueKey="q",
        sloWaitSeconds="2",
        coldStartSeconds="60",
        scaleToZeroDelaySeconds="0",
        scaleDownDelaySeconds="0",
    )
    redis_client.rpush("q", "r")
    stream = scaler.stub.StreamIsActive(so, timeout=10)
    assert _next(stream) is True
    assert scaler.keda.poll(so).active
    clock.advance(1)
    redis_client.delete("q")  # drained
    drained_at = time.monotonic()
    assert _next(stream) is False  # pushed by the key event
    poll = scaler.keda.poll(so)
    assert (poll.value_float, poll.active) == (0.0, False)
    assert time.monotonic() - drained_at < 2.0
    clock.advance(1)
    queued_at = time.monotonic()
    redis_client.rpush("q", "r2")
    assert _next(stream) is True
    assert time.monotonic() - queued_at < 0.1
    stream.cancel()
