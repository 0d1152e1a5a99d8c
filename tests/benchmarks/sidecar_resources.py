"""The sidecar's own cost: RSS and CPU of `python -m sidecar` at its default 1 s interval.

It reads the Triton stand-in (the demo's: the real Triton gRPC API and a metrics
page) and writes to a real redis-server, the load changing every few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from scaler.demo.triton_standin import ModelFigures, TritonStandIn, TrtFigures
from scaler.local_redis import LocalRedis, free_port
from tests.benchmarks.common import cpu_seconds, rss_mib

WARM_UP_S = 10.0
MEASURE_S = 60.0


@dataclass(frozen=True)
class SidecarFigures:
    readiness: str
    cpu_percent: float
    peak_rss_mib: float


def run_both() -> list[SidecarFigures]:
    return [run("http"), run("grpc")]


def run(readiness: str) -> SidecarFigures:
    """`readiness`: http (the default) or grpc (through tritonclient)."""
    redis = LocalRedis()
    redis.start()
    triton = TritonStandIn().start()
    env = {
        **os.environ,
        "POD_NAME": "llama-0",
        "POD_NAMESPACE": "bench",
        "TARGET_NAME": "llama",
        "REDIS_URL": redis.url,
        "TRITON_READINESS": readiness,
        "TRITON_HTTP_URL": triton.http_url,
        "TRITON_GRPC_URL": triton.grpc_url,
        "TRITON_METRICS_URL": triton.metrics_url,
        "TRITON_MODELS": "tensorrt_llm",
        "METRICS_PORT": str(free_port()),
        "BIND_ADDRESS": "127.0.0.1",
        "DELETION_COST": "off",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "sidecar"], env=env)
    try:
        triton.set_ready(models=("tensorrt_llm",))
        peak, began, load = 0.0, time.monotonic(), 0
        cpu_start = None
        while time.monotonic() - began < WARM_UP_S + MEASURE_S:
            load = (load + 3) % 8
            figures = TrtFigures(active=load, waiting=0, max=8)
            triton.set_models({"tensorrt_llm": ModelFigures(pending=0, trt=figures)})
            time.sleep(5)  # the load changes every 5 s, as a real pod's would
            if cpu_start is None and time.monotonic() - began >= WARM_UP_S:
                cpu_start, cpu_began = cpu_seconds(process.pid), time.monotonic()
            peak = max(peak, rss_mib(process.pid))
        assert cpu_start is not None
        cpu = (cpu_seconds(process.pid) - cpu_start) / (time.monotonic() - cpu_began)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        triton.stop()
        redis.close()
    return SidecarFigures(readiness, cpu_percent=cpu * 100, peak_rss_mib=peak)


if __name__ == "__main__":
    print(run_both())
