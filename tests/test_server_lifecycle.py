"""Streams, health, reflection, /metrics and graceful shutdown of the real server."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler.local_redis import LocalRedis
from tests.harness import RunningScaler, ref

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _next(stream: Iterator[pb.IsActiveResponse]) -> bool:
    return next(stream).result


def test_reflection_lists_the_services(scaler: RunningScaler) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(scaler.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(stub.ServerReflectionInfo(iter([request]), timeout=3))
    names = {s.name for s in response.list_services_response.service}
    assert {"externalscaler.ExternalScaler", "grpc.health.v1.Health"} <= names


def test_reflection_describes_the_keda_wire_contract(scaler: RunningScaler) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(scaler.channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="externalscaler.ExternalScaler"
    )
    response = next(stub.ServerReflectionInfo(iter([request]), timeout=3))
    from google.protobuf import descriptor_pb2

    file = descriptor_pb2.FileDescriptorProto.FromString(
        response.file_descriptor_response.file_descriptor_proto[0]
    )
    assert file.package == "externalscaler"
    methods = {m.name for m in file.service[0].method}
    assert methods == {
        "IsActive",
        "StreamIsActive",
        "GetMetricSpec",
        "GetMetrics",
        "StreamMetricSpec",
    }
    fields = {
        (f.name, f.number) for m in file.message_type if m.name == "MetricValue" for f in m.field
    }
    assert fields == {("metricName", 1), ("metricValue", 2), ("metricValueFloat", 3)}


def test_readiness_follows_redis_and_liveness_does_not(
    scaler: RunningScaler, redis_server: LocalRedis
) -> None:
    health = health_pb2_grpc.HealthStub(scaler.channel)
    watch = health.Watch(
        health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler"), timeout=10
    )
    assert _until(watch, SERVING)
    redis_server.kill()
    try:
        assert _until(watch, NOT_SERVING)
        overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        assert overall.status == SERVING
    finally:
        redis_server.start()
    assert _until(watch, SERVING)
    watch.cancel()


def _until_true(condition: Callable[[], bool], attempts: int = 500) -> bool:
    """Wait for a real event no clock can stand in for, bounded by `attempts`."""
    return any(condition() for _ in range(attempts))


def _until(watch: Iterator[health_pb2.HealthCheckResponse], status: int) -> bool:
    return any(update.status == status for update in watch)


def test_stream_is_active_sends_the_state_at_once_then_each_change(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    so = ref("m", queueKey="q", scaleToZeroDelaySeconds="0")
    stream = scaler.stub.StreamIsActive(so, timeout=10)
    assert _next(stream) is False
    redis_client.rpush("q", "first request")
    assert _next(stream) is True
    redis_client.delete("q")
    assert _next(stream) is False
    stream.cancel()


def test_stream_metric_spec_sends_the_spec_and_ends_cleanly_on_shutdown(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    from tests.harness import scaler_settings

    running = RunningScaler(scaler_settings(redis_server.url), None)
    so = ref("m", targetConcurrency="6", targetUtilization="1")
    specs = running.stub.StreamMetricSpec(so, timeout=10)
    active = running.stub.StreamIsActive(ref("m"), timeout=10)
    assert next(specs).metricSpecs[0].targetSizeFloat == 6
    assert _next(active) is False

    running.stop_server()

    assert list(specs) == []  # ended with OK, not an error
    assert list(active) == []
    assert specs.code() is grpc.StatusCode.OK
    assert active.code() is grpc.StatusCode.OK
    running.stop()


def test_a_call_in_flight_at_shutdown_is_answered(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    from tests.harness import scaler_settings

    running = RunningScaler(scaler_settings(redis_server.url, redis_timeout_s=3.0), None)
    redis_client.rpush("q", 1, 2, 3)
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    # Our read script may write (it drops stale reports), so a WRITE pause holds it.
    admin.execute_command("CLIENT", "PAUSE", "500", "WRITE")
    answer = running.stub.GetMetrics.future(
        pb.GetMetricsRequest(scaledObjectRef=ref("m", queueKey="q")), timeout=10
    )
    assert _until_true(lambda: any(c["cmd"] == "evalsha" for c in admin.client_list()))
    stopper = threading.Thread(target=running.stop_server)
    stopper.start()
    assert answer.result().metricValues[0].metricValueFloat == 3
    stopper.join()
    running.stop()
    admin.close()


def test_metrics_endpoint_exports_targets_and_rpcs(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    redis_client.rpush("q", 1, 2)
    scaler.keda.poll(ref("llama", queueKey="q"))
    text = urllib.request.urlopen(scaler.metrics_url, timeout=5).read().decode()
    for line in (
        'llm_scaler_demand_requests{namespace="inference",scaled_object="llama"} 2.0',
        'llm_scaler_queue_depth_requests{namespace="inference",scaled_object="llama"} 2.0',
        'llm_scaler_active{namespace="inference",scaled_object="llama"} 1.0',
        'llm_scaler_rpc_requests_total{code="OK",method="GetMetrics"} 1.0',
        # One decision answers the poll's GetMetrics and the IsActive after it.
        'llm_scaler_decisions_total{reason="following"} 1.0',
    ):
        assert line in text
    assert 'llm_scaler_rpc_duration_seconds_count{method="IsActive"} 1.0' in text


def test_metrics_endpoint_answers_only_get_metrics(scaler: RunningScaler) -> None:
    base = scaler.metrics_url.removesuffix("/metrics")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/nothing", timeout=5)
    assert err.value.code == 404
    post = urllib.request.Request(scaler.metrics_url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(post, timeout=5)
    assert err.value.code == 405
