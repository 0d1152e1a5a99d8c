"""The per-ScaledObject series: a custom collector that forgets targets KEDA stopped asking about.

A ScaledObject deleted or renamed is never announced to an external scaler: KEDA just
stops calling. Its series go when it has not been decided on for `idle_s` (every
GetMetrics, IsActive and open StreamIsActive re-check decides), and at most
`max_targets` are kept, the least recently decided going first, so that neither
memory nor the scrape grows with every ScaledObject ever seen. Each removal is
counted in `llm_scaler_target_series_evicted_total` by cause (idle, limit).

The latest values are kept per target, and the exposition is built from them at
scrape time, in the scrape's worker thread: hence the lock.
"""

from __future__ import annotations

import collections
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scaler.clock import MONOTONIC, Clock

LABELS = ("namespace", "scaled_object")
Target = tuple[str, str]


@dataclass(slots=True)
class TargetValues:
    """What the latest decision for one ScaledObject exported."""

    demand: float
    queue_depth: float
    pods_reported: int
    pods_ready: int
    metric_value: float
    active: bool
    reason: str
    invalid_reports: int
    target_name: str  # the pods' report target (targetName): the cold-start series' label
    service_s: float = 0.0  # the service time the decision planned with


@dataclass(slots=True)
class _Entry:
    values: TargetValues
    decided_at: float  # monotonic
    stale_dropped: float  # counter: reports dropped as stale since the series appeared


class TargetSeries(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        idle_s: float,
        max_targets: int,
        on_evicted: Callable[[Target, TargetValues], None] = lambda target, values: None,
        monotonic: Clock = MONOTONIC,
    ) -> None:
        self._idle_s = idle_s
        self._max_targets = max_targets
        self._on_evicted = on_evicted
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: OrderedDict[Target, _Entry] = OrderedDict()  # least recent first
        # ScaledObjects per (namespace, report target): a report target's cold starts stay
        # while any ScaledObject reporting under it has series.
        self._report_targets: collections.Counter[Target] = collections.Counter()
        # Registered before the counter, so a scrape counts the evictions it makes itself.
        registry.register(self)
        self.evicted = Counter(
            "llm_scaler_target_series_evicted_total",
            "ScaledObjects whose series were removed, by cause: idle (not decided on for "
            "SERIES_IDLE_SECONDS) or limit (MAX_TARGET_SERIES reached, least recent first)",
            ("cause",),
            registry=registry,
        )
        for cause in ("idle", "limit"):
            self.evicted.labels(cause)

    def record(self, target: Target, values: TargetValues, stale_dropped: int) -> None:
        now = self._monotonic.now()
        gone: list[tuple[Target, TargetValues]] = []
        with self._lock:
            entry = self._entries.get(target)
            if entry is None:
                self._entries[target] = _Entry(values, now, float(stale_dropped))
                self._report_targets[(target[0], values.target_name)] += 1
            else:
                if entry.values.target_name != values.target_name:
                    self._drop_report_target(target, entry.values)
                    self._report_targets[(target[0], values.target_name)] += 1
                entry.values = values
                entry.decided_at = now
                entry.stale_dropped += stale_dropped
                self._entries.move_to_end(target)
            gone += self._evict_idle(now)
            while len(self._entries) > self._max_targets:
                oldest, dropped = self._entries.popitem(last=False)
                self._drop_report_target(oldest, dropped.values)
                gone.append((oldest, dropped.values))
                self.evicted.labels("limit").inc()
        self._report(gone)

    def has_report_target(self, namespace: str, target_name: str) -> bool:
        with self._lock:
            return (namespace, target_name) in self._report_targets

    def _drop_report_target(self, target: Target, values: TargetValues) -> None:
        key = (target[0], values.target_name)
        self._report_targets[key] -= 1
        if self._report_targets[key] <= 0:
            del self._report_targets[key]

    def __len__(self) -> int:
        return len(self._entries)

    def _evict_idle(self, now: float) -> list[tuple[Target, TargetValues]]:
        gone = []
        while self._entries:
            oldest, entry = next(iter(self._entries.items()))
            if now - entry.decided_at <= self._idle_s:
                break
            del self._entries[oldest]
            self._drop_report_target(oldest, entry.values)
            gone.append((oldest, entry.values))
            self.evicted.labels("idle").inc()
        return gone

    def _report(self, gone: list[tuple[Target, TargetValues]]) -> None:
        for target, values in gone:
            self._on_evicted(target, values)

    def describe(self) -> Iterator[Metric]:
        return iter(_Families.empty())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            gone = self._evict_idle(self._monotonic.now())
            rows = [
                (key, entry.values, entry.stale_dropped) for key, entry in self._entries.items()
            ]
        self._report(gone)
        f = _Families.empty()
        for key, v, stale_dropped in rows:
            labels = list(key)
            f.demand.add_metric(labels, v.demand)
            f.queue_depth.add_metric(labels, v.queue_depth)
            f.pods_reported.add_metric(labels, v.pods_reported)
            f.pods_ready.add_metric(labels, v.pods_ready)
            f.metric_value.add_metric(labels, v.metric_value)
            f.active.add_metric(labels, 1 if v.active else 0)
            f.reason.add_metric([*labels, v.reason], 1)
            f.invalid_reports.add_metric(labels, v.invalid_reports)
            f.service.add_metric(labels, v.service_s)
            f.stale_dropped.add_metric(labels, stale_dropped)
        f.targets.add_metric([], len(rows))
        return iter(f)


class _Families(NamedTuple):
    demand: GaugeMetricFamily
    queue_depth: GaugeMetricFamily
    pods_reported: GaugeMetricFamily
    pods_ready: GaugeMetricFamily
    metric_value: GaugeMetricFamily
    active: GaugeMetricFamily
    reason: GaugeMetricFamily
    invalid_reports: GaugeMetricFamily
    service: GaugeMetricFamily
    stale_dropped: CounterMetricFamily
    targets: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _Families:
        def gauge(name: str, text: str, labels: tuple[str, ...] = LABELS) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=labels)

        return cls(
            demand=gauge(
                "llm_scaler_demand_requests",
                "Total concurrency demand of the target: in flight + waiting in pods + queued",
            ),
            queue_depth=gauge(
                "llm_scaler_queue_depth_requests", "Requests waiting in the target's Redis queue"
            ),
            pods_reported=gauge("llm_scaler_pods_reported", "Pods with a fresh report"),
            pods_ready=gauge("llm_scaler_pods_ready", "Pods reporting ready"),
            metric_value=gauge(
                "llm_scaler_metric_value_requests",
                "Metric value last returned to KEDA for the target",
            ),
            active=gauge("llm_scaler_active", "1 when the target was last decided active"),
            reason=gauge(
                "llm_scaler_decision_reason",
                "1, labelled with the reason of the target's latest decision",
                (*LABELS, "reason"),
            ),
            invalid_reports=gauge(
                "llm_scaler_invalid_reports",
                "Pod reports ignored in the last read for breaking the report contract",
            ),
            service=gauge(
                "llm_scaler_service_seconds",
                "Service time the decision planned with: serviceSeconds, or the mean the pods' "
                "completions taught if longer",
            ),
            stale_dropped=CounterMetricFamily(
                "llm_scaler_stale_reports_dropped",
                "Pod reports dropped for being older than staleAfterSeconds",
                labels=LABELS,
            ),
            targets=gauge("llm_scaler_target_series", "ScaledObjects with series now", ()),
        )
