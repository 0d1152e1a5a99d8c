"""The demo's orchestration: start everything, run the loop, stop everything, report.

Processes (each in its own process group, through `scaler.demo.guard`):
redis-server; two `python -m scaler serve` replicas; one `python -m gateway`; and one
`python -m scaler.demo.pod` per replica KEDA/HPA set, each a Triton stand-in with its own
`python -m sidecar` (WORKER=on). The request path is production's: the traffic
generator's HTTP requests -> the gateway -> the target's Redis streams -> the pods'
workers -> the stand-ins, and the answers back the same way. In this process: the
traffic generator (its own thread and event loop), the KEDA/HPA emulator
(`scaler.demo.emulator`: the stream on a thread, the polls on the main loop), the
emulated Deployment (`scaler.demo.fleet`), the view and the books. The main loop runs
every 0.1 s: pushes, polls and syncs that are due, pods created or deleted to match, a
sample every 0.25 s.

The run ends when the traffic is over and everything is back at zero (every request
answered or failed by name, nothing in the streams, zero replicas, every pod process
gone), or after `tail_s` more seconds, or on Ctrl-C / SIGTERM. Whichever way it ends,
the traffic generator stops (what it still waits for is counted `unanswered_at_stop`),
the gateway's books are read, and the `finally` stops every child (pods, then the
gateway, then scalers, then Redis: SIGTERM to each group, SIGKILL after the grace
period) before the summary, the timeline and the plot are written under `out`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import redis

from scaler._generated import externalscaler_pb2 as pb
from scaler.demo.emulator import KedaEmulator, keda_config
from scaler.demo.figures import figures, gateway_books
from scaler.demo.fleet import Fleet
from scaler.demo.plot import plot
from scaler.demo.processes import Flag, Stopped, start_gateway, start_redis, start_scalers
from scaler.demo.supervise import DEMO_RUN_ENV, Supervisor
from scaler.demo.target import NAMESPACE, TARGET, StreamReader
from scaler.demo.timeline import Sample, write_csv
from scaler.demo.traffic import TrafficGenerator, TrafficPlan, plan
from scaler.demo.view import TerminalView
from scaler.simulator.trace import Trace, load_csv, make_trace
from scaler.target_config import parse_target_config

log = logging.getLogger("demo")

_TICK_S = 0.1
_SAMPLE_S = 0.25
_VIEW_S = 0.5

# Trigger metadata for the demo, shrunk to demo time (README "Local demo").
DEMO_METADATA = {
    "targetConcurrency": "8",
    # The gateway's streams of this target, every priority class (no queueKey).
    "queueType": "gateway",
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
    # The gateway's target: a request's deadline, and the waiting requests past which it 429s.
    request_timeout_s: float = 60.0
    queue_limit: int = 10_000
    out: Path = Path("build/demo")
    view: bool = True
    plot: bool = True


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
    replica_target = parse_target_config(NAMESPACE, TARGET, config.metadata).config.replica_target
    logs = config.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    run_id = os.environ.get(DEMO_RUN_ENV) or uuid.uuid4().hex  # a caller may choose it
    env = {**os.environ, DEMO_RUN_ENV: run_id, "PYTHONUNBUFFERED": "1"}
    parts = _Parts(Supervisor(logs, env))
    stop = Flag()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # no lock taken: safe in a signal handler

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    samples: list[Sample] = []
    outcome = "interrupted"
    measured: dict[str, Any] = {}
    try:
        started = _start(config, traffic_plan, parts, stop)
        view = TerminalView(_header(config, trace, traffic_plan)) if config.view else None
        t0, outcome = _loop(config, started, stop, view, samples)
        measured = _measure(config, started, samples, t0, replica_target)
    except Stopped:
        outcome = "interrupted"
    finally:
        parts.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return _report(config, outcome, run_id, trace, traffic_plan, measured, samples)


@dataclass
class _Parts:
    """What a run has started so far, closed in `close` whichever way the run ends: the
    traffic, the emulator, then every child process, then the Redis client."""

    supervisor: Supervisor
    traffic: TrafficGenerator | None = None
    emulator: KedaEmulator | None = None
    client: redis.Redis | None = None

    def close(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        if self.emulator is not None:
            self.emulator.close()
        self.supervisor.close()
        if self.client is not None:
            self.client.close()


@dataclass(frozen=True)
class _Started:
    """Everything the loop drives and reads, once started."""

    traffic: TrafficGenerator
    emulator: KedaEmulator
    fleet: Fleet
    streams: StreamReader
    reasons: _Reasons
    gateway_metrics_url: str


def _start(config: DemoConfig, traffic_plan: TrafficPlan, parts: _Parts, stop: Flag) -> _Started:
    """Redis, the scaler replicas, the gateway, the emulator and the traffic generator
    (neither running yet); each recorded in `parts` as soon as it exists, for its stop."""
    supervisor = parts.supervisor
    redis_url = start_redis(supervisor, stop)
    client = parts.client = redis.Redis.from_url(redis_url, socket_timeout=5)
    scalers = start_scalers(supervisor, redis_url, config.scaler_replicas, stop)
    gateway = start_gateway(
        supervisor, redis_url, config.request_timeout_s, config.queue_limit, stop
    )
    ref = pb.ScaledObjectRef(
        name=TARGET,
        namespace=NAMESPACE,
        scalerMetadata={"scalerAddress": "llm-scaler.llm-scaler:9090", **config.metadata},
    )
    emulator = parts.emulator = KedaEmulator(
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
    streams = StreamReader(client)
    reasons = _Reasons([f"http://127.0.0.1:{m}/metrics" for _, m in scalers])
    # The client gives up a little after the gateway's own deadline would have answered.
    traffic = parts.traffic = TrafficGenerator(
        traffic_plan, gateway.infer_url, config.request_timeout_s + 10
    )
    return _Started(traffic, emulator, fleet, streams, reasons, gateway.metrics_url)


def _loop(
    config: DemoConfig,
    started: _Started,
    stop: Flag,
    view: TerminalView | None,
    samples: list[Sample],
) -> tuple[float, str]:
    """Starts the emulator and the traffic, then every tick: polls, pods to match, a sample
    into `samples`, the view; until back at zero, timed out or stopped. Returns the start
    time (monotonic) and the outcome."""
    traffic, emulator, fleet = started.traffic, started.emulator, started.fleet
    emulator.start()
    t0 = time.monotonic()
    traffic.start()
    outcome = "interrupted"
    next_sample = next_view = 0.0
    while not stop.is_set():
        now = time.monotonic() - t0
        emulator.tick(now)
        fleet.scale_to(emulator.replicas)
        fleet.reap()
        if traffic.error is not None:
            raise RuntimeError("traffic generator failed") from traffic.error
        traffic_over = traffic.all_sent and now >= config.duration_s
        if now >= next_sample:
            next_sample = now + _SAMPLE_S
            samples.append(_sample(now, traffic, started.streams, emulator, fleet, started.reasons))
            s = samples[-1]
            settled = traffic.outstanding == 0 and s.demand == 0
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
    return t0, outcome


def _measure(
    config: DemoConfig, started: _Started, samples: list[Sample], t0: float, replica_target: float
) -> dict[str, Any]:
    """The run's figures and the gateway's books, once the traffic has stopped."""
    traffic = started.traffic
    traffic.stop()  # before the books: what is still outstanding is counted
    zero_budget_s = _zero_budget_s(config)
    measured = figures(
        samples, started.emulator, started.fleet, traffic, t0, config.duration_s,
        config.cold_start_s, replica_target, zero_budget_s,
    )  # fmt: skip
    measured["gateway_books"] = gateway_books(started.gateway_metrics_url)
    return measured


def _report(
    config: DemoConfig,
    outcome: str,
    run_id: str,
    trace: Trace,
    traffic_plan: TrafficPlan,
    measured: dict[str, Any],
    samples: list[Sample],
) -> dict[str, Any]:
    """The summary, written under `out` with the timeline and the plot; returned."""
    summary = {
        "outcome": outcome,
        "run_id": run_id,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "trace": trace.name,
        "trace_window_s": [traffic_plan.trace_start_s, traffic_plan.trace_end_s],
        "planned_requests": len(traffic_plan),
        **measured,
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


def _zero_budget_s(config: DemoConfig) -> float | None:
    """scaleToZeroDelaySeconds + cooldownPeriod, when the metadata sets the delay."""
    delay = config.metadata.get("scaleToZeroDelaySeconds")
    try:
        return None if delay is None else float(delay) + config.cooldown_period_s
    except ValueError:
        return None


def _pod_args(config: DemoConfig) -> list[str]:
    return [
        "--slots", str(config.slots),
        "--cold-start-s", str(config.cold_start_s),
        "--speedup", str(config.speedup),
        "--prefill-tps", str(config.prefill_tps),
        "--decode-ms", str(config.decode_ms),
    ]  # fmt: skip


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
    now: float,
    traffic: TrafficGenerator,
    streams: StreamReader,
    emulator: KedaEmulator,
    fleet: Fleet,
    reasons: _Reasons,
) -> Sample:
    load = streams.read()
    counts = fleet.counts()
    last = emulator.last
    return Sample(
        t_s=round(now, 3),
        sent=traffic.sent,
        answered=traffic.answered,
        errors=sum(traffic.errors.values()),
        queue=load.waiting,
        inflight=load.inflight,
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
