"""Pods failing mid-burst: their demand leaves within staleAfterSeconds, and no read is torn."""

from __future__ import annotations

import threading

import redis

from scaler.local_redis import LocalRedis
from scaler.report_writer import WRITE_REPORT_LUA
from scaler.reports import report_keys
from tests.harness import NAMESPACE, RunningScaler, pod_report, ref, scaler_settings
from tests.test_sidecar_process import eventually, pods


def test_triton_killed_mid_burst_its_demand_leaves_and_the_sidecar_survives(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    scaler = RunningScaler(scaler_settings(redis_server.url), None)  # Redis's clock
    so = ref("llama", staleAfterSeconds="2", scaleDownDelaySeconds="0")
    try:
        with pods("llama-0", "llama-1", target="llama", redis_url=redis_server.url) as (a, b):
            a.load(active=8, waiting=6)
            b.load(active=5)

            def demand() -> float:
                return scaler.keda.poll(so).value_float

            assert eventually(demand, lambda d: d == 19) == 19
            a.triton.stop()  # Triton dies; its sidecar can no longer read a load
            # Nothing is reported for it any more, never a zero: the last report ages out.
            assert eventually(demand, lambda d: d == 5, timeout_s=10) == 5
            assert a.process.poll() is None  # the sidecar itself keeps running
    finally:
        scaler.stop()


def test_a_report_is_never_seen_half_written(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    """Writers replace reports whose inflight and waiting always sum to 10 while polls run."""
    scaler = RunningScaler(scaler_settings(redis_server.url), None)
    keys = report_keys(NAMESPACE, "llama")
    stop = threading.Event()

    def write() -> None:
        with redis.Redis.from_url(redis_server.url) as client:
            script = client.register_script(WRITE_REPORT_LUA)
            k = 0
            while not stop.is_set():
                k = (k + 1) % 11
                for pod in ("p0", "p1"):
                    report = pod_report(pod, inflight=k, waiting=10 - k)
                    script(keys=[keys.reports, keys.seen], args=[pod, report.to_json(), 60, ""])

    with redis.Redis.from_url(redis_server.url) as client:  # both pods report before polls start
        for pod in ("p0", "p1"):
            report = pod_report(pod, inflight=0, waiting=10).to_json()
            client.register_script(WRITE_REPORT_LUA)(
                keys=[keys.reports, keys.seen], args=[pod, report, 60, ""]
            )
    writer = threading.Thread(target=write)
    writer.start()
    try:
        so = ref("llama", scaleDownDelaySeconds="0")
        seen = {scaler.keda.poll(so).value_float for _ in range(300)}
    finally:
        stop.set()
        writer.join()
        scaler.stop()
    assert seen == {20.0}  # two pods, each inflight + waiting = 10: never torn
