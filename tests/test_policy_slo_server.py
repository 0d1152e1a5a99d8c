"""The SLO-aware mode through the real server: keys over gRPC, the hold in Redis, FakeClock."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from scaler.local_redis import LocalRedis
from scaler.redis_connect import RedisLink
from scaler.store import TargetStore
from scaler.target_config import parse_target_config
from tests.harness import NAMESPACE, FakeClock, ReportPublisher, RunningScaler, pod_report, ref

SLO = {"sloWaitSeconds": "2", "serviceSeconds": "5", "coldStartSeconds": "60"}


def _load(publisher: ReportPublisher, clock: FakeClock, inflight: float, **fields: object) -> None:
    publisher.publish("llama", pod_report("llama-0", inflight=inflight, **fields), at=clock())


def test_a_burst_is_held_for_the_horizon_and_keeps_the_target_awake(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    so = ref("llama", **SLO)
    _load(publisher, clock, 70, capacity=70.0)
    assert scaler.keda.poll(so).value_float == 70.0  # served now: the need, above the hold
    for _ in range(14):  # KEDA polls every 15 s while the load falls to 5
        clock.advance(15)
        _load(publisher, clock, 5, capacity=70.0)
        poll = scaler.keda.poll(so)
    assert poll.value_float == pytest.approx(40.0)  # 70 / (1 + 2/5) slots x 0.8
    assert poll.target_size_float == 6.4  # the spec is unchanged: ceil(40 / 6.4) = 7
    clock.advance(600)  # no report for 600 s: the pod is stale, demand 0
    poll = scaler.keda.poll(so)
    assert (poll.value_float, poll.active) == (pytest.approx(40.0), True)  # past 300 s
    clock.advance(600)  # 1200 s after the last demand (t=210): 15 cold starts (900 s) are over
    poll = scaler.keda.poll(so)
    assert (poll.value_float, poll.active) == (0.0, False)


def test_a_measured_cold_start_keeps_the_target_awake_longer(
    scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock
) -> None:
    so = ref("llama", **SLO)
    _load(publisher, clock, 70, cold_start_s=90.0)  # awake 15 x 90 s = 1350 s without demand
    assert scaler.keda.poll(so).active
    clock.advance(1200)  # no report since (demand 0): past the default 15 x 60 s = 900 s
    assert scaler.keda.poll(so).active
    clock.advance(200)
    assert not scaler.keda.poll(so).active


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
