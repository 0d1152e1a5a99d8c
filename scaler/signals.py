"""What one read of Redis tells about a target: the load signals the policy decides on.

Plain frozen values, built from the pod reports and the queue depth; no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scaler.reports import PodReport


@dataclass(frozen=True)
class Signals:
    queue_depth: float  # requests waiting in the Redis queue, not yet taken by any pod
    inflight: float  # requests executing, summed over fresh pod reports
    waiting: float  # requests queued inside the pods' inference servers
    pods_reported: int  # fresh reports (ready or starting)
    pods_ready: int
    capacity_ready: float  # concurrent slots of ready pods
    capacity_starting: float  # slots of pods still starting: capacity on its way
    stale_dropped: int = 0  # reports dropped in this read for being older than staleAfterSeconds
    invalid_reports: int = 0  # reports ignored for not following the contract
    cold_start_s: float = 0.0  # longest cold start measured by a fresh report; 0: none reported

    @property
    def pods_starting(self) -> int:
        return self.pods_reported - self.pods_ready

    @property
    def demand(self) -> float:
        """Concurrency the target must serve: in flight + waiting in pods + queued in Redis."""
        return self.inflight + self.waiting + self.queue_depth


def aggregate(
    reports: Iterable[PodReport], queue_depth: float, stale_dropped: int = 0, invalid: int = 0
) -> Signals:
    inflight = waiting = capacity_ready = capacity_starting = cold_start = 0.0
    pods_reported = pods_ready = 0
    for report in reports:
        pods_reported += 1
        inflight += report.inflight
        cold_start = max(cold_start, report.cold_start_s or 0.0)
        waiting += report.waiting
        if report.ready:
            pods_ready += 1
            capacity_ready += report.capacity
        else:
            capacity_starting += report.capacity
    return Signals(
        queue_depth=queue_depth,
        inflight=inflight,
        waiting=waiting,
        pods_reported=pods_reported,
        pods_ready=pods_ready,
        capacity_ready=capacity_ready,
        capacity_starting=capacity_starting,
        stale_dropped=stale_dropped,
        invalid_reports=invalid,
        cold_start_s=cold_start,
    )
