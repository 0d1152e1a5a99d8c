"""Every Prometheus instrument the scaler exports, on a registry passed in.

Units are in the names, counters end in `_total`. Per-target series are labelled
by namespace and ScaledObject and bounded (scaler.target_series; the replica-concurrency
gauge is removed with them); other labels take values from small fixed sets (RPC method,
gRPC status code, decision reason, the concurrency's source).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scaler.clock import MONOTONIC, Clock
from scaler.policy import Decision, service_s
from scaler.signals import Signals
from scaler.target_config import TargetConfig
from scaler.target_series import Target, TargetSeries, TargetValues

# gRPC answers from a local Redis take well under a millisecond; the top buckets
# catch a slow or unreachable Redis against KEDA's ~3 s budget.
_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# A GPU LLM replica takes 30-120 s from pod start to ready (image pull, weights load);
# a cached image and a small model, a few seconds; a first pull of a large one, minutes.
_COLD_START_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1800)
# llm_scaler_replica_concurrency's source: learned from token time, or targetConcurrency.
_SOURCES = ("learned", "targetConcurrency")


class ScalerMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        series_idle_s: float = 300.0,
        max_target_series: int = 10_000,
        monotonic: Clock = MONOTONIC,
    ) -> None:
        """`series_idle_s`, `max_target_series`: the bounds of the per-target series
        (scaler.target_series); `monotonic`: their clock, injected by tests."""
        self.targets = TargetSeries(
            registry, series_idle_s, max_target_series, self._forget, monotonic
        )
        self.decisions = Counter(
            "llm_scaler_decisions_total",
            "Decisions made, by reason",
            ("reason",),
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
        self.replica_concurrency = Gauge(
            "llm_scaler_replica_concurrency",
            "Concurrency one replica was sized for by the latest decision, by source: learned "
            "(from the pods' token time within tokenLatencyMs) or targetConcurrency",
            ("namespace", "scaled_object", "source"),
            registry=registry,
        )
        self.redis_last_success = Gauge(
            "llm_scaler_redis_last_success_timestamp_seconds",
            "Unix time of the last successful Redis read or ping",
            registry=registry,
        )

    def record_decision(self, config: TargetConfig, signals: Signals, decision: Decision) -> None:
        values = TargetValues(
            demand=signals.demand,
            queue_depth=signals.queue_depth,
            pods_reported=signals.pods_reported,
            pods_ready=signals.pods_ready,
            metric_value=decision.metric_value,
            active=decision.active,
            reason=decision.reason.value,
            invalid_reports=signals.invalid_reports,
            target_name=config.target_name,
            service_s=service_s(signals, config),
        )
        target = (config.namespace, config.scaled_object)
        self.targets.record(target, values, signals.stale_dropped)
        self.decisions.labels(decision.reason.value).inc()
        source, other = _SOURCES if decision.concurrency_learned else _SOURCES[::-1]
        self.replica_concurrency.remove(*target, other)
        self.replica_concurrency.labels(*target, source).set(decision.replica_concurrency)

    def observe_cold_start(self, namespace: str, target_name: str, seconds: float) -> None:
        """Only for a target that has series: its cold starts go with them."""
        if self.targets.has_report_target(namespace, target_name):
            self.cold_start.labels(namespace, target_name).observe(seconds)

    def _forget(self, target: Target, values: TargetValues) -> None:
        for source in _SOURCES:
            self.replica_concurrency.remove(*target, source)
        # Another ScaledObject may share the pods' report target: then its cold starts stay.
        if not self.targets.has_report_target(target[0], values.target_name):
            self.cold_start.remove(target[0], values.target_name)
