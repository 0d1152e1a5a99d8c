"""The SLO-aware mode through the real server: keys over gRPC, the hold in Redis, FakeClock."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.contract import PRIORITIES
from scaler.local_redis import LocalRedis
from scaler.redis_connect import RedisLink
from scaler.store import TargetStore
from scaler.target_config import parse_target_config
from tests.harness import NAMESPACE, FakeClock, ReportPublisher, RunningScaler, pod_report, ref

SLO = {"sloWaitSeconds": "2", "serviceSeconds": "5", "coldStartSeconds": "60"}


def _load(publisher: ReportPublisher, clock: FakeClock, inflight: float, **fields: object) -> None:
    publisher.publish("llama", pod_report("llama-0", inflight=inflight, **fields), at=clock())


def test_a_burst_that_recurs_is_held_for_the_horizon_and_keeps_the_target_awake(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    so = ref("llama", **SLO)
    for _ in range(2):  # a burst of 70, twice: it recurs
        _load(publisher, clock, 70, capacity=70.0)
        assert scaler.keda.poll(so).value_float >= 40.0  # served now
        for _ in range(14):  # KEDA polls every 15 s while the load falls to 5
            clock.advance(15)
            _load(publisher, clock, 5, capacity=70.0)
            poll = scaler.keda.poll(so)
    assert poll.value_float == pytest.approx(40.0)  # 70 / (1 + 2/5) slots x 0.8
    assert poll.target_size_float == 6.4  # the spec is unchanged: ceil(40 / 6.4) = 7
    clock.advance(600)  # no report for 600 s: the pod is stale, demand 0
    poll = scaler.keda.poll(so)
    assert (poll.value_float, poll.active) == (pytest.approx(40.0), True)  # past 300 s
    clock.advance(600)  # 1200 s after the last demand (t=420): 15 cold starts (900 s) are over
    poll = scaler.keda.poll(so)
    assert (poll.value_float, poll.active) == (0.0, False)


def test_a_measured_cold_start_keeps_the_target_awake_longer_unless_one_is_written(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    measured = ref("llama", sloWaitSeconds="2", serviceSeconds="5")
    del measured.scalerMetadata["coldStartSeconds"]  # absent: the measured one wins if longer
    # coldStartSeconds "60": obeyed as written (another ScaledObject on the same pods)
    written = ref("llama-written", targetName="llama", **SLO)
    _load(publisher, clock, 70, cold_start_s=90.0)  # awake 15 x 90 s = 1350 s without demand
    assert scaler.keda.poll(measured).active and scaler.keda.poll(written).active
    clock.advance(1200)  # no report since (demand 0): past 15 x 60 s = 900 s
    assert scaler.keda.poll(measured).active
    assert not scaler.keda.poll(written).active
    clock.advance(200)
    assert not scaler.keda.poll(measured).active


def test_a_bad_slo_value_is_invalid_argument_naming_the_key(scaler: RunningScaler) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.keda.poll(ref("llama", sloWaitSeconds="-2"))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "sloWaitSeconds = '-2', must be a number in [0; 600], or 'off'" in (
        err.value.details() or ""
    )


def test_signals_carry_the_longest_measured_cold_start(
    redis_server: LocalRedis, publisher: ReportPublisher, clock: FakeClock
) -> None:
    """Summed by the read script itself, from the reports as stored."""
    publisher.publish("llama", pod_report("a", cold_start_s=42.0), at=clock())
    publisher.publish("llama", pod_report("b", ready=False), at=clock())
    publisher.publish("llama", pod_report("c", cold_start_s=75.5), at=clock())
    publisher.publish("empty", pod_report("d"), at=clock())

    async def read(target: str) -> float:
        link = RedisLink(redis_server.url, None, 5)
        try:
            cfg = parse_target_config(NAMESPACE, target, {"targetConcurrency": "8"}).config
            return (await TargetStore(link, 5).read(cfg, clock())).signals.cold_start_s
        finally:
            await link.aclose()

    assert asyncio.run(read("llama")) == 75.5
    assert asyncio.run(read("empty")) == 0.0


def test_get_metric_spec_logs_the_derived_values_and_from_what(
    scaler: RunningScaler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="scaler")
    derived = ref("llama", sloWaitSeconds="2")
    del derived.scalerMetadata["coldStartSeconds"]
    scaler.keda.poll(derived)
    line = next(r.getMessage() for r in caplog.records if "derived values" in r.getMessage())
    assert "inference/llama: derived values: serviceSeconds: the mean the pods'" in line
    assert "scaleToZeroDelaySeconds: 15 cold starts with the SLO-aware hold" in line
    assert "coldStartSeconds: the longest cold start a pod measured, at least 60 s" in line
    written = ref("written", sloWaitSeconds="2", serviceSeconds="5", scaleToZeroDelaySeconds="0")
    scaler.keda.poll(written)
    line = next(r.getMessage() for r in caplog.records if "inference/written" in r.getMessage())
    assert line == (
        "inference/written: derived values: none (every key with a derived default is written)"
    )


def test_get_metric_spec_logs_the_gateway_streams_derived_for_a_missing_queue_key(
    scaler: RunningScaler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="scaler")
    scaler.keda.poll(ref("fed", queueType="gateway"))
    line = next(r.getMessage() for r in caplog.records if "inference/fed" in r.getMessage())
    streams = ",".join(f"llm-scaler:{{inference/fed}}:requests:{p}" for p in PRIORITIES)
    assert f"queueKey: the gateway's stream of each priority, {streams}" in line
    scaler.keda.poll(ref("named", queueType="gateway", queueKey="mine"))
    line = next(r.getMessage() for r in caplog.records if "inference/named" in r.getMessage())
    assert "queueKey" not in line
