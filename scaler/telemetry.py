"""Every Prometheus instrument the scaler exports, on a registry passed in.

Units are in the names, counters end in `_total`. Per-target series are labelled
by namespace and ScaledObject (one series per ScaledObject); other labels take
values from small fixed sets (RPC method, gRPC status code, decision reason).
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scaler.policy import Decision
from scaler.signals import Signals
from scaler.target_config import TargetConfig

_TARGET = ("namespace", "scaled_object")
# gRPC answers from a local Redis take well under a millisecond; the top buckets
# catch a slow or unreachable Redis against KEDA's ~3 s budget.
_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# A GPU LLM replica takes 30-120 s from pod start to ready (image pull, weights load);
# a cached image and a small model, a few seconds; a first pull of a large one, minutes.
_COLD_START_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1800)


class ScalerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.demand = Gauge(
            "llm_scaler_demand_requests",
            "Total concurrency demand of the target: in flight + waiting in pods + queued",
            _TARGET,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "llm_scaler_queue_depth_requests",
            "Requests waiting in the target's Redis queue",
            _TARGET,
            registry=registry,
        )
        self.pods_reported = Gauge(
            "llm_scaler_pods_reported", "Pods with a fresh report", _TARGET, registry=registry
        )
        self.pods_ready = Gauge(
            "llm_scaler_pods_ready", "Pods reporting ready", _TARGET, registry=registry
        )
        self.metric_value = Gauge(
            "llm_scaler_metric_value_requests",
            "Metric value last returned to KEDA for the target",
            _TARGET,
            registry=registry,
        )
        self.active = Gauge(
            "llm_scaler_active",
            "1 when the target was last decided active",
            _TARGET,
            registry=registry,
        )
        self.decisions = Counter(
            "llm_scaler_decisions_total",
            "Decisions made, by reason",
            ("reason",),
            registry=registry,
        )
        self.stale_reports_dropped = Counter(
            "llm_scaler_stale_reports_dropped_total",
            "Pod reports dropped for being older than staleAfterSeconds",
            _TARGET,
            registry=registry,
        )
        self.invalid_reports = Gauge(
            "llm_scaler_invalid_reports",
            "Pod reports ignored in the last read for breaking the report contract",
            _TARGET,
            registry=registry,
        )
        self.rpc_requests = Counter(
            "llm_scaler_rpc_requests_total",
            "gRPC calls answered, by method and status code",
            ("method", "code"),
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "llm_scaler_rpc_duration_seconds",
            "Time to answer a unary gRPC call",
            ("method",),
            buckets=_RPC_BUCKETS,
            registry=registry,
        )
        self.streams_open = Gauge(
            "llm_scaler_streams_open",
            "Server streams (StreamIsActive, StreamMetricSpec) open now",
            ("method",),
            registry=registry,
        )
        self.redis_errors = Counter(
            "llm_scaler_redis_errors_total",
            "Reads that failed, by kind (unavailable, queue, invalid_reports)",
            ("kind",),
            registry=registry,
        )
        self.cold_start = Histogram(
            "llm_scaler_cold_start_seconds",
            "Pod start (status.startTime) to Ready (the condition's lastTransitionTime), "
            "once per pod seen starting by the pod watch, by the target it reports under",
            ("namespace", "target"),
            buckets=_COLD_START_BUCKETS,
            registry=registry,
        )
        self.pod_watch_errors = Counter(
            "llm_scaler_pod_watch_errors_total",
            "Pod watch failures, by kind (config, list, watch, redis); answers are unaffected, "
            "reports of gone pods then age out at staleAfterSeconds",
            ("kind",),
            registry=registry,
        )
        self._series: dict[tuple[str, str], _TargetSeries] = {}
        self.redis_last_success = Gauge(
            "llm_scaler_redis_last_success_timestamp_seconds",
            "Unix time of the last successful Redis read or ping",
            registry=registry,
        )

    def record_decision(self, config: TargetConfig, signals: Signals, decision: Decision) -> None:
        target = self._target_series((config.namespace, config.scaled_object))
        target.demand.set(signals.demand)
        target.queue_depth.set(signals.queue_depth)
        target.pods_reported.set(signals.pods_reported)
        target.pods_ready.set(signals.pods_ready)
        target.metric_value.set(decision.metric_value)
        target.active.set(1 if decision.active else 0)
        target.invalid_reports.set(signals.invalid_reports)
        if signals.stale_dropped:
            target.stale_reports_dropped.inc(signals.stale_dropped)
        self.decisions.labels(decision.reason.value).inc()

    def _target_series(self, target: tuple[str, str]) -> _TargetSeries:
        # `labels()` looks a child up under a lock, seven times a decision: found once
        # instead. Bounded as the registry is: a target's series live as long as it does.
        series = self._series.get(target)
        if series is None:
            series = _TargetSeries(
                demand=self.demand.labels(*target),
                queue_depth=self.queue_depth.labels(*target),
                pods_reported=self.pods_reported.labels(*target),
                pods_ready=self.pods_ready.labels(*target),
                metric_value=self.metric_value.labels(*target),
                active=self.active.labels(*target),
                invalid_reports=self.invalid_reports.labels(*target),
                stale_reports_dropped=self.stale_reports_dropped.labels(*target),
            )
            self._series[target] = series
        return series


class _TargetSeries(NamedTuple):
    demand: Gauge
    queue_depth: Gauge
    pods_reported: Gauge
    pods_ready: Gauge
    metric_value: Gauge
    active: Gauge
    invalid_reports: Gauge
    stale_reports_dropped: Counter
