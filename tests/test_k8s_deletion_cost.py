"""The sidecar's pod-deletion-cost: the pure cost and rate limit, then end to end with the
reporter against the Triton and Kubernetes API stand-ins and a real Redis.

Time is the reporter's stepped FakeClock; the only waits are for the patch call the
reporter started in its worker thread (`DeletionCost.settled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from scaler.demo.triton_standin import ModelFigures, TritonStandIn, TrtFigures
from scaler.local_redis import LocalRedis
from scaler.redis_connect import connect
from scaler.report_writer import ReportWriter
from scaler.reports import report_keys
from sidecar.config import ConfigError, SidecarConfig, load_config
from sidecar.deletion_cost import (
    ANNOTATION,
    MAX_COST,
    ApiAccess,
    ApiError,
    DeletionCost,
    PatchLimiter,
    PodAnnotation,
    cost_of_load,
    moved_meaningfully,
)
from sidecar.readiness import readiness_probe
from sidecar.reporter import Reporter, TickResult
from sidecar.scrape import MetricsScraper
from sidecar.telemetry import SidecarMetrics
from tests.harness import NAMESPACE, FakeClock
from tests.k8s_standin import KubeStandIn, Patch, pod

POD = "llama-0"
MERGE = "application/merge-patch+json"


@pytest.mark.parametrize(
    ("inflight", "waiting", "cost"),
    [
        (0, 0, 0),
        (0.4, 0, 0),  # Little's-law noise of an idle pod
        (0.5, 0, 1),
        (5.4, 2, 7),
        (7.5, 0, 8),
        (1e12, 0, MAX_COST),
        (math.nan, 0, 0),
    ],
    ids=["idle", "noise", "half", "busy", "half-up", "capped", "nan"],
)
def test_cost_is_the_requests_the_pod_holds(inflight: float, waiting: float, cost: int) -> None:
    assert cost_of_load(inflight, waiting) == cost


@pytest.mark.parametrize(
    ("patched", "cost", "moved"),
    [
        (None, 0, True),  # nothing patched yet this run
        (0, 0, False),
        (0, 1, True),  # idle -> busy
        (3, 0, True),  # busy -> idle
        (1, 2, False),  # under MIN_STEP
        (1, 3, True),
        (8, 10, False),  # 2 < 25% of 10
        (8, 11, True),
        (100, 124, False),
        (100, 75, True),  # 25 >= 25% of 100
    ],
    ids=lambda v: str(v),
)
def test_only_a_meaningful_move_is_patched(patched: int | None, cost: int, moved: bool) -> None:
    assert moved_meaningfully(patched, cost) is moved


def test_rate_limit_with_a_stepped_clock() -> None:
    limiter = PatchLimiter(min_interval_s=10)
    steps = [  # (at, cost, due?, patched when due)
        (0.0, 8, True),
        (1.0, 0, False),  # a real move, but 1 s after the last try
        (9.9, 0, False),
        (10.0, 0, True),  # the interval is over and the move still stands
        (25.0, 1, True),
        (26.0, 9, False),
        (40.0, 2, False),  # back near the patched value: nothing to do
    ]
    for at, cost, due in steps:
        assert limiter.due(cost, at) is due, (at, cost)
        if due:
            limiter.tried(at)
            limiter.patched = cost


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, True),
        ({"DELETION_COST": "off", "KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False),
        ({"DELETION_COST": "ON"}, True),
    ],
    ids=["auto-outside", "auto-in-cluster", "off", "on"],
)
def test_deletion_cost_setting(env: dict[str, str], on: bool) -> None:
    downward = {"POD_NAME": POD, "POD_NAMESPACE": NAMESPACE, "TARGET_NAME": "llama"}
    assert load_config([], {**downward, **env}).deletion_cost is on
    flag = load_config(["--deletion-cost", "off"], {**downward, **env, "DELETION_COST": "on"})
    assert flag.deletion_cost is False


def test_deletion_cost_bad_value_names_flag_and_variable() -> None:
    downward = {"POD_NAME": POD, "POD_NAMESPACE": NAMESPACE, "TARGET_NAME": "llama"}
    with pytest.raises(ConfigError, match=r"--deletion-cost \(env DELETION_COST\) = 'yes'"):
        load_config([], {**downward, "DELETION_COST": "yes"})


# End to end.


@pytest.fixture
def triton() -> Iterator[TritonStandIn]:
    standin = TritonStandIn().start()
    standin.set_ready(models=("tensorrt_llm",))
    yield standin
    standin.stop()


@pytest.fixture
def kube() -> Iterator[KubeStandIn]:
    standin = KubeStandIn().start()
    yield standin
    standin.stop()


def load(active: float, pending: float = 0) -> dict[str, ModelFigures]:
    return {"tensorrt_llm": ModelFigures(pending=pending, trt=TrtFigures(active=active, max=8))}


@dataclass
class Sidecar:
    reporter: Reporter
    cost: DeletionCost
    clock: FakeClock
    registry: CollectorRegistry

    async def tick(self, triton: TritonStandIn, active: float, after_s: float = 1.0) -> None:
        triton.set_models(load(active))
        self.clock.advance(after_s)
        assert await self.reporter.tick() in (TickResult.WROTE, TickResult.UNCHANGED)
        await self.cost.settled()

    def patches(self, result: str) -> float:
        labels = {"result": result}
        return (
            self.registry.get_sample_value("llm_sidecar_deletion_cost_patches_total", labels) or 0
        )


@contextlib.asynccontextmanager
async def sidecar(
    triton: TritonStandIn, kube: KubeStandIn, redis_url: str
) -> AsyncIterator[Sidecar]:
    config = SidecarConfig(
        pod=POD,
        namespace=NAMESPACE,
        target="llama",
        redis_url=redis_url,
        triton_http_url=triton.http_url,
        triton_metrics_url=triton.metrics_url,
        models=("tensorrt_llm",),
        poll_interval_s=0.25,
        redis_timeout_s=0.5,
        deletion_cost=True,
    )
    link = connect(config)
    probe = readiness_probe(config)
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    annotation = PodAnnotation(ApiAccess(kube.host), NAMESPACE, POD, 2.0)
    cost = DeletionCost(annotation, metrics, PatchLimiter(10))
    clock = FakeClock(1000.0)
    reporter = Reporter(
        config,
        probe,
        MetricsScraper(config.triton_metrics_url, config.triton_timeout_s),
        ReportWriter(link.client, report_keys(NAMESPACE, "llama")),
        metrics,
        clock=clock,
        wall_at_start=1_750_000_000.0,
        deletion_cost=cost,
    )
    try:
        yield Sidecar(reporter, cost, clock, registry)
    finally:
        await cost.close()
        await probe.close()
        await link.aclose()


def annotated(kube: KubeStandIn) -> str | None:
    annotations: dict[str, str] = kube.get_pod(NAMESPACE, POD)["metadata"]["annotations"]
    return annotations.get(ANNOTATION)


def patched_costs(kube: KubeStandIn) -> list[str]:
    for patch in kube.patches:
        assert (patch.namespace, patch.name, patch.content_type) == (NAMESPACE, POD, MERGE)
    return [p.body["metadata"]["annotations"][ANNOTATION] for p in kube.patches]


def test_load_changes_patch_the_annotation_small_ones_and_the_rate_limit_do_not(
    triton: TritonStandIn, kube: KubeStandIn, redis_server: LocalRedis
) -> None:
    kube.put_pod(pod(POD, NAMESPACE, annotations={"prometheus.io/scrape": "true"}))

    async def scenario() -> None:
        async with sidecar(triton, kube, redis_server.url) as car:
            await car.tick(triton, active=5)
            assert patched_costs(kube) == ["5"]
            assert kube.requests[0] == ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}")
            await car.tick(triton, active=6)  # +1: not worth an API write
            await car.tick(triton, active=0)  # idle, but 2 s after the last patch
            assert patched_costs(kube) == ["5"]
            await car.tick(triton, active=0, after_s=8)  # the interval is over
            assert patched_costs(kube) == ["5", "0"]
            await car.tick(triton, active=7, after_s=9.9)
            assert patched_costs(kube) == ["5", "0"]
            await car.tick(triton, active=7, after_s=0.1)
            assert patched_costs(kube) == ["5", "0", "7"]
            assert car.patches("ok") == 3 and car.patches("failed") == 0
            assert car.registry.get_sample_value("llm_sidecar_deletion_cost") == 7

    asyncio.run(scenario())
    # A merge patch: the pod's other annotations stay.
    assert kube.get_pod(NAMESPACE, POD)["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        ANNOTATION: "7",
    }


def test_a_restarted_sidecar_reads_the_annotation_before_writing_it(
    triton: TritonStandIn, kube: KubeStandIn, redis_server: LocalRedis
) -> None:
    kube.put_pod(pod(POD, NAMESPACE, annotations={ANNOTATION: "4"}))

    async def scenario() -> None:
        async with sidecar(triton, kube, redis_server.url) as car:
            await car.tick(triton, active=4)
            assert kube.patches == [] and car.patches("ok") == 0
            await car.tick(triton, active=0, after_s=10)
            assert patched_costs(kube) == ["0"]

    asyncio.run(scenario())


def test_api_down_reports_go_on_and_the_patch_is_retried_at_the_same_pace(
    triton: TritonStandIn, kube: KubeStandIn, redis_server: LocalRedis
) -> None:
    kube.put_pod(pod(POD, NAMESPACE))

    async def scenario() -> None:
        async with sidecar(triton, kube, redis_server.url) as car:
            kube.set_down(True)
            await car.tick(triton, active=3)
            assert car.patches("failed") == 1
            await car.tick(triton, active=3, after_s=5)  # not retried before the interval
            assert car.patches("failed") == 1
            kube.set_down(False)
            await car.tick(triton, active=3, after_s=5)
            assert patched_costs(kube) == ["3"] and car.patches("ok") == 1
            written = car.registry.get_sample_value("llm_sidecar_reports_written_total")
            assert written is not None and written >= 1

    asyncio.run(scenario())
    assert annotated(kube) == "3"


# The API access a pod has: its ServiceAccount.


def service_account(folder: Path, token: str = "t-1") -> Path:
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


@pytest.mark.parametrize(
    ("host", "base_url"),
    [("10.96.0.1", "https://10.96.0.1:443"), ("fd00::1", "https://[fd00::1]:443")],
    ids=["ipv4", "ipv6"],
)
def test_in_cluster_access_is_the_service_and_the_mounted_account(
    tmp_path: Path, host: str, base_url: str
) -> None:
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "443"}
    access = ApiAccess.in_cluster(env, service_account(tmp_path))
    assert access == ApiAccess(base_url, tmp_path / "token", tmp_path / "ca.crt")


def test_outside_a_pod_or_without_the_token_there_is_no_access(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="not in a pod: KUBERNETES_SERVICE_HOST/PORT"):
        ApiAccess.in_cluster({}, service_account(tmp_path))
    (tmp_path / "token").unlink()
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ApiError, match=r"no ServiceAccount token at .*token"):
        ApiAccess.in_cluster(env, tmp_path)


def test_each_call_carries_the_token_as_it_is_now(kube: KubeStandIn, tmp_path: Path) -> None:
    kube.put_pod(pod(POD, NAMESPACE))
    token = service_account(tmp_path, "t-1") / "token"
    annotation = PodAnnotation(ApiAccess(kube.host, token_file=token), NAMESPACE, POD, 2.0)
    assert annotation.read() is None
    token.write_text("t-2\n")  # kubelet rotated it
    annotation.patch(5)
    assert kube.authorizations == ["Bearer t-1", "Bearer t-2"]
    assert annotation.read() == 5
    assert patched_costs(kube) == ["5"]


def test_calls_go_straight_to_the_api_server_whatever_proxy_the_pod_has(
    kube: KubeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens there
    kube.put_pod(pod(POD, NAMESPACE, annotations={ANNOTATION: "4"}))
    assert PodAnnotation(ApiAccess(kube.host), NAMESPACE, POD, 2.0).read() == 4


def test_a_cluster_ca_that_cannot_be_loaded_fails_at_construction(tmp_path: Path) -> None:
    # At construction, where __main__ turns the feature off, never mid-run.
    account = service_account(tmp_path)  # its ca.crt is not a certificate
    with pytest.raises(OSError):
        PodAnnotation(ApiAccess("https://10.96.0.1:443", None, account / "ca.crt"), "n", "p", 1)


def test_a_refused_call_says_what_the_api_server_said(kube: KubeStandIn) -> None:
    annotation = PodAnnotation(ApiAccess(kube.host), NAMESPACE, "gone-pod", 2.0)
    with pytest.raises(ApiError, match='PATCH pod: HTTP 404 pods "gone-pod" not found'):
        annotation.patch(1)


def test_patch_body_is_what_the_api_server_records() -> None:
    """The stand-in's own merge: a null removes a key, other keys stay; the patch types it
    does not speak are refused, so a client sending one would show here."""
    standin = KubeStandIn().start()
    try:
        standin.put_pod(pod(POD, NAMESPACE, annotations={ANNOTATION: "3", "keep": "me"}))
        api = k8s.CoreV1Api(k8s.ApiClient(standin.configuration()))
        api.patch_namespaced_pod(
            POD,
            NAMESPACE,
            {"metadata": {"annotations": {ANNOTATION: None}}},
            _content_type=MERGE,
        )
        assert standin.get_pod(NAMESPACE, POD)["metadata"]["annotations"] == {"keep": "me"}
        assert standin.patches == [
            Patch(NAMESPACE, POD, MERGE, {"metadata": {"annotations": {ANNOTATION: None}}})
        ]
        api.patch_namespaced_pod(POD, NAMESPACE, {"metadata": {"annotations": {"a": "b"}}})
        assert standin.patches[-1].content_type == "application/strategic-merge-patch+json"
        assert standin.get_pod(NAMESPACE, POD)["metadata"]["annotations"] == {
            "keep": "me",
            "a": "b",
        }
        with pytest.raises(k8s.ApiException) as refused:  # not what the stand-in speaks
            api.patch_namespaced_pod(
                POD, NAMESPACE, [{"op": "remove", "path": "/metadata/annotations/a"}],
                _content_type="application/json-patch+json",
            )  # fmt: skip
        assert refused.value.status == 415
    finally:
        standin.stop()
