"""What a run measured, for summary.json: the books, latencies, the fleet against the need.

Read off the samples (every 0.25 s), the traffic generator's outcomes and the gateway's own
counters, so the checks of issue 24 and issue 23 can be read off one run:

- the books, the client's (sent = answered + errors by reason; `unanswered` must be 0) and
  the gateway's (accepted = answered + failed; refused apart), and what the streams still
  hold at the end;
- p50/p99 of the wait (sent to the engine starting it) and of the latency (sent to answer);
- the fleet against the need from three cold starts after the wake to the traffic's end:
  ready replicas / ceil(demand / (targetConcurrency x targetUtilization)) per sample, its
  maximum and mean, and the same with the demand averaged over the cold start before each
  sample. The need is at least 1 while the traffic runs (a sample that happens to catch no
  request in the system does not make one ready replica infinitely many);
- the time from the traffic's end (the last request sent) to zero replicas, beside the
  budget scaleToZeroDelaySeconds + cooldownPeriod.
"""

from __future__ import annotations

import itertools
import math
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from scaler.demo.emulator import KedaEmulator
from scaler.demo.fleet import Fleet
from scaler.demo.timeline import Sample
from scaler.demo.traffic import TrafficGenerator

# The gateway's counters (gateway.telemetry), summed over their labels but the one kept.
_GATEWAY_COUNTERS = {
    "accepted": ("llm_gateway_requests_accepted_total", None),
    "answered": ("llm_gateway_requests_answered_total", "status_class"),
    "failed": ("llm_gateway_requests_failed_total", "reason"),
    "refused": ("llm_gateway_requests_refused_total", "reason"),
}


