"""The demo's orchestration: start everything, run the loop, stop everything, report.

Processes (each in its own process group, through `scaler.demo.guard`):
redis-server; two `python -m scaler serve` replicas; and one
`python -m scaler.demo.pod` per replica KEDA/HPA set, each with its own
`python -m sidecar`. In this process: the traffic generator (a thread), the
KEDA/HPA emulator (`scaler.demo.emulator`: the stream on a thread, the polls on
the main loop), the emulated Deployment (`scaler.demo.fleet`), the view and the
books. The main loop runs every 0.1 s: pushes, polls and syncs that are due,
pods created or deleted to match, a sample every 0.25 s.

The run ends when the traffic is over and everything is back at zero (no
request queued or in flight, zero replicas, every pod process gone), or after
`tail_s` more seconds, or on Ctrl-C / SIGTERM. Whichever way it ends, the
`finally` stops every child (pods, then scalers, then Redis: SIGTERM to each
group, SIGKILL after the grace period) before the summary, the timeline and the
plot are written under `out`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler.demo import queue
from scaler.demo.emulator import KedaEmulator, keda_config
from scaler.demo.fleet import Fleet
from scaler.demo.plot import plot
from scaler.demo.supervise import DEMO_RUN_ENV, Child, Supervisor
from scaler.demo.timeline import Sample, write_csv
from scaler.demo.traffic import TrafficGenerator, TrafficPlan, plan
from scaler.demo.view import TerminalView
from scaler.local_redis import find_redis_server, free_port
from scaler.simulator.trace import Trace, load_csv, make_trace

log = logging.getLogger("demo")

_TICK_S = 0.1
_SAMPLE_S = 0.25
_VIEW_S = 0.5

# Trigger metadata for the demo, shrunk to demo time (README "Local demo").
DEMO_METADATA = {
    "targetConcurrency": "8",
    "queueKey": queue.QUEUE_KEY,
    "scaleDownDelaySeconds": "5",
    "scaleToZeroDelaySeconds": "5",
    "burstWindowSeconds": "1",
    # DemoConfig's pods and the 2 s SLO at its 20x speed (see demo/cli.py)
    "coldStartSeconds": "3",
    "serviceSeconds": "0.323",
    "sloWaitSeconds": "0.1",
    "sloHorizonSeconds": "180",
}


@dataclass(frozen=True)
class DemoConfig:
    trace: Path | None  # None or missing: a synthetic trace of the same rate and sizes
    trace_start_s: float = 1200.0
    duration_s: float = 60.0  # traffic, wall seconds
    speedup: float = 20.0
    rate_scale: float = 0.5
    cold_start_s: float = 3.0
    slots: int = 8
    prefill_tps: float = 10_000.0
    decode_ms: float = 30.0
    metadata: dict[str, str] = field(default_factory=lambda: dict(DEMO_METADATA))
    scaler_replicas: int = 2
    polling_interval_s: float = 1.0
    cooldown_period_s: float = 2.0
    hpa_sync_s: float = 1.0
    min_replicas: int = 0
    max_replicas: int = 8
    scale_down_stabilization_s: float = 0.0
    rate_period_s: float = 1.0
    tail_s: float = 60.0  # after the traffic, at most this long for everything to reach zero
    out: Path = Path("build/demo")
    view: bool = True
    plot: bool = True


class _Flag:
    """Set from a signal handler: a plain attribute (threading.Event.set takes a lock,
    which a handler must not)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class _Stopped(Exception):
    """Ctrl-C or SIGTERM during start-up."""


def load_trace(config: DemoConfig) -> Trace:
    if config.trace is not None and config.trace.exists():
        return load_csv(config.trace)
    # Poisson arrivals at the conversation trace's rate, log-normal sizes around its medians.
    rng = np.random.default_rng(0)
    span = config.trace_start_s + config.duration_s * config.speedup
    n = int(rng.poisson(5.5 * span))
    return make_trace(
        "synthetic (conversation-like)",
        np.sort(rng.uniform(0, span, n)),
        np.maximum(1, rng.lognormal(math.log(1020), 0.6, n)).astype(np.int64),
        np.maximum(1, rng.lognormal(math.log(129), 0.9, n)).astype(np.int64),
    )


