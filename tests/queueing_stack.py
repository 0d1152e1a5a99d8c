"""The queueing stack as real processes, for the end-to-end tests: start, kill, count the books.

Owns, for tests/test_queueing_*.py:
- `GatewayProcess`: `python -m gateway` on fixed free ports (kept across a restart, as a
  restarted container keeps its Service), its targets file, SIGTERM/SIGKILL/restart, and
  its /metrics read as the books (`GatewayBooks`);
- `WorkerPod`: `python -m sidecar` with WORKER=on beside a real tritonserver
  (tests/real_triton.py), its /metrics, SIGKILL of the sidecar and its Triton together;
- `ScalerProcess`: `python -m scaler serve`, polled over gRPC as KEDA polls it;
- HTTP clients of the gateway (aiohttp), each call ending as an `Outcome`: a status and
  body, the SSE events of a stream, or the name of the connection error;
- Redis-side reads of the target's streams: waiting (not yet taken), held per pod, and
  when the first entry was delivered (XPENDING's idle time, on Redis's clock).

Everything that waits does so with a bound (`until`), polling real processes: they have no
clock to inject.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.contract import CONSUMER_GROUP, request_streams
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import free_port
from tests.harness import NAMESPACE, KedaClient
from tests.real_triton import TritonServer

TARGET = "llm"
LABEL = f"{NAMESPACE}/{TARGET}"
SLEEPER = "sleep"  # plain: SLEPT_S = DURATION_S after sleeping it
STREAMER = "streamer"  # decoupled: 3 events over DURATION_S (tests/triton_models/streamer.py)
START_TIMEOUT_S = 30.0  # a Python process's start on a loaded 2-core machine
STOP_TIMEOUT_S = 20.0  # SIGTERM to exit: the processes' grace here is 5 s
# faulthandler on: a process that does not stop is sent SIGABRT and dumps its threads' stacks
# into its log, for the failure message.
DIAGNOSABLE = {"PYTHONFAULTHANDLER": "1"}


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Polls `condition` every 5 ms up to `timeout_s`; the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if await condition():
            return time.monotonic() - began
        await asyncio.sleep(0.005)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by name and sorted labels (blocking)."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def terminate(process: subprocess.Popen[bytes] | None) -> int | None:
    """SIGTERM and wait (blocking); past STOP_TIMEOUT_S, SIGABRT (a stack dump), then SIGKILL.
    The exit status: 0 for a graceful stop, -6 for a process that hung; None: never started."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    return process.returncode


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ---- the gateway ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayBooks:
    """The gateway's own counters for the target: accepted = answered + failed + in flight."""

    accepted: float
    answered: dict[str, float]  # status class -> count
    failed: dict[str, float]  # reason -> count
    refused: dict[str, float]  # reason -> count
    inflight: float

    @property
    def balanced(self) -> bool:
        return (
            self.accepted == sum(self.answered.values()) + sum(self.failed.values()) + self.inflight
        )


class GatewayProcess:
    """`python -m gateway` for the one target `TARGET`, serving SLEEPER and STREAMER."""

    def __init__(self, workdir: Path, redis_url: str, name: str = "gw-e2e", **env: str) -> None:
        self.name = name
        self.targets_file = workdir / f"targets-{name}.json"
        target = {
            "namespace": NAMESPACE, "name": TARGET, "models": [SLEEPER, STREAMER],
            "queueLimit": 1000, "timeoutSeconds": 60, "maxDeliveries": 3,
        }  # fmt: skip
        self.targets_file.write_text(json.dumps({"targets": [target]}))
        self.port, self.metrics_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "GATEWAY_TARGETS_FILE": str(self.targets_file),
            "GATEWAY_NAME": name,
            "REDIS_URL": redis_url,
            "BIND_ADDRESS": "127.0.0.1",
            "PORT": str(self.port),
            "METRICS_PORT": str(self.metrics_port),
            "SHUTDOWN_DELAY_SECONDS": "0",
            "SHUTDOWN_GRACE_SECONDS": "5",
            **DIAGNOSABLE,
            **env,
        }
        self.log_path = workdir / f"gateway-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> GatewayProcess:
        """Starts the process and returns once /readyz answers 200."""
        self.process = await asyncio.to_thread(self._spawn)
        await until(self._ready, START_TIMEOUT_S, f"gateway {self.name} ready\n{self.log_tail()}")
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "gateway"], env=self.env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited {self.process.returncode}: {self.log_tail()}")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{self.url}/readyz") as answer,
            ):
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crashed container: nothing is finished, the live key is left."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (see `terminate`)."""
        return terminate(self.process)

    async def books(self) -> GatewayBooks:
        s = await asyncio.to_thread(scrape, f"http://127.0.0.1:{self.metrics_port}/metrics")

        def by(name: str, key: str) -> dict[str, float]:
            return {
                dict(labels)[key]: value
                for (n, labels), value in s.items()
                if n == name and dict(labels).get("target") == LABEL and value
            }

        return GatewayBooks(
            accepted=sample(s, "llm_gateway_requests_accepted_total", target=LABEL),
            answered=by("llm_gateway_requests_answered_total", "status_class"),
            failed=by("llm_gateway_requests_failed_total", "reason"),
            refused=by("llm_gateway_requests_refused_total", "reason"),
            inflight=sample(s, "llm_gateway_inflight_requests"),
        )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


