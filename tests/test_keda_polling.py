"""The scaler as KEDA sees it: every poll is GetMetricSpec, GetMetrics, IsActive over real gRPC.

Every case runs against one Redis, a Sentinel deployment and a Redis Cluster."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import redis

from scaler import service
from scaler._generated import externalscaler_pb2 as pb
from tests.conftest import EVERY_DEPLOYMENT
from tests.harness import FakeClock, ReportPublisher, RunningScaler, pod_report, ref

pytestmark = pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)


def test_metric_spec_names_one_metric_with_the_per_replica_target(scaler: RunningScaler) -> None:
    spec = scaler.stub.GetMetricSpec(
        ref("llama-70b", targetConcurrency="8.5", targetUtilization="1")
    )
    assert len(spec.metricSpecs) == 1
    assert spec.metricSpecs[0].metricName == "llm-concurrency-llama-70b"
    assert spec.metricSpecs[0].targetSizeFloat == 8.5
    assert spec.metricSpecs[0].targetSize == 9  # int field rounded up, consistent with float


@pytest.mark.parametrize(
    ("concurrency", "utilization", "target"),
    [("8", None, 6.4), ("6", "0.8", 4.8), ("10", "0.5", 5.0), ("3", "1", 3.0)],
    ids=["default-headroom", "no-float-noise", "half", "no-headroom"],
)
def test_metric_spec_target_leaves_the_utilization_headroom(
    scaler: RunningScaler, concurrency: str, utilization: str | None, target: float
) -> None:
    metadata = {"targetConcurrency": concurrency}
    if utilization is not None:
        metadata["targetUtilization"] = utilization
    spec = scaler.stub.GetMetricSpec(ref("llama", **metadata)).metricSpecs[0]
    assert spec.targetSizeFloat == target


def test_is_active_after_get_metrics_answers_from_the_same_decision_once(
    scaler: RunningScaler, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "POLL_PAIR_S", 30.0)  # a slow machine is not the point here
    so = ref("llama", queueKey="q", scaleToZeroDelaySeconds="0")
    redis_client.rpush("q", 1, 2)
    metrics = scaler.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=so))
    assert metrics.metricValues[0].metricValueFloat == 2
    redis_client.delete("q")  # demand gone between the two calls of one poll
    # KEDA's IsActive right after: GetMetrics's decision, consistent with its value...
    assert scaler.stub.IsActive(so).result is True
    # ...once: the next IsActive reads and decides again.
    assert scaler.stub.IsActive(so).result is False


def test_idle_get_metrics_is_not_reused_a_request_queued_after_it_wakes_at_once(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    so = ref("llama", queueKey="q")
    metrics = scaler.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=so))
    assert metrics.metricValues[0].metricValueFloat == 0
    redis_client.rpush("q", 1)
    assert scaler.stub.IsActive(so).result is True


def test_demand_is_pods_inflight_plus_waiting_plus_queue(
    scaler: RunningScaler,
    publisher: ReportPublisher,
    redis_client,
    clock: FakeClock,  # type: ignore[no-untyped-def]
) -> None:
    publisher.publish("llama", pod_report("llama-0", inflight=5, waiting=2), at=clock())
    publisher.publish("llama", pod_report("llama-1", inflight=7), at=clock())
    redis_client.rpush("queue:llama", *range(12))

    poll = scaler.keda.poll(ref("llama", queueKey="queue:llama"))

    assert poll.value_float == 26.0
    assert poll.value == 26
    assert poll.active is True


def test_fractional_demand_rounds_the_int_field_up(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("llama", pod_report("llama-0", inflight=2.5), at=clock())
    poll = scaler.keda.poll(ref("llama"))
    assert (poll.value_float, poll.value) == (2.5, 3)


def test_no_demand_is_inactive_and_zero(scaler: RunningScaler) -> None:
    poll = scaler.keda.poll(ref("llama", queueKey="queue:empty"))
    assert (poll.value_float, poll.value, poll.active) == (0.0, 0, False)


@pytest.mark.parametrize(
    ("threshold", "queued", "active"),
    [("0", 0, False), ("0", 1, True), ("5", 5, False), ("5", 6, True), ("2.5", 3, True)],
    ids=["zero-empty", "zero-one", "at-threshold", "above-threshold", "fractional-threshold"],
)
def test_activation_threshold_decides_is_active_but_not_the_metric(
    scaler: RunningScaler,
    redis_client,
    threshold: str,
    queued: int,
    active: bool,  # type: ignore[no-untyped-def]
) -> None:
    if queued:
        redis_client.rpush("q", *range(queued))
    poll = scaler.keda.poll(ref("llama", queueKey="q", activationThreshold=threshold))
    assert poll.active is active
    assert poll.value_float == queued


def test_metric_name_with_keda_index_prefix_or_bare_is_accepted(scaler: RunningScaler) -> None:
    for name in ("llm-concurrency-llama", "s3-llm-concurrency-llama", ""):
        request = pb.GetMetricsRequest(scaledObjectRef=ref("llama"), metricName=name)
        assert len(scaler.stub.GetMetrics(request).metricValues) == 1


def test_metric_name_of_another_scaled_object_is_refused(scaler: RunningScaler) -> None:
    request = pb.GetMetricsRequest(
        scaledObjectRef=ref("llama"), metricName="s0-llm-concurrency-mistral"
    )
    with pytest.raises(grpc.RpcError) as err:
        scaler.stub.GetMetrics(request)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "metricName" in err.value.details()


def test_target_name_lets_the_scaled_object_read_reports_under_another_name(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("triton-llama", pod_report("p0", inflight=4), at=clock())
    assert scaler.keda.poll(ref("llama-so")).value_float == 0
    assert scaler.keda.poll(ref("llama-so", targetName="triton-llama")).value_float == 4


def test_targets_in_other_namespaces_are_separate(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("llama", pod_report("p0", inflight=4), at=clock(), namespace="team-a")
    assert scaler.keda.poll(ref("llama", namespace="team-a")).value_float == 4
    assert scaler.keda.poll(ref("llama", namespace="team-b")).value_float == 0


def test_many_scaled_objects_polled_at_once_each_get_their_own_answer(
    scaler: RunningScaler,
    publisher: ReportPublisher,
    redis_client,
    clock: FakeClock,  # type: ignore[no-untyped-def]
) -> None:
    targets = [f"model-{i}" for i in range(60)]
    for i, target in enumerate(targets):
        for pod in range(i % 4):
            publisher.publish(target, pod_report(f"{target}-{pod}", inflight=i), at=clock())
        if i % 3:
            redis_client.rpush(f"q:{target}", *range(i))

    def expected(i: int) -> float:
        return i * (i % 4) + (i if i % 3 else 0)

    with ThreadPoolExecutor(max_workers=16) as pool:
        polls = list(pool.map(lambda t: scaler.keda.poll(ref(t, queueKey=f"q:{t}")), targets))

    assert [p.value_float for p in polls] == [expected(i) for i in range(len(targets))]
    assert [p.active for p in polls] == [expected(i) > 0 for i in range(len(targets))]
    assert len({p.metric_name for p in polls}) == len(targets)


def test_keda_own_metadata_keys_are_accepted(scaler: RunningScaler) -> None:
    keda_keys = {"enableTLS": "false", "unsafeSsl": "true", "scalerAddress": "x:9090"}
    assert scaler.keda.poll(ref("llama", **keda_keys)).active is False


def test_an_unknown_metadata_key_is_refused_at_the_first_call_of_a_poll(
    scaler: RunningScaler,
) -> None:
    so = ref("llama", targetConcurency="8")  # a typo: refused where KEDA shows it, not logged
    with pytest.raises(grpc.RpcError) as err:
        scaler.keda.poll(so)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "did you mean 'targetConcurrency'?" in err.value.details()
