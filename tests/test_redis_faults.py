"""Redis down, slow or restarted: errors KEDA's fallback can act on, never zero demand."""

from __future__ import annotations

import grpc
import pytest
import redis

from scaler.local_redis import LocalRedis, free_port
from scaler.service import target_config_of
from scaler.state_codec import policy_key
from tests.harness import (
    FakeClock,
    ReportPublisher,
    RunningScaler,
    pod_report,
    ref,
    scaler_settings,
)


def _status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    code: grpc.StatusCode = err.value.code()
    return code


def test_redis_killed_answers_unavailable_then_recovers_by_itself(
    scaler: RunningScaler, redis_server: LocalRedis, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("p", inflight=6), at=clock())
    so = ref("m")
    assert scaler.keda.poll(so).value_float == 6

    redis_server.kill()
    try:
        # Within KEDA's ~3 s budget, and an error rather than a hang or a zero.
        assert _status_of(lambda: scaler.keda.poll(so)) is grpc.StatusCode.UNAVAILABLE
        assert (
            _status_of(lambda: scaler.stub.IsActive(so, timeout=3)) is grpc.StatusCode.UNAVAILABLE
        )
        assert scaler.stub.GetMetricSpec(so, timeout=3).metricSpecs[0].targetSizeFloat == 6.4
    finally:
        redis_server.start()

    # The restarted Redis is empty (this one keeps nothing on disk): the sidecars' next
    # reports bring the load back, and what the window held comes back from the
    # replica's memory instead of being forgotten.
    fresh = redis.Redis.from_url(redis_server.url)
    ReportPublisher(fresh).publish("m", pod_report("p", inflight=4), at=clock())
    assert scaler.keda.poll(so).value_float == 6
    assert fresh.exists(policy_key(target_config_of(so)))  # written back for every replica
    fresh.close()


def test_a_replica_that_never_saw_the_lost_state_gets_it_back_from_one_that_did(
    scaler: RunningScaler, redis_server: LocalRedis, redis_client: redis.Redis, clock: FakeClock
) -> None:
    so = ref("m", queueKey="q")
    redis_client.rpush("q", *range(30))
    assert scaler.keda.poll(so).value_float == 30
    redis_server.kill()
    redis_server.start()
    other = RunningScaler(scaler_settings(redis_server.url), clock)
    try:
        assert other.keda.poll(so).value_float == 0  # nothing in Redis, nothing remembered
        assert scaler.keda.poll(so).value_float == 30  # refilled from memory...
        assert other.keda.poll(so).value_float == 30  # ...for every replica
    finally:
        other.stop()


def test_metric_spec_does_not_need_redis(scaler: RunningScaler, redis_server: LocalRedis) -> None:
    redis_server.kill()
    try:
        spec = scaler.stub.GetMetricSpec(ref("llama"), timeout=3)
        assert spec.metricSpecs[0].targetSizeFloat == 6.4
    finally:
        redis_server.start()


def test_slow_redis_answers_unavailable_within_the_deadline_instead_of_piling_up(
    scaler: RunningScaler, redis_server: LocalRedis
) -> None:
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # every command waits 1.5 s
        code = _status_of(lambda: scaler.stub.IsActive(ref("m"), timeout=1.2))
        admin.ping()  # returns when the pause is over
    assert code is grpc.StatusCode.UNAVAILABLE  # our 0.5 s Redis timeout, not the caller's deadline
    assert scaler.keda.poll(ref("m")).active is False


def test_errors_are_counted_in_metrics(scaler: RunningScaler, redis_server: LocalRedis) -> None:
    redis_server.kill()
    try:
        _status_of(lambda: scaler.stub.IsActive(ref("m"), timeout=3))
    finally:
        redis_server.start()
    from tests.test_queues_and_reports import _sample

    assert _sample(scaler, "llm_scaler_redis_errors_total", kind="unavailable") >= 1
    assert (
        _sample(scaler, "llm_scaler_rpc_requests_total", method="IsActive", code="UNAVAILABLE") == 1
    )


@pytest.mark.parametrize("scheme", ["redis+sentinel", "redis+cluster"])
def test_a_sentinel_or_cluster_url_nobody_answers_is_unavailable_not_a_crash(
    scheme: str, clock: FakeClock
) -> None:
    nobody = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    url = f"{scheme}://{nobody}/mymaster" if scheme == "redis+sentinel" else f"{scheme}://{nobody}"
    running = RunningScaler(scaler_settings(url), clock)
    try:
        for _ in range(2):  # and again: the health ping's failures did not end the process
            assert _status_of(lambda: running.keda.poll(ref("m"))) is grpc.StatusCode.UNAVAILABLE
        assert running.server.key_events.enabled is False
    finally:
        running.stop()  # raises what ended the server, if anything did