def run(config: DemoConfig) -> dict[str, Any]:
    """The whole demo; returns the summary (also written to out/summary.json)."""
    trace = load_trace(config)
    traffic_plan = plan(
        trace, config.trace_start_s, config.duration_s, config.speedup, config.rate_scale
    )
    logs = config.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    run_id = os.environ.get(DEMO_RUN_ENV) or uuid.uuid4().hex  # a caller may choose it
    env = {**os.environ, DEMO_RUN_ENV: run_id, "PYTHONUNBUFFERED": "1"}
    supervisor = Supervisor(logs, env)
    stop = _Flag()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # no lock taken: safe in a signal handler

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    samples: list[Sample] = []
    outcome = "interrupted"
    figures: dict[str, Any] = {}
    traffic: TrafficGenerator | None = None
    emulator: KedaEmulator | None = None
    client: redis.Redis | None = None
    try:
        redis_url = _start_redis(supervisor, stop)
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        scalers = _start_scalers(supervisor, redis_url, config.scaler_replicas, stop)
        ref = pb.ScaledObjectRef(
            name=queue.TARGET,
            namespace=queue.NAMESPACE,
            scalerMetadata={"scalerAddress": "llm-scaler.llm-scaler:9090", **config.metadata},
        )
        emulator = KedaEmulator(
            [f"127.0.0.1:{grpc_port}" for grpc_port, _ in scalers],
            ref,
            keda_config(
                config.polling_interval_s,
                config.cooldown_period_s,
                config.hpa_sync_s,
                config.min_replicas,
                config.max_replicas,
                config.scale_down_stabilization_s,
                config.rate_period_s,
            ),
        )
        fleet = Fleet(supervisor, client, redis_url, _pod_args(config))
        reasons = _Reasons([f"http://127.0.0.1:{m}/metrics" for _, m in scalers])
        view = TerminalView(_header(config, trace, traffic_plan)) if config.view else None
        traffic = TrafficGenerator(traffic_plan, redis_url)
        emulator.start()
        t0 = time.monotonic()
        traffic.start()
        next_sample = next_view = 0.0
        while not stop.is_set():
            now = time.monotonic() - t0
            emulator.tick(now)
            fleet.scale_to(emulator.replicas)
            fleet.reap()
            if traffic.error is not None:
                raise RuntimeError("traffic generator failed") from traffic.error
            traffic_over = traffic.done and now >= config.duration_s
            if now >= next_sample:
                next_sample = now + _SAMPLE_S
                samples.append(_sample(now, client, emulator, fleet, reasons))
                s = samples[-1]
                settled = s.demand == 0 and s.pushed == len(traffic_plan)
                if traffic_over and settled and emulator.replicas == 0 and not fleet.pods:
                    outcome = "finished"
                    break
            if view is not None and now >= next_view:
                next_view = now + _VIEW_S
                view.show(samples, _phase(now, config, traffic_over))
            if now > config.duration_s + config.tail_s:
                outcome = "timed out"
                break
            time.sleep(_TICK_S)
        if stop.is_set():
            outcome = "interrupted"
        figures = _figures(samples, emulator, fleet, traffic, t0, config)
        figures["waits"] = _waits(client)
    except _Stopped:
        outcome = "interrupted"
    finally:
        if traffic is not None:
            traffic.stop()
        if emulator is not None:
            emulator.close()
        supervisor.close()
        if client is not None:
            client.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = {
        "outcome": outcome,
        "run_id": run_id,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "trace": trace.name,
        "trace_window_s": [traffic_plan.trace_start_s, traffic_plan.trace_end_s],
        "planned_requests": len(traffic_plan),
        **figures,
    }
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if samples:
        write_csv(samples, config.out / "timeline.csv")
        if config.plot:
            title = (
                f"llm-keda-scaler local demo: {trace.name} [{traffic_plan.trace_start_s:g}; "
                f"{traffic_plan.trace_end_s:g}) s x{config.rate_scale:g} rate, "
                f"{config.speedup:g}x speed, cold start {config.cold_start_s:g} s"
            )
            plot(samples, config.out / "demo.png", title, config.duration_s)
    return summary


def _pod_args(config: DemoConfig) -> list[str]:
    return [
        "--slots", str(config.slots),
        "--cold-start-s", str(config.cold_start_s),
        "--speedup", str(config.speedup),
        "--prefill-tps", str(config.prefill_tps),
        "--decode-ms", str(config.decode_ms),
    ]  # fmt: skip


