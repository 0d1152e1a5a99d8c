"""The capacity needed when capacity ordered now is ready: one cold start from now.

Capacity the HPA orders at t serves from t + C (C: the cold start). So the
metric sizes for the demand that will exist then, not for what is queued now:

1. Offered load, lambda x s (arrival rate x service time: the concurrency the
   traffic brings), measured over the last cold start, the naive forecast for
   the next one. Arrivals over [t - C, t] are what entered the system and did
   not stay: N(t) - N(t - C) + completions, and completions over C are about
   mean(in flight) x C / s. So
       offered = mean(in flight over C) + (N(t) - N(t - C)) x s / C.
   A burst of 40 requests counts as 40 x s / C over the cold start that follows
   (3.3 at s 5 s, C 60 s), not as 40: capacity ordered for it arrives after it.
2. Backlog. The ready slots K_r serve from now on, what is ordered now (K in
   all) from C on. With the offered load going on, the backlog B is cleared
   within T = max(C, s) of new capacity being ready (one cold start: what is
   ordered later cannot help sooner; never less than a service time) iff
       B + lambda x (C + T) <= K_r x C / s + K x T / s,
   so the capacity K needed at C is
       K = offered + max(0, (B x s + (offered - K_r) x C) / T),
   which is offered + max(0, B x s / C + offered - K_r) for C >= s. With no
   cold start at all (C = 0) capacity is ready at once and needs no forecast:
   the need is everything in the system now (`scaler.policy`). Starting pods
   are not counted as draining: they are part of K, and counting them would
   let the order cancel itself once placed.
3. Waking from zero (nothing ready), the offered load is measured over the
   traffic's own age tau (`waking_span_s`), and the backlog when capacity
   comes ready (the queue now and what arrives during the cold start) is to be
   cleared within T = tau rather than a cold start: every request of it is
   already late, and so is every one that arrives before it is gone.
   `scaler.policy` orders on that but holds only the need over a whole cold
   start, so the first seconds of a burst are revised at the next poll rather
   than latched.
4. Pods still starting are kept while requests wait (`kept_replicas`): the
   forecast that says they are not needed is the uncertain part (a rate still
   rising, a service time longer than planned), a pod removed throws away the
   part of its cold start already paid, and one ordered again pays all of it.
   It also stops an order from cancelling itself when the first pod comes
   ready and the need switches from the waking form to the settled one.

Worked example (s 5 s, C 60 s, one ready replica of 8 slots, idle for the
last minute): a burst of 40 arrives; 8 start at once, 32 wait. Just after,
mean in flight over the minute ~0, so offered = 40 x 5 / 60 = 3.3 and K = 3.3 +
max(0, 32 x 5 / 60 + 3.3 - 8) = 3.3 + 0: the ready replica drains the burst
(32 x 5 / 8 = 20 s) long before a new one could start, so nothing is ordered.
The same 32 waiting with nothing ready (a wake from zero) settle at K = 3.3 +
2.7 + 3.3 = 9.3 slots (two replicas at 8 x 0.8 per replica): what the scale-down
window may hold; the need now, over the burst's few seconds (item 3), is far
higher until its age shows that nothing more came.
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
