"""Starting the demo's long-lived processes, each once it answers: Redis, scalers, gateway.

Each is started through the run's `Supervisor` (its own process group, stopped in layers:
pods 3, gateway 2, scalers 1, Redis 0, so each can still say goodbye to the next) and
waited for on what production would probe: Redis's port, the scaler's gRPC health
service, the gateway's /readyz.
"""

from __future__ import annotations

import functools
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler.demo.supervise import Child, Supervisor
from scaler.demo.target import MODEL, NAMESPACE, TARGET
from scaler.local_redis import find_redis_server, free_port

GATEWAY_NAME = "demo-gateway"
_REDIS_LAYER, _SCALER_LAYER, _GATEWAY_LAYER = 0, 1, 2


class Flag:
    """Set from a signal handler: a plain attribute (threading.Event.set takes a lock,
    which a handler must not)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class Stopped(Exception):
    """Ctrl-C or SIGTERM during start-up."""


@dataclass(frozen=True)
class GatewayProcess:
    url: str  # http://host:port, the inference APIs
    metrics_url: str

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{MODEL}/infer"


def start_redis(supervisor: Supervisor, stop: Flag) -> str:
    port = free_port()
    argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(supervisor.log_dir)]
    child = supervisor.start("redis", argv, layer=_REDIS_LAYER)
    wait_for(lambda: _listening(port), child, stop, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


def start_scalers(
    supervisor: Supervisor, redis_url: str, replicas: int, stop: Flag
) -> list[tuple[int, int]]:
    """`python -m scaler serve`, as in production; (gRPC port, metrics port) each, once ready."""
    started: list[tuple[Child, int, int]] = []
    for i in range(replicas):
        grpc_port, metrics_port = free_port(), free_port()
        env = {
            "REDIS_URL": redis_url,
            "GRPC_PORT": str(grpc_port),
            "METRICS_PORT": str(metrics_port),
            "BIND_ADDRESS": "127.0.0.1",
            "SHUTDOWN_GRACE_SECONDS": "2",
        }
        argv = [sys.executable, "-m", "scaler", "serve"]
        child = supervisor.start(f"scaler-{i}", argv, env, layer=_SCALER_LAYER)
        started.append((child, grpc_port, metrics_port))
    for child, grpc_port, _ in started:
        wait_for(functools.partial(_serving, grpc_port), child, stop, child.name)
    return [(g, m) for _, g, m in started]


def start_gateway(
    supervisor: Supervisor, redis_url: str, timeout_s: float, queue_limit: int, stop: Flag
) -> GatewayProcess:
    """`python -m gateway` with one target, the demo's: model `llm` -> demo/llm's streams."""
    target = {
        "namespace": NAMESPACE,
        "name": TARGET,
        "models": [MODEL],
        "queueLimit": queue_limit,
        "timeoutSeconds": timeout_s,
    }
    targets = supervisor.log_dir / "gateway-targets.json"
    targets.write_text(json.dumps({"targets": [target]}, indent=2) + "\n")
    port, metrics_port = free_port(), free_port()
    env = {
        "REDIS_URL": redis_url,
        "GATEWAY_TARGETS_FILE": str(targets),
        "GATEWAY_NAME": GATEWAY_NAME,
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "BIND_ADDRESS": "127.0.0.1",
        # Stopped only after the traffic: nothing to wait for but what is still in flight.
        "SHUTDOWN_DELAY_SECONDS": "0",
        "SHUTDOWN_GRACE_SECONDS": "2",
    }
    argv = [sys.executable, "-m", "gateway"]
    child = supervisor.start("gateway", argv, env, layer=_GATEWAY_LAYER)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _http_ok(f"{url}/readyz"), child, stop, "gateway")
    return GatewayProcess(url, f"http://127.0.0.1:{metrics_port}/metrics")


def wait_for(
    ready: Callable[[], bool], child: Child, stop: Flag, what: str, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if stop.is_set():
            raise Stopped
        if not child.alive():
            raise RuntimeError(f"{what} exited at start; see {child.name}.log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler")
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=0.5)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