# ---- a pod: Triton and its sidecar with the worker -----------------------------------------


class WorkerPod:
    """`python -m sidecar` with WORKER=on for pod `name`, next to `triton`."""

    def __init__(
        self, workdir: Path, triton: TritonServer, redis_url: str, name: str, slots: int,
        **env: str,
    ) -> None:  # fmt: skip
        self.name = name
        self.triton = triton
        self.metrics_port = free_port()
        self.log_path = workdir / f"sidecar-{name}.log"
        self.env = {
            **os.environ,
            "POD_NAME": name,
            "POD_NAMESPACE": NAMESPACE,
            "TARGET_NAME": TARGET,
            "REDIS_URL": redis_url,
            "TRITON_HTTP_URL": triton.http_url,
            "TRITON_METRICS_URL": triton.metrics_url,
            "BIND_ADDRESS": "127.0.0.1",
            "METRICS_PORT": str(self.metrics_port),
            "DELETION_COST": "off",
            "WORKER": "on",
            "WORKER_SLOTS": str(slots),
            "WORKER_GRACE_SECONDS": "5",
            **DIAGNOSABLE,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerPod:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sidecar", "--interval", "1", "--poll-interval", "0.2"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    async def serving(self) -> bool:
        """Its /metrics answers: the process is up, its worker registered."""
        try:
            await self.metrics()
        except OSError:
            return False
        return True

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return await asyncio.to_thread(scrape, f"http://127.0.0.1:{self.metrics_port}/metrics")

    async def metric(self, name: str, **labels: str) -> float:
        return sample(await self.metrics(), name, **labels)

    def kill(self) -> None:
        """SIGKILL the sidecar and its Triton, as a node's crash: nothing finished or acked."""
        assert self.process is not None
        self.process.kill()
        self.triton.stop(kill=True)
        self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (see `terminate`)."""
        return terminate(self.process)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def executions(triton: TritonServer, model: str = SLEEPER) -> int:
    """Requests Triton executed for `model` (its statistics; blocking)."""
    status, text = triton.get(f"/v2/models/{model}/stats")
    assert status == 200, text
    return int(json.loads(text)["model_stats"][0]["inference_count"])


async def triton_ready(triton: TritonServer) -> bool:
    status, _ = await asyncio.to_thread(triton.get, "/v2/health/ready")
    return status == 200


# ---- the scaler, polled as KEDA polls --------------------------------------------------------


class ScalerProcess:
    """`python -m scaler serve` on free ports; `keda` polls it over gRPC."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        self.grpc_port, self.metrics_port = free_port(), free_port()
        self.log_path = workdir / "scaler.log"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "BIND_ADDRESS": "127.0.0.1",
            "GRPC_PORT": str(self.grpc_port),
            "METRICS_PORT": str(self.metrics_port),
            "WATCH_PODS": "off",
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scaler", "serve"], env=env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        try:
            grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            self.stop()
            raise RuntimeError(
                f"scaler did not start: {self.log_path.read_text()[-2000:]}"
            ) from None
        self.keda = KedaClient(pb_grpc.ExternalScalerStub(self.channel))

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# ---- clients --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one client call ended: an HTTP answer, or a connection error by name."""

    status: int = 0  # 0: no HTTP answer
    body: bytes = b""
    events: list[tuple[str, str]] = field(default_factory=list)  # SSE (event, data)
    connection_error: str = ""  # the exception's class name, e.g. ServerDisconnectedError
    elapsed_s: float = 0.0

    @property
    def stream_error(self) -> str:
        """The error event's message ending a stream, '' if it ended without one."""
        for event, data in self.events:
            if event == "error":
                return str(json.loads(data).get("error", data))
        return ""

    def error_reason(self) -> str:
        """The named reason of an error answer (KServe v2: {"error": "..."})."""
        if self.connection_error:
            return self.connection_error
        if self.stream_error:
            return self.stream_error
        try:
            return str(json.loads(self.body)["error"])
        except (ValueError, KeyError, TypeError):
            return ""


def infer_body(seconds: float) -> dict[str, Any]:
    return {"inputs": [{"name": "DURATION_S", "shape": [1], "datatype": "FP32", "data": [seconds]}]}


def slept_s(outcome: Outcome) -> float:
    """The SLEPT_S output of a KServe v2 infer answer."""
    document = json.loads(outcome.body)
    (output,) = [o for o in document["outputs"] if o["name"] == "SLEPT_S"]
    return float(output["data"][0])


def client_session() -> aiohttp.ClientSession:
    # No pool limit: every call of a test is its own concurrent client.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
    )


