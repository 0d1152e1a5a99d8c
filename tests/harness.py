"""Test helpers: a fake clock, a pod report writer, the scaler in a thread, a KEDA-like client."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, replace

import grpc
import redis

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.report_writer import DEFAULT_REPORT_TTL_S, WRITE_REPORT_LUA, write_call
from scaler.reports import PodReport, report_keys
from scaler.server import ScalerServer
from scaler.service_record import Served
from scaler.settings import Settings

NAMESPACE = "inference"


class FakeClock:
    """The scaler's Clock, stepped by the test thread; wakes server-side waiters it passes."""

    def __init__(self, now: float) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self._now

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            due = [s for s in self._sleepers if s[0] <= self._now]
            self._sleepers = [s for s in self._sleepers if s[0] > self._now]
        for _, loop, future in due:
            loop.call_soon_threadsafe(_resolve, future)

    async def wait_until(self, deadline: float, now: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if deadline <= self._now:
                return
            self._sleepers.append((deadline, asyncio.get_running_loop(), future))
        await future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def scaler_settings(redis_url: str, **overrides: object) -> Settings:
    base = Settings(
        redis_url=redis_url,
        bind_address="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        redis_timeout_s=0.5,
        stream_interval_s=30.0,  # streams must be woken by key events, not this re-check
        health_interval_s=0.1,
        shutdown_grace_s=2.0,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def pod_report(pod: str, inflight: float = 0, waiting: float = 0, **fields: object) -> PodReport:
    values: dict[str, object] = {
        "capacity": 8.0,
        "ready": True,
        "started_at": 1_600_000_000.0,
        "seq": 1,
    }
    values.update(fields)
    return PodReport(pod=pod, inflight=inflight, waiting=waiting, **values)  # type: ignore[arg-type]


class ReportPublisher:
    """Writes pod reports through the contract's own write script, stamped with a chosen time."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._write = client.register_script(WRITE_REPORT_LUA)

    def publish(
        self,
        target: str,
        report: PodReport,
        at: float,
        namespace: str = NAMESPACE,
        served: Served | None = None,
    ) -> None:
        keys, args = write_call(
            report_keys(namespace, target), report, DEFAULT_REPORT_TTL_S, f"{at:.6f}", served
        )
        self._write(keys=keys, args=args)

    def publish_raw(self, target: str, pod: str, payload: str, at: float) -> None:
        keys = report_keys(NAMESPACE, target)
        self._write(
            keys=[keys.reports, keys.seen], args=[pod, payload, DEFAULT_REPORT_TTL_S, f"{at:.6f}"]
        )


class RunningScaler:
    """The real ScalerServer on its own event loop thread, reached over loopback gRPC."""

    def __init__(
        self, settings: Settings, clock: FakeClock | None, kube_config: object | None = None
    ) -> None:
        """`kube_config`: a kubernetes.client.Configuration for the pod watch, if it is on."""
        self.server = ScalerServer(settings, clock=clock, kube_config=kube_config)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        started = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self._loop.run_until_complete(self.server.run(self._stop, started.set))
            except BaseException as exc:  # surfaced by the test that started it
                self.error = exc
                started.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="scaler", daemon=True)
        self._thread.start()
        if not started.wait(15) or self.error is not None:
            raise RuntimeError(f"scaler did not start: {self.error!r}")
        self.address = f"127.0.0.1:{self.server.grpc_port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.ExternalScalerStub(self.channel)
        self.keda = KedaClient(self.stub)

    def sample(self, name: str, **labels: str) -> float:
        """A metric's value in the server's own registry (0 when absent)."""
        return self.server.registry.get_sample_value(name, labels) or 0.0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def stop(self) -> None:
        self.stop_server()
        self.channel.close()

    def stop_server(self, timeout_s: float = 30) -> None:
        """As on SIGTERM; the test's channel stays open to read what was in flight."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)
        if self.error is not None:
            raise self.error


# The tests of reading and answering want the metric to be the demand they set up:
# with a zero cold start, capacity ordered now is ready now, so the need is everything
# in the system that the ready slots do not already serve, and no SLO hold on top.
# Tests of the decision itself say so with their own keys (or tests/test_policy*.py).
DEMAND_AS_METRIC = {"coldStartSeconds": "0", "sloWaitSeconds": "off", "hpaTolerance": "0"}


def ref(name: str, namespace: str = NAMESPACE, **metadata: str) -> pb.ScaledObjectRef:
    full = {
        "scalerAddress": "llm-scaler.keda:9090",
        "targetConcurrency": "8",
        **DEMAND_AS_METRIC,
        **metadata,
    }
    return pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=full)


@dataclass(frozen=True)
class Poll:
    metric_name: str
    target_size: int
    target_size_float: float
    value: int
    value_float: float
    active: bool


class KedaClient:
    """Calls the scaler the way KEDA does each polling cycle: spec, metrics, then activity.

    KEDA prefixes the metric name with the trigger index (`s0-`) and strips it again
    before GetMetrics; the float fields win when > 0."""

    def __init__(self, stub: pb_grpc.ExternalScalerStub, deadline_s: float = 3.0) -> None:
        self._stub = stub
        self._deadline_s = deadline_s

    def poll(self, scaled_object: pb.ScaledObjectRef) -> Poll:
        spec = self._stub.GetMetricSpec(scaled_object, timeout=self._deadline_s).metricSpecs[0]
        hpa_name = f"s0-{spec.metricName}"
        request = pb.GetMetricsRequest(
            scaledObjectRef=scaled_object, metricName=hpa_name.removeprefix("s0-")
        )
        value = self._stub.GetMetrics(request, timeout=self._deadline_s).metricValues[0]
        active = self._stub.IsActive(scaled_object, timeout=self._deadline_s).result
        return Poll(
            metric_name=spec.metricName,
            target_size=spec.targetSize,
            target_size_float=spec.targetSizeFloat,
            value=value.metricValue,
            value_float=value.metricValueFloat,
            active=active,
        )
