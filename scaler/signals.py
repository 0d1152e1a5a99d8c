"""What one read of Redis tells about a target: the load signals the policy decides on.

Plain frozen values; the read script sums the pod reports (scaler.report_reader.SUM_REPORTS_LUA)
and scaler.store builds these from its answer. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaler.token_curve import NOTHING_MEASURED, TokenCurve


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
    service_s: float = 0.0  # mean service time learned from the pods' completions; 0: none
    token_curve: TokenCurve = NOTHING_MEASURED  # token time by sequences decoded (`:tokens`)

    @property
    def pods_starting(self) -> int:
        return self.pods_reported - self.pods_ready

    @property
    def demand(self) -> float:
        """Concurrency the target must serve: in flight + waiting in pods + queued in Redis."""
        return self.inflight + self.waiting + self.queue_depth