async def infer(
    session: aiohttp.ClientSession, base: str, seconds: float, headers: dict[str, str] | None = None
) -> Outcome:
    began = time.monotonic()
    try:
        async with session.post(
            f"{base}/v2/models/{SLEEPER}/infer", json=infer_body(seconds), headers=headers
        ) as answer:
            return Outcome(answer.status, await answer.read(), elapsed_s=time.monotonic() - began)
    except aiohttp.ClientError as exc:
        return Outcome(connection_error=type(exc).__name__, elapsed_s=time.monotonic() - began)


async def generate_stream(
    session: aiohttp.ClientSession, base: str, seconds: float, first_event: asyncio.Event
) -> Outcome:
    """SSE from `generate_stream`; sets `first_event` when the first event has arrived."""
    outcome = Outcome()
    began = time.monotonic()
    try:
        async with session.post(
            f"{base}/v2/models/{STREAMER}/generate_stream", json={"DURATION_S": [seconds]}
        ) as answer:
            outcome.status = answer.status
            event = "message"
            async for raw in answer.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    outcome.events.append((event, line.removeprefix("data:").strip()))
                    first_event.set()
                    event = "message"
    except aiohttp.ClientError as exc:
        outcome.connection_error = type(exc).__name__
    outcome.elapsed_s = time.monotonic() - began
    return outcome


# ---- the target's streams, read on Redis ----------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    queued: int  # entries in the streams: not yet answered
    held: dict[str, int]  # pod -> entries it took and has not acknowledged

    @property
    def waiting(self) -> int:
        """Not yet taken by any pod (what the scaler's depth counts)."""
        return self.queued - sum(self.held.values())


async def queue_state(client: Redis) -> QueueState:
    queued = 0
    held: dict[str, int] = {}
    for stream in request_streams(NAMESPACE, TARGET):
        if not await client.exists(stream):
            continue
        queued += await client.xlen(stream)
        summary = await client.xpending(stream, CONSUMER_GROUP)
        for consumer in summary["consumers"]:
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            held[name] = held.get(name, 0) + int(consumer["pending"])
    return QueueState(queued, held)


async def first_delivery_ms(client: Redis) -> float | None:
    """Redis time (ms) at which the earliest entry still held was delivered to a pod."""
    earliest: float | None = None
    for stream in request_streams(NAMESPACE, TARGET):
        if not await client.exists(stream):
            continue
        pipe = client.pipeline(transaction=False)
        pipe.time()
        pipe.xpending_range(stream, CONSUMER_GROUP, min="-", max="+", count=1000)
        (seconds, micros), entries = await pipe.execute()
        now_ms = seconds * 1000 + micros / 1000
        for entry in entries:
            delivered = now_ms - int(entry["time_since_delivered"])
            earliest = delivered if earliest is None else min(earliest, delivered)
    return earliest