def gateway_books(metrics_url: str) -> dict[str, Any]:
    """The gateway's books from its /metrics; {"error": ...} when it cannot be read."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as page:
            text = page.read().decode()
    except OSError as exc:
        return {"error": f"could not read {metrics_url}: {exc}"}
    totals: dict[str, float] = {}
    by_label: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            for label_name, value in sample.labels.items():
                key = (sample.name, value) if label_name != "target" else ("", "")
                by_label[key] = by_label.get(key, 0.0) + sample.value
    books: dict[str, Any] = {}
    for name, (metric, label) in _GATEWAY_COUNTERS.items():
        if label is None:
            books[name] = int(totals.get(metric, 0))
        else:
            books[name] = {v: int(n) for (m, v), n in sorted(by_label.items()) if m == metric and n}
    books["inflight_left"] = int(totals.get("llm_gateway_inflight_requests", 0))
    return books


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.array(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 4),
        "p99": round(float(np.percentile(array, 99)), 4),
        "max": round(float(array.max()), 4),
    }


def _first(
    samples: list[Sample], test: Callable[[Sample], bool], after: float = -math.inf
) -> float | None:
    return next((s.t_s for s in samples if s.t_s >= after and test(s)), None)


def _since(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def fleet_vs_need(
    samples: list[Sample],
    start_s: float | None,
    end_s: float | None,
    replica_target: float,
    smooth_s: float,
) -> dict[str, Any]:
    """Ready replicas against ceil(demand / replica_target) over [start_s; end_s]: per sample,
    and with the demand averaged over the `smooth_s` before each sample (a cold start: what
    a fleet can follow at all; a 0.25 s sample of a Poisson stream swings by its root)."""
    if start_s is None or end_s is None:
        return {"samples": 0}
    window = [s for s in samples if start_s <= s.t_s <= end_s]
    if not window:
        return {"from_s": round(start_s, 3), "to_s": round(end_s, 3), "samples": 0}

    def need(demand: float) -> int:
        return max(1, math.ceil(demand / replica_target))

    ratios = [s.ready / need(s.demand) for s in window]
    smoothed = []
    for s in window:
        recent = [x.demand for x in samples if s.t_s - smooth_s < x.t_s <= s.t_s]
        smoothed.append(s.ready / need(float(np.mean(recent))))
    return {
        "from_s": round(start_s, 3),
        "to_s": round(end_s, 3),
        "samples": len(window),
        "demand_per_replica": replica_target,
        "max_ratio": round(max(ratios), 3),
        "mean_ratio": round(float(np.mean(ratios)), 3),
        "mean_need": round(float(np.mean([need(s.demand) for s in window])), 2),
        "mean_ready": round(float(np.mean([s.ready for s in window])), 2),
        "smoothed": {
            "demand_mean_over_s": smooth_s,
            "max_ratio": round(max(smoothed), 3),
            "mean_ratio": round(float(np.mean(smoothed)), 3),
        },
    }


def figures(
    samples: list[Sample],
    emulator: KedaEmulator,
    fleet: Fleet,
    traffic: TrafficGenerator,
    t0: float,
    duration_s: float,
    cold_start_s: float,
    replica_target: float,
    zero_budget_s: float | None,
) -> dict[str, Any]:
    last = samples[-1] if samples else None
    first_send = None if traffic.first_send_s is None else round(traffic.first_send_s - t0, 3)
    last_send = None if traffic.last_send_s is None else round(traffic.last_send_s - t0, 3)
    peak = max((s.desired for s in samples), default=0)
    # The moment the last request finished: demand back at 0 for good after the traffic.
    drained = None
    for s in reversed(samples):
        if s.demand > 0:
            break
        drained = s.t_s
    drained = drained if drained is not None and drained >= duration_s * 0.5 else None
    first_replica = _first(samples, lambda s: s.desired > 0)
    first_ready = _first(samples, lambda s: s.ready > 0)
    at_peak = _first(samples, lambda s: s.desired == peak) if peak else None
    zero = _first(samples, lambda s: s.desired == 0, after=drained) if drained else None
    gone = (
        _first(samples, lambda s: s.desired + s.draining + s.starting + s.ready == 0, after=drained)
        if drained
        else None
    )
    errors = dict(sorted(traffic.errors.items()))
    outcomes = list(traffic.outcomes)
    answered = [o for o in outcomes if not o.reason]
    to_zero = _since(zero, last_send)
    need_from = None if first_replica is None else first_replica + 3 * cold_start_s
    return {
        "duration_s": round(last.t_s, 3) if last else 0.0,
        "books": {
            "sent": traffic.sent,
            "answered": len(answered),
            "errors": errors,
            "unanswered": traffic.sent - len(answered) - sum(errors.values()),
            "error_examples": dict(sorted(traffic.error_examples.items())),
        },
        "streams_left": {
            "waiting": last.queue if last else 0,
            "inflight": last.inflight if last else 0,
        },
        "latency_s": percentiles([o.latency_s for o in answered]),
        "wait_s": percentiles([o.wait_s for o in answered if o.wait_s is not None]),
        "replicas": {
            "peak": peak,
            "peak_ready": max((s.ready for s in samples), default=0),
            "pods_created": fleet.created,
            "pods_deleted": fleet.deleted,
            "scale_downs": sum(1 for a, b in itertools.pairwise(samples) if b.desired < a.desired),
        },
        "fleet_vs_need": fleet_vs_need(
            samples, need_from, last_send, replica_target, smooth_s=cold_start_s
        ),
        "timing_s": {
            "first_request": first_send,
            "first_replica": first_replica,
            "first_ready": first_ready,
            "wake_up": _since(first_replica, first_send),
            "first_request_to_ready": _since(first_ready, first_send),
            "first_request_to_peak": _since(at_peak, first_send),
            "traffic_end": last_send,
            "demand_zero": drained,
            "zero_replicas": zero,
            "all_pods_gone": gone,
            "demand_zero_to_zero_replicas": _since(zero, drained),
            "traffic_end_to_zero_replicas": to_zero,
            "zero_budget": zero_budget_s,
            "zero_within_budget": (
                None if to_zero is None or zero_budget_s is None else to_zero <= zero_budget_s
            ),
        },
        "scaler": {
            "rpc_rounds_failed": emulator.errors,
            "unary_calls": emulator.calls,
            "stream_pushes": emulator.pushes,
            "reasons_seen": sorted(set(s.reason for s in samples if s.reason)),
        },
    }
