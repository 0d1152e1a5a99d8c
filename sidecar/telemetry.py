"""Every Prometheus instrument the sidecar exports, on a registry passed in.

Units are in the names, counters end in `_total`. There are no per-request or
per-model labels: one sidecar serves one pod, and `stage` takes its values from a
fixed set (triton, metrics, redis).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

# Where a tick can fail; bounded, so it can be a label.
FAILURE_STAGES = ("triton", "metrics", "redis")


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reports_written = Counter(
            "llm_sidecar_reports_written_total",
            "Pod reports written to Redis",
            registry=registry,
        )
        self.failures = Counter(
            "llm_sidecar_failures_total",
            "Ticks that wrote no report because a stage failed: triton (readiness call), "
            "metrics (scrape or parse), redis (write)",
            ("stage",),
            registry=registry,
        )
        for stage in FAILURE_STAGES:  # exported as 0 from the start, so rates work at once
            self.failures.labels(stage)
        self.inflight = Gauge(
            "llm_sidecar_inflight_requests",
            "Requests executing in the engine, as last read from Triton",
            registry=registry,
        )
        self.waiting = Gauge(
            "llm_sidecar_waiting_requests",
            "Requests waiting inside Triton / the engine, as last read",
            registry=registry,
        )
        self.capacity = Gauge(
            "llm_sidecar_capacity_requests",
            "Concurrent requests the pod can execute, as last reported (0: unknown)",
            registry=registry,
        )
        self.kv_cache_utilization = Gauge(
            "llm_sidecar_kv_cache_utilization_ratio",
            "KV-cache blocks in use, in [0; 1], as last read (TensorRT-LLM only)",
            registry=registry,
        )
        self.ready = Gauge(
            "llm_sidecar_triton_ready",
            "1 when Triton and the configured models were ready at the last check",
            registry=registry,
        )
        self.cold_start = Gauge(
            "llm_sidecar_cold_start_seconds",
            "Measured time from server start to model-ready (set once per start)",
            registry=registry,
        )
        self.cold_starts = Counter(
            "llm_sidecar_cold_starts_total",
            "Starts measured from not ready to ready",
            registry=registry,
        )
        self.deletion_cost = Gauge(
            "llm_sidecar_deletion_cost",
            "The pod's controller.kubernetes.io/pod-deletion-cost as last patched or read "
            "(requests it held, rounded)",
            registry=registry,
        )
        self.deletion_cost_patches = Counter(
            "llm_sidecar_deletion_cost_patches_total",
            "Updates of the pod-deletion-cost annotation, by result (ok, failed)",
            ("result",),
            registry=registry,
        )
        self.last_report = Gauge(
            "llm_sidecar_last_report_timestamp_seconds",
            "Unix time (Redis's clock) the last report was stamped with",
            registry=registry,
        )


# Why a taken request was not run (sidecar.worker_checks.Verdict, less "run"); bounded.
SKIP_REASONS = ("malformed", "gateway_gone", "cancelled", "streamed", "max_deliveries", "deadline")
# How a request the worker ran was answered; bounded.
OUTCOMES = ("ok", "engine_error", "failed")


class WorkerMetrics:
    """The in-pod worker's instruments (registered only when the worker is on)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.taken = Counter(
            "llm_sidecar_worker_taken_total",
            "Queued requests this pod took (new and reclaimed)",
            registry=registry,
        )
        self.reclaimed = Counter(
            "llm_sidecar_worker_reclaimed_total",
            "Requests taken over from a pod that stopped (XAUTOCLAIM)",
            registry=registry,
        )
        self.skipped = Counter(
            "llm_sidecar_worker_skipped_total",
            "Requests taken and not run, by reason: malformed, gateway_gone, cancelled, "
            "streamed (not replayed), max_deliveries, deadline",
            ("reason",),
            registry=registry,
        )
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        self.answered = Counter(
            "llm_sidecar_worker_answered_total",
            "Requests run and answered, by outcome: ok (engine 2xx), engine_error (the "
            "engine's own 4xx/5xx), failed (the worker's error reply: engine unreachable)",
            ("outcome",),
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.answered.labels(outcome)
        self.inflight = Gauge(
            "llm_sidecar_worker_inflight_requests",
            "Requests taken and not yet answered",
            registry=registry,
        )
        self.slots = Gauge(
            "llm_sidecar_worker_slots_requests",
            "Requests the worker runs at once",
            registry=registry,
        )
        self.redis_errors = Counter(
            "llm_sidecar_worker_redis_errors_total",
            "Worker calls to Redis that failed (retried after a pause)",
            registry=registry,
        )
