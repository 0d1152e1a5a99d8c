"""`python -m sidecar` as a real process, and end to end with the real scaler.

The stand-in plays Triton, a real redis-server holds the reports, and KEDA's
polls go to the real scaler over gRPC: the stand-in's load goes up and GetMetrics
follows within one report interval; a pod deleted (SIGTERM) or killed outright
(SIGKILL: its report ages out) stops counting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest
import redis

from scaler.demo.triton_standin import ModelFigures, TritonStandIn, TrtFigures
from scaler.local_redis import LocalRedis, free_port
from scaler.reports import PodReport, report_keys
from tests.harness import NAMESPACE, RunningScaler, ref, scaler_settings

T = TypeVar("T")


class Pod:
    """One inference pod: a Triton stand-in and its sidecar process."""

    def __init__(
        self, name: str, target: str, redis_url: str, interval_s: float, **extra_env: str
    ) -> None:
        self.name = name
        self.keys = report_keys(NAMESPACE, target)
        self.triton = TritonStandIn().start()
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "POD_NAME": name,
            "POD_NAMESPACE": NAMESPACE,
            "TARGET_NAME": target,
            "REDIS_URL": redis_url,
            "TRITON_HTTP_URL": self.triton.http_url,
            "TRITON_GRPC_URL": self.triton.grpc_url,
            "TRITON_METRICS_URL": self.triton.metrics_url,
            "TRITON_MODELS": "tensorrt_llm",
            "BIND_ADDRESS": "127.0.0.1",
            "METRICS_PORT": str(self.metrics_port),
            **extra_env,
        }
        argv = ["--interval", str(interval_s), "--poll-interval", "0.1"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def load(self, active: float, waiting: float = 0, pending: float = 0) -> None:
        figures = TrtFigures(active=active, waiting=waiting, max=8)
        self.triton.set_models({"tensorrt_llm": ModelFigures(pending=pending, trt=figures)})
        self.triton.set_ready(models=("tensorrt_llm",))

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def report(self, client: redis.Redis) -> PodReport | None:
        payload = client.hget(self.keys.reports, self.name)
        return None if payload is None else PodReport.from_json(payload)  # type: ignore[arg-type]

    def close(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        output, _ = self.process.communicate(timeout=30)
        self.triton.stop()
        return output


@contextmanager
def pods(
    *names: str, target: str, redis_url: str, interval_s: float = 1.0, **extra_env: str
) -> Iterator[list[Pod]]:
    started = [Pod(name, target, redis_url, interval_s, **extra_env) for name in names]
    try:
        yield started
    finally:
        for pod in started:
            pod.close()


def eventually(read: Callable[[], T], want: Callable[[T], bool], timeout_s: float = 15.0) -> T:
    """Polls a real process until `want(read())`: real time, bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = read()
        if want(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def test_serves_metrics_and_health_and_removes_its_report_on_sigterm(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    with pods("llama-0", target="llama", redis_url=redis_server.url) as (pod,):
        pod.load(active=3, waiting=1)
        report = eventually(lambda: pod.report(redis_client), lambda r: r is not None)
        assert report is not None
        assert (report.ready, report.inflight, report.waiting, report.capacity) == (True, 3, 1, 8)

        status, health = eventually(lambda: pod.get("/healthz"), lambda got: got[0] == 200)
        assert (status, health) == (200, "ok\n")
        status, metrics = pod.get("/metrics")
        assert status == 200
        assert "llm_sidecar_inflight_requests 3.0" in metrics
        assert 'llm_sidecar_failures_total{stage="redis"} 0.0' in metrics
        written = [m for m in metrics.splitlines() if m.startswith("llm_sidecar_reports_written")]
        assert written and float(written[0].split()[-1]) >= 1

        pod.process.send_signal(signal.SIGTERM)
        assert pod.process.wait(timeout=10) == 0
        assert pod.report(redis_client) is None
        assert redis_client.zscore(pod.keys.seen, pod.name) is None
        assert "removed the report of llama-0" in pod.close()


def test_scaler_follows_the_pods_load_and_forgets_pods_that_go(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    interval_s = 1.0
    scaler = RunningScaler(scaler_settings(redis_server.url), None)  # Redis's clock, as deployed
    # No scale-down delay: this test watches demand itself, not the policy's smoothing.
    scaled_object = ref(
        "llama-so", targetName="llama", staleAfterSeconds="2", scaleDownDelaySeconds="0"
    )
    try:
        with pods("llama-0", "llama-1", "llama-2", target="llama", redis_url=redis_server.url) as (
            a,
            b,
            c,
        ):
            a.load(active=2)
            b.load(active=1)
            c.load(active=4)

            def demand() -> float:
                return scaler.keda.poll(scaled_object).value_float

            assert eventually(demand, lambda d: d == 7) == 7

            # The load goes up: GetMetrics shows it within one interval.
            a.load(active=6, waiting=1, pending=2)
            began = time.monotonic()
            assert eventually(demand, lambda d: d == 14, timeout_s=5) == 6 + 1 + 2 + 1 + 4
            assert time.monotonic() - began < interval_s

            # Pod deleted: its sidecar removes the report at once.
            b.process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            assert eventually(demand, lambda d: d == 13, timeout_s=5) == 13
            assert time.monotonic() - began < interval_s

            # Pod killed with no goodbye: its last report ages out after staleAfterSeconds.
            c.process.kill()
            assert eventually(demand, lambda d: d == 9, timeout_s=8) == 9
            poll = scaler.keda.poll(scaled_object)
            assert (poll.value_float, poll.active) == (9, True)
    finally:
        scaler.stop()


HEAVY = ("grpc", "numpy", "tritonclient", "kubernetes")
LOADED = """
import sys
from sidecar.__main__ import serve
from sidecar.config import load_config
from sidecar.readiness import readiness_probe
import sidecar.deletion_cost  # DELETION_COST, on in a cluster
config = load_config(sys.argv[2:], {"POD_NAME": "p", "POD_NAMESPACE": "n", "TARGET_NAME": "t"})
readiness_probe(config)
heavy = set(sys.argv[1].split(","))
print(",".join(sorted({m.split(".")[0] for m in sys.modules} & heavy)))
"""


@pytest.mark.parametrize(
    ("argv", "heavy"),
    [([], ""), (["--readiness", "grpc"], "grpc")],
    ids=["http", "grpc"],
)
def test_only_grpc_readiness_loads_grpc_and_none_loads_numpy(argv: list[str], heavy: str) -> None:
    # What keeps the sidecar small (README "Sidecar": RSS by readiness transport); the
    # deletion cost needs no kubernetes client either.
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED, ",".join(HEAVY), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == heavy
