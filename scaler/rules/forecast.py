"""The capacity needed when capacity ordered now is ready: one cold start from now.

Capacity the HPA orders at t serves from t + C (C: the cold start), so the metric sizes
for the demand that will exist then, not for what is queued now. The derivation and the
worked examples are in docs/decision.md ("1. Size for when capacity is ready"); in short:

1. Offered load (`offered_load`: arrival rate x service time s), over the last cold start:
       offered = mean(in flight over C) + (N(t) - N(t - C)) x s / C
2. Backlog (`needed_slots`): the capacity K needed at C, with K_r slots ready, clears the
   backlog B within T = max(C, s) (`planning_horizon_s`) of new capacity being ready:
       K = offered + max(0, (B x s + (offered - K_r) x C) / T)
   Starting pods are part of K, not counted as draining. With no cold start (C = 0) the
   need is everything in the system now (`scaler.policy`).
3. Waking from zero, the offered load is measured over the traffic's own age
   (`waking_span_s`), and the backlog is to be cleared within that age.
4. Pods still starting are kept while requests wait (`kept_replicas`).
"""

from __future__ import annotations


def planning_horizon_s(cold_start_s: float, service_s: float) -> float:
    """T: how long new capacity takes to clear a backlog, and the span the offered load is
    measured over: a cold start, never shorter than one service time."""
    return max(cold_start_s, service_s)


def waking_span_s(busy_for_s: float, service_s: float, horizon_s: float) -> float:
    """The span the offered load is measured over while no replica is ready: the time the
    traffic has been there (the silence before says nothing of its rate), at least one
    service time, at most the usual span."""
    return min(horizon_s, max(service_s, busy_for_s))


def kept_replicas(backlog: float, pods_ready: int, pods_starting: int) -> int:
    """Replicas not to release: all of them while requests wait and some are still starting
    (item 4), else none."""
    return pods_ready + pods_starting if backlog > 0 and pods_starting > 0 else 0


def offered_load(
    mean_inflight: float,
    in_system_now: float,
    in_system_then: float,
    service_s: float,
    horizon_s: float,
) -> float:
    """lambda x s over the last `horizon_s`, from requests in the system now and then."""
    grown = in_system_now - in_system_then
    return max(0.0, mean_inflight + grown * service_s / horizon_s)


def needed_slots(
    offered: float,
    backlog: float,
    ready_slots: float,
    service_s: float,
    cold_start_s: float,
    clear_s: float | None = None,
) -> float:
    """Slots needed one cold start from now: the offered load, plus what the ready slots
    leave of the backlog by the time new capacity has had T (`clear_s`, by default a cold
    start, never less than a service time) to clear it."""
    clear_s = planning_horizon_s(cold_start_s if clear_s is None else clear_s, service_s)
    shortfall = backlog * service_s + (offered - ready_slots) * cold_start_s
    return offered + max(0.0, shortfall / clear_s)
