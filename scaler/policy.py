"""The scaling decision: a pure function of signals and config.

No I/O, no clock reads, no globals: the gRPC service, the tests (and later the
simulator) call the same `decide`. KEDA needs two answers from one decision, so
they can never disagree: the metric value for the HPA (GetMetrics) and whether
the target is active at all (IsActive / StreamIsActive).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scaler.signals import Signals
from scaler.target_config import TargetConfig


class Reason(StrEnum):
    """Why a decision came out as it did; bounded, so it can be a metric label."""

    ACTIVE = "active"  # demand above the activation threshold
    IDLE = "idle"  # demand at or below the activation threshold


@dataclass(frozen=True)
class Decision:
    metric_value: float  # TOTAL demand; the HPA divides by targetConcurrency per replica
    active: bool
    reason: Reason
    detail: str  # the reason with its numbers, for the debug log


def decide(signals: Signals, config: TargetConfig) -> Decision:
    """Report total demand; active when it exceeds the activation threshold.

    Worked example: 3 pods with 5 + 7 + 4 in flight, 2 waiting inside Triton and
    12 in the Redis queue give demand 30; with targetConcurrency 8 the HPA asks for
    ceil(30 / 8) = 4 replicas, and with activationThreshold 0 the target is active.
    """
    demand = signals.demand
    active = demand > config.activation_threshold
    reason = Reason.ACTIVE if active else Reason.IDLE
    relation = ">" if active else "<="
    detail = (
        f"demand {demand:g} (queue {signals.queue_depth:g}, inflight {signals.inflight:g}, "
        f"waiting {signals.waiting:g}) {relation} activationThreshold "
        f"{config.activation_threshold:g}"
    )
    return Decision(metric_value=demand, active=active, reason=reason, detail=detail)
