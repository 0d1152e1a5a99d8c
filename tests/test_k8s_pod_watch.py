"""The scaler's pod watch against the Kubernetes API stand-in, a real Redis and real gRPC.

Staleness never gets a chance here: the fake clock stands still, so a report that
stops counting was removed by the watch, not aged out at staleAfterSeconds. The
only waits are bounded waits for the watch thread to see what the stand-in sent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis
from kubernetes import client as k8s

from scaler.local_redis import LocalRedis
from scaler.pod_watch import pod_state
from scaler.reports import report_keys
from scaler.settings import SettingsError, settings_from_env
from tests.harness import (
    NAMESPACE,
    FakeClock,
    ReportPublisher,
    RunningScaler,
    pod_report,
    ref,
    scaler_settings,
)
from tests.k8s_standin import KubeStandIn, pod
from tests.k8s_standin import wait_until as until

TARGET = "llama"
KEYS = report_keys(NAMESPACE, TARGET)
# The metric is then today's demand: what a removed report does shows in one poll.
NOW_ONLY = {"scaleDownDelaySeconds": "0"}


@pytest.fixture
def kube() -> Iterator[KubeStandIn]:
    standin = KubeStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def watching(
    redis_server: LocalRedis, redis_client: redis.Redis, clock: FakeClock, kube: KubeStandIn
) -> Iterator[RunningScaler]:
    running = RunningScaler(
        scaler_settings(redis_server.url, watch_pods=True), clock, kube.configuration()
    )
    yield running
    running.stop()


def reported(client: redis.Redis, pod_name: str) -> bool:
    pipe = client.pipeline(transaction=True)  # one MULTI: both keys as of one moment
    payload, score = pipe.hget(KEYS.reports, pod_name).zscore(KEYS.seen, pod_name).execute()
    in_hash, in_zset = payload is not None, score is not None
    assert in_hash == in_zset, "the contract writes and removes both at once"
    return in_hash


def two_busy_pods(kube: KubeStandIn, publisher: ReportPublisher, clock: FakeClock) -> None:
    for name, load in (("llama-0", 5), ("llama-1", 3)):
        kube.put_pod(pod(name, NAMESPACE))
        publisher.publish(TARGET, pod_report(name, inflight=load), at=clock())


def test_a_deleted_pod_stops_counting_at_once(
    kube: KubeStandIn,
    watching: RunningScaler,
    publisher: ReportPublisher,
    clock: FakeClock,
    redis_client: redis.Redis,
) -> None:
    two_busy_pods(kube, publisher, clock)
    scaled_object = ref(TARGET, **NOW_ONLY)
    assert watching.keda.poll(scaled_object).value_float == 8  # the first call names the namespace
    until(lambda: kube.open_watches(NAMESPACE) == 1)

    kube.delete_pod(NAMESPACE, "llama-1")
    until(lambda: not reported(redis_client, "llama-1"))
    assert reported(redis_client, "llama-0")
    poll = watching.keda.poll(scaled_object)  # the clock stood still: nothing went stale
    assert (poll.value_float, poll.active) == (5, True)
    assert watching.sample("llm_scaler_stale_reports_dropped_total", namespace=NAMESPACE,
                           scaled_object=TARGET) == 0  # fmt: skip


def test_the_first_list_removes_reports_of_pods_that_are_gone_and_keeps_newer_ones(
    kube: KubeStandIn,
    watching: RunningScaler,
    publisher: ReportPublisher,
    clock: FakeClock,
    redis_client: redis.Redis,
) -> None:
    kube.put_pod(pod("llama-0", NAMESPACE))
    publisher.publish(TARGET, pod_report("llama-0", inflight=2), at=clock())
    # Deleted before the scaler watched: only the list can tell.
    publisher.publish(TARGET, pod_report("llama-ghost", inflight=6), at=clock())
    # Stamped after the list was asked for: a pod created since may have written it.
    redis_now = float(redis_client.time()[0])
    publisher.publish(TARGET, pod_report("llama-new", inflight=1), at=redis_now + 3600)
    # Evicted: the object stays, its containers are gone.
    kube.put_pod(pod("llama-evicted", NAMESPACE, ready=False, phase="Failed"))
    publisher.publish(TARGET, pod_report("llama-evicted", inflight=4), at=clock())

    watching.keda.poll(ref(TARGET, **NOW_ONLY))
    until(lambda: not reported(redis_client, "llama-ghost"))
    until(lambda: not reported(redis_client, "llama-evicted"))
    assert reported(redis_client, "llama-0") and reported(redis_client, "llama-new")


def test_a_pod_of_another_target_is_removed_from_its_own_target(
    kube: KubeStandIn,
    watching: RunningScaler,
    publisher: ReportPublisher,
    clock: FakeClock,
    redis_client: redis.Redis,
) -> None:
    kube.put_pod(pod("mistral-0", NAMESPACE))
    publisher.publish("mistral", pod_report("mistral-0", inflight=2), at=clock())
    watching.keda.poll(ref(TARGET, **NOW_ONLY))
    watching.keda.poll(ref("mistral-so", targetName="mistral", **NOW_ONLY))
    until(lambda: kube.open_watches(NAMESPACE) == 1)  # one watch per namespace
    kube.delete_pod(NAMESPACE, "mistral-0")
    until(lambda: redis_client.hget(report_keys(NAMESPACE, "mistral").reports, "mistral-0") is None)


def test_cold_start_is_observed_once_per_pod_seen_starting(
    kube: KubeStandIn,
    watching: RunningScaler,
    publisher: ReportPublisher,
    clock: FakeClock,
    redis_client: redis.Redis,
) -> None:
    start = 1_780_000_000.0
    starting = pod("llama-0", NAMESPACE, ready=False, phase="Pending", started_at=start, uid="u0")
    kube.put_pod(starting)
    publisher.publish(TARGET, pod_report("llama-0", ready=False), at=clock())
    # Ready when first listed: its start was not seen, so it is not counted.
    kube.put_pod(pod("llama-1", NAMESPACE, started_at=start - 900, ready_at=start - 800))
    publisher.publish(TARGET, pod_report("llama-1"), at=clock())
    # Another workload in the namespace: it reports under no served target.
    kube.put_pod(pod("redis-0", NAMESPACE, ready=False, uid="r0"))
    watching.keda.poll(ref(TARGET, **NOW_ONLY))
    until(lambda: kube.open_watches(NAMESPACE) == 1)

    kube.put_pod(pod("redis-0", NAMESPACE, uid="r0", started_at=start, ready_at=start + 5))
    kube.put_pod(pod("llama-0", NAMESPACE, started_at=start, ready_at=start + 42.0, uid="u0"))
    labels = {"namespace": NAMESPACE, "target": TARGET}
    until(lambda: watching.sample("llm_scaler_cold_start_seconds_count", **labels) == 1)
    assert watching.sample("llm_scaler_cold_start_seconds_sum", **labels) == 42.0
    assert watching.sample("llm_scaler_cold_start_seconds_bucket", le="45.0", **labels) == 1
    assert watching.sample("llm_scaler_cold_start_seconds_bucket", le="30.0", **labels) == 0

    # A readiness flap is not a second cold start.
    kube.put_pod(pod("llama-0", NAMESPACE, ready=False, started_at=start, uid="u0"))
    kube.put_pod(pod("llama-0", NAMESPACE, started_at=start, ready_at=start + 900, uid="u0"))
    kube.delete_pod(NAMESPACE, "llama-1")  # a marker: once handled, so were the events before
    until(lambda: not reported(redis_client, "llama-1"))
    assert watching.sample("llm_scaler_cold_start_seconds_count", **labels) == 1


def test_a_dropped_watch_reconnects_and_catches_up(
    kube: KubeStandIn,
    watching: RunningScaler,
    publisher: ReportPublisher,
    clock: FakeClock,
    redis_client: redis.Redis,
) -> None:
    two_busy_pods(kube, publisher, clock)
    watching.keda.poll(ref(TARGET, **NOW_ONLY))
    until(lambda: kube.open_watches(NAMESPACE) == 1)

    kube.drop_watches()
    kube.delete_pod(NAMESPACE, "llama-1")  # while no watch may be open
    until(lambda: not reported(redis_client, "llama-1"))
    until(lambda: kube.open_watches(NAMESPACE) == 1 and kube.watches_opened[NAMESPACE] >= 2)
    assert watching.sample("llm_scaler_pod_watch_errors_total", kind="watch") >= 1
    kube.delete_pod(NAMESPACE, "llama-0")  # and the new watch carries on
    until(lambda: not reported(redis_client, "llama-0"))
    assert watching.keda.poll(ref(TARGET, **NOW_ONLY)).value_float == 0


def test_an_ended_watch_resumes_and_an_expired_one_lists_again(
    kube: KubeStandIn,
    watching: RunningScaler,
    publisher: ReportPublisher,
    clock: FakeClock,
    redis_client: redis.Redis,
) -> None:
    two_busy_pods(kube, publisher, clock)
    watching.keda.poll(ref(TARGET, **NOW_ONLY))
    until(lambda: kube.open_watches(NAMESPACE) == 1)

    def lists() -> int:
        return sum(1 for m, p in kube.requests if m == "GET" and p.endswith("/pods"))

    kube.end_watches()  # the server's timeout: resumed from the last version, no list
    until(lambda: kube.watches_opened[NAMESPACE] == 2)
    assert lists() == 1
    kube.put_pod(pod("elsewhere-0", "other"))  # versions move on; the watched namespace's don't
    kube.compact()
    kube.end_watches()  # resuming now gets 410 Gone: listed again
    until(lambda: lists() == 2 and kube.open_watches(NAMESPACE) == 1)
    kube.delete_pod(NAMESPACE, "llama-1")
    until(lambda: not reported(redis_client, "llama-1"))
    assert watching.sample("llm_scaler_pod_watch_errors_total", kind="watch") == 0


def test_api_down_the_scaler_keeps_answering_and_catches_up_when_back(
    kube: KubeStandIn,
    watching: RunningScaler,
    publisher: ReportPublisher,
    clock: FakeClock,
    redis_client: redis.Redis,
) -> None:
    two_busy_pods(kube, publisher, clock)
    scaled_object = ref(TARGET, **NOW_ONLY)
    watching.keda.poll(scaled_object)
    until(lambda: kube.open_watches(NAMESPACE) == 1)

    kube.set_down(True)
    kube.delete_pod(NAMESPACE, "llama-1")
    until(lambda: watching.sample("llm_scaler_pod_watch_errors_total", kind="list") >= 1)
    assert watching.keda.poll(scaled_object).value_float == 8  # as without a watch
    kube.set_down(False)
    until(lambda: not reported(redis_client, "llama-1"))
    assert watching.keda.poll(scaled_object).value_float == 5


def test_api_unreachable_from_the_start_the_scaler_keeps_answering(
    redis_server: LocalRedis, clock: FakeClock, publisher: ReportPublisher
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nowhere = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    running = RunningScaler(scaler_settings(redis_server.url, watch_pods=True), clock, nowhere)
    try:
        publisher.publish(TARGET, pod_report("llama-0", inflight=3), at=clock())
        assert running.keda.poll(ref(TARGET, **NOW_ONLY)).value_float == 3
        until(lambda: running.sample("llm_scaler_pod_watch_errors_total", kind="list") >= 2)
        poll = running.keda.poll(ref(TARGET, **NOW_ONLY))
        assert (poll.value_float, poll.active) == (3, True)
    finally:
        running.stop()  # and it stops cleanly while retrying


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, True),
        ({"WATCH_PODS": "off", "KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False),
        ({"WATCH_PODS": "on"}, True),
        ({"WATCH_PODS": " Auto "}, False),
    ],
    ids=["auto-outside", "auto-in-cluster", "off-in-cluster", "on-outside", "auto-spelling"],
)
def test_watch_pods_setting(env: dict[str, str], on: bool) -> None:
    assert settings_from_env(env).watch_pods is on


def test_watch_pods_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"WATCH_PODS = 'yes', must be one of"):
        settings_from_env({"WATCH_PODS": "yes"})


@pytest.mark.parametrize(
    ("obj", "deleted", "expected"),
    [
        (pod("a", "ns", started_at=0, ready_at=65), False, (False, True, 65.0)),
        (pod("a", "ns", ready=False, phase="Pending"), False, (False, False, None)),
        (pod("a", "ns", ready=False, phase="Failed"), False, (True, False, None)),
        (pod("a", "ns", ready=False, phase="Succeeded"), False, (True, False, None)),
        (pod("a", "ns"), True, (True, True, 60.0)),
        ({"metadata": {"name": "a", "uid": "u"}, "status": {"phase": "Pending"}}, False,
         (False, False, None)),
    ],
    ids=["ready", "starting", "evicted", "completed", "deleted", "no-status-yet"],
)  # fmt: skip
def test_pod_state_from_pod_json(
    obj: dict[str, object], deleted: bool, expected: tuple[bool, bool, float | None]
) -> None:
    state = pod_state(obj, deleted)
    assert (state.gone, state.ready, state.cold_start_s) == expected
