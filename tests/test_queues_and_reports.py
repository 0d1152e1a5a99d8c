"""Queue depth for every queueType (on one Redis, Sentinel and Cluster), and how pod reports are
judged: fresh, stale, broken."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
import redis

from gateway.contract import ENQUEUE_LUA, request_stream, request_streams
from scaler.reports import report_keys
from scaler.service_record import Served
from tests.conftest import EVERY_DEPLOYMENT
from tests.harness import NAMESPACE, FakeClock, ReportPublisher, RunningScaler, pod_report, ref

# On a Cluster these queues sit in other slots than their targets: measured apart.
every_deployment = pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)


@every_deployment
def test_list_queue_depth_is_its_length(scaler: RunningScaler, redis_client: redis.Redis) -> None:
    redis_client.rpush("q", *range(7))
    assert scaler.keda.poll(ref("m", queueKey="q", queueType="list")).value_float == 7


@every_deployment
def test_zset_queue_depth_is_its_cardinality(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    redis_client.zadd("pq", {f"req-{i}": i for i in range(5)})
    assert scaler.keda.poll(ref("m", queueKey="pq", queueType="zset")).value_float == 5


@every_deployment
def test_stream_queue_depth_is_group_lag_plus_pending(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    for i in range(10):
        redis_client.xadd("s", {"req": i})
    redis_client.xgroup_create("s", "workers", id="0")
    delivered = redis_client.xreadgroup("workers", "pod-0", {"s": ">"}, count=4)
    first_id = delivered[0][1][0][0]
    redis_client.xack("s", "workers", first_id)  # 1 done, 3 pending, 6 never delivered

    poll = scaler.keda.poll(ref("m", queueKey="s", queueType="stream", consumerGroup="workers"))

    assert poll.value_float == 9


@every_deployment
def test_stream_not_created_yet_is_an_empty_queue(scaler: RunningScaler) -> None:
    so = ref("m", queueKey="nothing-yet", queueType="stream", consumerGroup="workers")
    assert scaler.keda.poll(so).value_float == 0


@every_deployment
def test_missing_consumer_group_is_a_clear_error_not_zero(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    redis_client.xadd("s", {"req": 1})
    so = ref("m", queueKey="s", queueType="stream", consumerGroup="workers")
    with pytest.raises(grpc.RpcError) as err:
        scaler.keda.poll(so)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "consumer group workers" in err.value.details()


@every_deployment
@pytest.mark.parametrize("queue_type", ["list", "zset", "gateway"])
def test_queue_key_of_the_wrong_type_is_a_clear_error_not_zero(
    scaler: RunningScaler, redis_client: redis.Redis, queue_type: str
) -> None:
    redis_client.set("q", "a string")
    with pytest.raises(grpc.RpcError) as err:
        scaler.keda.poll(ref("m", queueKey="q", queueType=queue_type))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "queueKey = 'q'" in err.value.details()
    assert "holds a string" in err.value.details()


@every_deployment
def test_several_queue_keys_add_up(scaler: RunningScaler, redis_client: redis.Redis) -> None:
    redis_client.rpush("q-high", *range(3))
    redis_client.rpush("q-low", *range(4))
    assert scaler.keda.poll(ref("m", queueKey="q-high, q-low")).value_float == 7


@every_deployment
def test_one_unmeasurable_queue_of_several_is_an_error_not_its_share_of_zero(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    redis_client.rpush("q-ok", *range(3))
    redis_client.set("q-broken", "a string")
    with pytest.raises(grpc.RpcError) as err:
        scaler.keda.poll(ref("m", queueKey="q-ok,q-broken"))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "holds a string" in err.value.details()


def _enqueue(client: redis.Redis, target: str, priority: str, count: int) -> None:
    """As the gateway does (gateway.contract.ENQUEUE_LUA), which also creates the group."""
    enqueue = client.register_script(ENQUEUE_LUA)
    keys = [*request_streams(NAMESPACE, target), request_stream(NAMESPACE, target, priority)]
    for i in range(count):
        assert enqueue(keys=keys, args=[1000, 60_000, "id", f"{priority}-{i}"])[0] == "ok"


@every_deployment
def test_gateway_queue_depth_is_every_priority_not_yet_taken(
    scaler: RunningScaler, redis_client: redis.Redis
) -> None:
    """Taken requests are in the worker's exact in-flight (its pod's report): counting them in
    the queue as well would count them twice."""
    _enqueue(redis_client, "m", "high", 2)
    _enqueue(redis_client, "m", "normal", 5)
    _enqueue(redis_client, "m", "low", 1)
    normal = request_stream(NAMESPACE, "m", "normal")
    taken = redis_client.xreadgroup("workers", "pod-0", {normal: ">"}, count=3)
    done = taken[0][1][0][0]
    redis_client.xack(normal, "workers", done)
    redis_client.xdel(normal, done)  # answered: 2 still taken, 2 + 2 + 1 waiting

    assert scaler.keda.poll(ref("m", queueType="gateway")).value_float == 5


def test_gateway_queue_before_any_request_is_empty(scaler: RunningScaler) -> None:
    poll = scaler.keda.poll(ref("m", queueType="gateway"))
    assert (poll.value_float, poll.active) == (0, False)


def test_reports_older_than_stale_after_are_dropped_and_removed(
    scaler: RunningScaler, publisher: ReportPublisher, redis_client: redis.Redis, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("old", inflight=5), at=clock() - 11)
    publisher.publish("m", pod_report("edge", inflight=3), at=clock() - 10)
    publisher.publish("m", pod_report("new", inflight=2), at=clock() - 1)

    assert scaler.keda.poll(ref("m", staleAfterSeconds="10")).value_float == 5

    keys = report_keys(NAMESPACE, "m")
    assert sorted(redis_client.hkeys(keys.reports)) == ["edge", "new"]
    assert sorted(redis_client.zrange(keys.seen, 0, -1)) == ["edge", "new"]
    assert _sample(scaler, "llm_scaler_stale_reports_dropped_total", scaled_object="m") == 1


def test_a_report_ages_out_as_the_clock_moves(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("p", inflight=4), at=clock())
    so = ref("m", staleAfterSeconds="5", scaleDownDelaySeconds="0")
    assert scaler.keda.poll(so).value_float == 4
    clock.advance(5.5)
    assert scaler.keda.poll(so).value_float == 0


def test_a_report_going_stale_does_not_lower_the_metric_within_the_delay(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("p", inflight=4), at=clock())
    so = ref("m", staleAfterSeconds="5", scaleDownDelaySeconds="60")
    assert scaler.keda.poll(so).value_float == 4
    clock.advance(30)  # the sidecar died: its report is stale, the demand it showed is held
    poll = scaler.keda.poll(so)
    assert (poll.value_float, poll.active) == (4, True)
    clock.advance(32)
    assert scaler.keda.poll(so).value_float == 0


def test_latest_report_of_a_pod_replaces_the_previous_one(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("p", inflight=4, seq=1), at=clock() - 2)
    publisher.publish("m", pod_report("p", inflight=1, seq=2), at=clock() - 1)
    poll = scaler.keda.poll(ref("m"))
    assert poll.value_float == 1


def test_starting_pods_count_their_load_but_not_as_ready(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("ready", inflight=3), at=clock())
    publisher.publish("m", pod_report("starting", waiting=2, ready=False), at=clock())
    assert scaler.keda.poll(ref("m")).value_float == 5
    assert _sample(scaler, "llm_scaler_pods_ready", scaled_object="m") == 1
    assert _sample(scaler, "llm_scaler_pods_reported", scaled_object="m") == 2


def test_a_broken_report_is_ignored_while_others_are_valid(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("good", inflight=3), at=clock())
    publisher.publish_raw("m", "bad", '{"pod": "bad", "inflight": -1}', at=clock())
    assert scaler.keda.poll(ref("m")).value_float == 3
    assert _sample(scaler, "llm_scaler_invalid_reports", scaled_object="m") == 1


def test_only_broken_reports_is_missing_data_not_zero(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish_raw("m", "bad", "not json", at=clock())
    with pytest.raises(grpc.RpcError) as err:
        scaler.keda.poll(ref("m"))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "break the contract" in err.value.details()


def test_report_filed_under_another_pods_name_is_ignored(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    publisher.publish("m", pod_report("a", inflight=1), at=clock())
    publisher.publish_raw("m", "b", pod_report("a", inflight=9).to_json(), at=clock())
    assert scaler.keda.poll(ref("m")).value_float == 1


def _sample(scaler: RunningScaler, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(scaler.metrics_url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels} in /metrics")


@every_deployment
def test_the_service_time_the_pods_taught_sizes_the_backlog(
    scaler: RunningScaler, publisher: ReportPublisher, redis_client: redis.Redis, clock: FakeClock
) -> None:
    """One full ready pod with 40 requests waiting: the need is the 8 in flight plus the
    backlog's 40 x s / 60 s, s the longer of serviceSeconds' default (5: the key is absent)
    and what the pods taught; written, serviceSeconds would be obeyed as written."""
    taught = {"slow": Served(100, 1000.0), "fast": Served(100, 200.0), "untaught": None}
    for target, served in taught.items():
        report = pod_report("p", inflight=8, waiting=40)
        publisher.publish(target, report, at=clock(), served=served)
    redis_client.hset(report_keys(NAMESPACE, "garbled").service, "completed", "many")
    publisher.publish("garbled", pod_report("p", inflight=8, waiting=40), at=clock())

    def metric(target: str) -> float:
        so = ref(target, coldStartSeconds="60")
        return scaler.keda.poll(so).value_float

    assert metric("slow") == pytest.approx(8 + 40 * 10 / 60, abs=0.01)
    assert _sample(scaler, "llm_scaler_service_seconds", scaled_object="slow") == 10
    for target in ("fast", "untaught", "garbled"):
        assert metric(target) == pytest.approx(8 + 40 * 5 / 60, abs=0.01), target
        assert _sample(scaler, "llm_scaler_service_seconds", scaled_object=target) == 5
