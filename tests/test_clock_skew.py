"""Staleness is judged on Redis's clock alone, so skewed pod or scaler clocks cannot fool it."""

from __future__ import annotations

import asyncio
import time

import redis
from redis.asyncio import Redis as AsyncRedis

from scaler.local_redis import LocalRedis
from scaler.report_writer import ReportWriter
from scaler.reports import report_keys
from tests.harness import NAMESPACE, RunningScaler, pod_report, ref, scaler_settings


def _write_as_a_sidecar(url: str, inflight: float, pod_clock_skew_s: float) -> float:
    """A sidecar whose own clock is `pod_clock_skew_s` off: only its started_at shows it."""

    async def write() -> float:
        client = AsyncRedis.from_url(url)
        try:
            writer = ReportWriter(client, report_keys(NAMESPACE, "llama"))
            skewed_now = time.time() + pod_clock_skew_s
            report = pod_report("llama-0", inflight=inflight, started_at=skewed_now - 60)
            return await writer.write(report)
        finally:
            await client.aclose()

    return asyncio.run(write())


def test_reports_from_skewed_pods_are_stamped_and_judged_on_redis_time(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    running = RunningScaler(scaler_settings(redis_server.url), None)  # production clock
    try:
        for skew_s in (-30.0, 30.0):
            redis_client.flushall()
            before = float(redis_client.time()[0])
            stamped = _write_as_a_sidecar(redis_server.url, 5, skew_s)
            assert before <= stamped <= float(redis_client.time()[0]) + 1  # Redis's clock
            so = ref("llama", staleAfterSeconds="10", scaleDownDelaySeconds="0")
            assert running.keda.poll(so).value_float == 5  # fresh, whatever the pod's clock
    finally:
        running.stop()
