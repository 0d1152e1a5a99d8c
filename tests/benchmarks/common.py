"""Shared pieces of the benchmarks: a scaler process, percentiles, the machine."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler.local_redis import free_port


@contextmanager
def scaler_process(redis_url: str, **env: str) -> Iterator[int]:
    """`python -m scaler serve` as in production; yields its gRPC port once ready."""
    with scaler_process_with_pid(redis_url, **env) as (port, _):
        yield port


@contextmanager
def scaler_process_with_pid(redis_url: str, **env: str) -> Iterator[tuple[int, int]]:
    """As `scaler_process`, also yielding the process id (for its RSS and CPU)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler", "serve"],
        env={
            **os.environ,
            "REDIS_URL": redis_url,
            "GRPC_PORT": str(port),
            "METRICS_PORT": "0",
            "LOG_LEVEL": "WARNING",
            **env,
        },
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler")
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                request, timeout=30, wait_for_ready=True
            )
            for update in watch:
                if update.status == health_pb2.HealthCheckResponse.SERVING:
                    watch.cancel()
                    break
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024
