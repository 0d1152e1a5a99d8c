"""Every Prometheus instrument the gateway exports, on a registry passed in.

The books balance per target: accepted (queued) = answered + failed + in flight, where
answered counts replies relayed from a pod by status class and failed counts named errors
after acceptance. Requests refused before they were queued (bad input, queue full, Redis
down) are counted apart, by reason. Labels are bounded: `target` takes the configured
targets' namespace/name (and "-" for requests that matched none), the others fixed sets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# After acceptance: why a request got no reply from a pod.
FAILURE_REASONS = ("deadline", "client_gone", "worker_error", "shutdown", "redis")
# Before acceptance: why it was never queued.
REFUSAL_REASONS = (
    "bad_json",
    "bad_header",
    "unknown_model",
    "too_large",
    "content_type",
    "binary_tensors",
    "queue_full",
    "redis",
    "shutting_down",
    "client_gone",  # went while its request was being queued (it gets a cancelled mark)
)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
NO_TARGET = "-"


def status_class(status: int) -> str:
    """An HTTP status as its class label: 2xx to 5xx."""
    return f"{min(max(status // 100, 2), 5)}xx"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, targets: list[str]) -> None:
        self.accepted = Counter(
            "llm_gateway_requests_accepted_total",
            "Requests put on a target's stream",
            ("target",),
            registry=registry,
        )
        self.answered = Counter(
            "llm_gateway_requests_answered_total",
            "Accepted requests answered with a pod's reply, by its status class",
            ("target", "status_class"),
            registry=registry,
        )
        self.failed = Counter(
            "llm_gateway_requests_failed_total",
            "Accepted requests ended with a named error instead of a pod's reply: deadline "
            "(504), client_gone (client disconnected), worker_error (a pod's error reply), "
            "shutdown (gateway stopping, 503), redis (lost while waiting)",
            ("target", "reason"),
            registry=registry,
        )
        self.refused = Counter(
            "llm_gateway_requests_refused_total",
            "Requests answered without being queued, by reason (bad input, queue_full: 429, "
            "redis: 503, shutting_down: 503, client_gone: went while being queued)",
            ("target", "reason"),
            registry=registry,
        )
        self.inflight = Gauge(
            "llm_gateway_inflight_requests",
            "Accepted requests waiting for or relaying their reply",
            registry=registry,
        )
        self.duration = Histogram(
            "llm_gateway_request_duration_seconds",
            "Time from a request's arrival to its last byte, accepted requests",
            ("target",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.redis_ok = Gauge(
            "llm_gateway_redis_last_success_timestamp_seconds",
            "Wall time of the last call Redis answered (liveness refresh or reply read)",
            registry=registry,
        )
        self.replies_ignored = Counter(
            "llm_gateway_replies_ignored_total",
            "Reply messages dropped: for no waiting request (it ended), from an attempt not "
            "followed, or a chunk already relayed",
            registry=registry,
        )
        # Exported as 0 from the start, so rates and the books work at once.
        for target in [*targets, NO_TARGET]:
            self.accepted.labels(target)
            for cls in STATUS_CLASSES:
                self.answered.labels(target, cls)
            for reason in FAILURE_REASONS:
                self.failed.labels(target, reason)
            for reason in REFUSAL_REASONS:
                self.refused.labels(target, reason)
