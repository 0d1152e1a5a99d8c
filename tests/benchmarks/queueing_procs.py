"""The real processes of the queueing benchmarks, each started as in production: the engine
stand-in (tests.benchmarks.engine_standin), `python -m gateway` and `python -m sidecar` with
WORKER=on (a pod's worker), optionally under cProfile (its profile written at SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from scaler.local_redis import free_port
from scaler.reports import PodReport, report_keys

NAMESPACE = "bench"
TARGET = "echo"
MODEL = "echo"
GATEWAY_NAME = "bench-gw"
START_TIMEOUT_S = 30.0


def _python(module: str, profile_to: Path | None) -> list[str]:
    if profile_to is None:
        return [sys.executable, "-m", module]
    return [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", module]


def _wait(condition: object, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:g} s")
        time.sleep(0.01)  # a child process starting: real time, no clock to inject


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class Process:
    """A child process; `stop` sends SIGTERM (a graceful exit, which writes a profile)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(args, env={**os.environ, **env})

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class StandIn(Process):
    """The engine stand-in: Triton's HTTP API on one port (metrics too)."""

    def __init__(self, ready: bool = True) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "tests.benchmarks.engine_standin", "--port", str(self.port)]
        super().__init__(args + ([] if ready else ["--not-ready"]), {})
        _wait(lambda: _status(f"{self.url}/v2/health/live") == 200, "the stand-in to listen")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Gateway(Process):
    """`python -m gateway` serving the one bench target."""

    def __init__(self, redis_url: str, profile_to: Path | None = None) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-gateway-")
        targets = Path(self._dir.name) / "targets.json"
        target = {
            "namespace": NAMESPACE,
            "name": TARGET,
            "models": [MODEL],
            "queueLimit": 100_000,
            "timeoutSeconds": 120,
        }
        targets.write_text(json.dumps({"targets": [target]}))
        env = {
            "GATEWAY_TARGETS_FILE": str(targets),
            "GATEWAY_NAME": GATEWAY_NAME,
            "REDIS_URL": redis_url,
            "BIND_ADDRESS": "127.0.0.1",
            "PORT": str(self.port),
            "METRICS_PORT": str(free_port()),
            "SHUTDOWN_DELAY_SECONDS": "0",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "LOG_LEVEL": "WARNING",
        }
        super().__init__(_python("gateway", profile_to), env)
        _wait(lambda: _status(f"{self.url}/readyz") == 200, "the gateway to be ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 30.0) -> None:
        super().stop(timeout_s)
        self._dir.cleanup()


class Pod(Process):
    """`python -m sidecar` with WORKER=on for pod `name`, in front of its engine."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        engine: StandIn | tuple[str, str],
        slots: int,
        profile_to: Path | None = None,
    ) -> None:
        """`engine`: the stand-in, or a Triton's HTTP URL and metrics URL."""
        if isinstance(engine, StandIn):
            engine = (engine.url, f"{engine.url}/metrics")
        self.name = name
        self._redis_url = redis_url
        env = {
            "POD_NAME": name,
            "POD_NAMESPACE": NAMESPACE,
            "TARGET_NAME": TARGET,
            "REDIS_URL": redis_url,
            "TRITON_HTTP_URL": engine[0],
            "TRITON_METRICS_URL": engine[1],
            "BIND_ADDRESS": "127.0.0.1",
            "METRICS_PORT": str(free_port()),
            "DELETION_COST": "off",
            "WORKER": "on",
            "WORKER_SLOTS": str(slots),
            "WORKER_GRACE_SECONDS": "10",
            "LOG_LEVEL": "WARNING",
        }
        super().__init__(_python("sidecar", profile_to), env)

    def report(self) -> PodReport | None:
        with redis.Redis.from_url(self._redis_url) as client:
            payload = client.hget(report_keys(NAMESPACE, TARGET).reports, self.name)
        return None if payload is None else PodReport.from_json(payload)

    def wait_reported(self, ready: bool) -> None:
        """Until its report (ready or not) is in Redis: the process runs, its worker too."""

        def reported() -> bool:
            if not self.alive():
                raise RuntimeError(f"sidecar {self.name} exited {self.process.returncode}")
            report = self.report()
            return report is not None and report.ready == ready

        _wait(reported, f"sidecar {self.name} to report ready={ready}")