def _start_redis(supervisor: Supervisor, stop: _Flag) -> str:
    port = free_port()
    argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(supervisor.log_dir)]
    child = supervisor.start("redis", argv, layer=0)
    _wait(lambda: _listening(port), child, stop, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


def _start_scalers(
    supervisor: Supervisor, redis_url: str, replicas: int, stop: _Flag
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
        started.append(
            (supervisor.start(f"scaler-{i}", argv, env, layer=1), grpc_port, metrics_port)
        )
    for child, grpc_port, _ in started:
        _wait(lambda p=grpc_port: _serving(p), child, stop, child.name)
    return [(g, m) for _, g, m in started]


def _wait(ready: Any, child: Child, stop: _Flag, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if stop.is_set():
            raise _Stopped
        if not child.alive():
            raise RuntimeError(f"{what} exited at start; see {child.name}.log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler")
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=0.5)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


class _Reasons:
    """The scaler's latest decision reason: the one whose `llm_scaler_decisions_total`
    grew most since the last look, summed over the replicas' /metrics."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = urls
        self._counts: dict[str, float] = {}
        self.latest = ""
        self.seen: set[str] = set()

    def read(self) -> str:
        counts: dict[str, float] = {}
        for url in self._urls:
            try:
                with urllib.request.urlopen(url, timeout=1) as page:
                    text = page.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith('llm_scaler_decisions_total{reason="'):
                    reason = line.split('"')[1]
                    counts[reason] = counts.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
        grown = {r: c - self._counts.get(r, 0.0) for r, c in counts.items()}
        best = max(grown.items(), key=lambda rc: rc[1], default=("", 0.0))
        if best[1] > 0:
            self.latest = best[0]
            self.seen.add(best[0])
        self._counts = counts
        return self.latest


def _sample(
    now: float, client: redis.Redis, emulator: KedaEmulator, fleet: Fleet, reasons: _Reasons
) -> Sample:
    books = queue.read_books(client)
    counts = fleet.counts()
    last = emulator.last
    return Sample(
        t_s=round(now, 3),
        pushed=books.pushed,
        completed=books.completed,
        queue=books.queue,
        inflight=books.inflight,
        metric=last.metric if last else 0.0,
        active=last.active if last else False,
        desired=emulator.replicas,
        ready=counts.ready,
        starting=counts.starting,
        draining=counts.draining,
        reason=reasons.read(),
    )


def _phase(now: float, config: DemoConfig, traffic_over: bool) -> str:
    if not traffic_over:
        return f"traffic {min(now, config.duration_s):4.0f} / {config.duration_s:g} s"
    return "traffic over: waiting for scale to zero"


def _header(config: DemoConfig, trace: Trace, traffic: TrafficPlan) -> str:
    md = config.metadata
    return (
        f"llm-keda-scaler demo: {trace.name} [{traffic.trace_start_s:g}; "
        f"{traffic.trace_end_s:g}) s, x{config.rate_scale:g} rate, {config.speedup:g}x speed "
        f"| cold start {config.cold_start_s:g} s | targetConcurrency "
        f"{md.get('targetConcurrency')}, scaleDownDelaySeconds {md.get('scaleDownDelaySeconds')}, "
        f"scaleToZeroDelaySeconds {md.get('scaleToZeroDelaySeconds')}"
    )


def _first(samples: list[Sample], test: Any, after: float = -math.inf) -> float | None:
    return next((s.t_s for s in samples if s.t_s >= after and test(s)), None)


def _figures(
    samples: list[Sample],
    emulator: KedaEmulator,
    fleet: Fleet,
    traffic: TrafficGenerator,
    t0: float,
    config: DemoConfig,
) -> dict[str, Any]:
    last = samples[-1] if samples else None
    first_push = None if traffic.first_push_s is None else round(traffic.first_push_s - t0, 3)
    peak = max((s.desired for s in samples), default=0)
    # The moment the last request finished: demand back at 0 for good after the traffic.
    drained = None
    for s in reversed(samples):
        if s.demand > 0:
            break
        drained = s.t_s
    drained = drained if drained is not None and drained >= config.duration_s * 0.5 else None
    first_replica = _first(samples, lambda s: s.desired > 0)
    first_ready = _first(samples, lambda s: s.ready > 0)
    at_peak = _first(samples, lambda s: s.desired == peak) if peak else None
    zero = _first(samples, lambda s: s.desired == 0, after=drained) if drained else None
    gone = (
        _first(samples, lambda s: s.desired + s.draining + s.starting + s.ready == 0, after=drained)
        if drained
        else None
    )

    def since(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 3)

    return {
        "duration_s": round(last.t_s, 3) if last else 0.0,
        "requests": {
            "pushed": last.pushed if last else 0,
            "completed": last.completed if last else 0,
            "queue_left": last.queue if last else 0,
            "inflight_left": last.inflight if last else 0,
            "lost": (last.pushed - last.completed - last.queue - last.inflight) if last else 0,
        },
        "replicas": {
            "peak": peak,
            "peak_ready": max((s.ready for s in samples), default=0),
            "pods_created": fleet.created,
            "pods_deleted": fleet.deleted,
            "scale_downs": sum(1 for a, b in itertools.pairwise(samples) if b.desired < a.desired),
        },
        "timing_s": {
            "first_request": first_push,
            "first_replica": first_replica,
            "first_ready": first_ready,
            "wake_up": since(first_replica, first_push),
            "first_request_to_ready": since(first_ready, first_push),
            "first_request_to_peak": since(at_peak, first_push),
            "demand_zero": drained,
            "zero_replicas": zero,
            "all_pods_gone": gone,
            "demand_zero_to_zero_replicas": since(zero, drained),
        },
        "scaler": {
            "rpc_rounds_failed": emulator.errors,
            "unary_calls": emulator.calls,
            "stream_pushes": emulator.pushes,
            "reasons_seen": sorted(set(s.reason for s in samples if s.reason)),
        },
    }


def _waits(client: redis.Redis) -> dict[str, float]:
    raw = client.lrange(queue.WAITS, 0, -1)
    if not raw:
        return {}
    waits = np.array([float(w) for w in raw])
    return {
        "p50_s": round(float(np.percentile(waits, 50)), 3),
        "p99_s": round(float(np.percentile(waits, 99)), 3),
        "max_s": round(float(waits.max()), 3),
    }
