"""The scaling decision: a pure function of (signals, policy state, config, now).

No I/O, no clock reads, no globals: the gRPC service, the tests and the simulator
call the same `decide`. One decision gives KEDA both answers, so they cannot
disagree: the metric value for the HPA (GetMetrics) and whether the target is
active at all (IsActive / StreamIsActive).

What it does, in order:

1. Scale up at once, down only after a delay. The metric is the maximum demand
   over the last `scaleDownDelaySeconds` (`scaler.window`), so it follows demand
   upward within one poll and releases a replica only once demand has stayed low
   for the whole delay. The HPA turns it into replicas: desired = ceil(metric /
   replica_target), replica_target = targetConcurrency x targetUtilization.
2. Burst mode (Knative's panic mode, adapted). When the short-window demand
   exceeds `burstThreshold` x the committed capacity, the burst's peak is held
   (no scale-down at all) until no burst has been seen for a whole
   `scaleDownDelaySeconds`. Committed capacity counts pods that are still
   starting: they are capacity on its way. Without them every cold start would
   look like a burst (a queue builds while nobody serves it) and latch the peak,
   ordering replicas for a backlog the starting pods will take.
3. Scale to zero only after real silence. IsActive is true while demand exceeds
   `activationThreshold`, and stays true until demand has been exactly zero for
   `scaleToZeroDelaySeconds`, however low it was before.
4. SLO-aware mode (opt-in: `sloWaitSeconds` W set). A request waits only when
   every warm slot is busy. With K warm slots, each holding a request for a
   mean service time s (`serviceSeconds`), busy slots free up at K / s per
   second, so a request that finds N requests in the system (itself included)
   starts after (N - K) x s / K seconds. It starts within W iff
   N <= K x (1 + W / s), i.e. K >= N / (1 + W / s). Capacity ordered when a
   burst is seen arrives a cold start C later, after any burst shorter than C
   is over, so it must already be warm: the mode holds the slots for the
   largest N seen over a horizon H (`sloHorizonSeconds`, default 20 C, never
   shorter than `scaleDownDelaySeconds`) and keeps the target awake that long.
   C is `coldStartSeconds`, or the longest cold start a sidecar measured if
   longer. On top of the ordinary rule (max, never less): the burst formula
   alone has no headroom for sustained load and under-sizes steady traffic.
   In the HPA's unit: metric = K x targetUtilization, so desired replicas =
   ceil(K / targetConcurrency). The ordinary rule then sizes only the requests
   being served (in flight): a backlog is counted once, by the formula, rather
   than also at targetConcurrency x targetUtilization per replica, which
   orders capacity for a queue that is gone before it is ready (see
   `reactive_demand`). The horizon's samples are their own window
   (`peak_buckets`), merged across replicas like the other. With `sloTarget`
   q < 1 the hold is sized for a share q of the horizon's requests rather than
   its largest peak (`slo_level`), from the same buckets: no new state.

Worked example (targetConcurrency 8, targetUtilization 0.8, delay 120 s):
demand 30 at t=0 -> metric 30 -> ceil(30 / 6.4) = 5 replicas. Demand falls to 6
at t=10 -> metric stays 30 until t=120..122 (the bucket holding 30 leaves the
window) -> then 6 -> 1 replica. Demand 0 from t=200 -> active until t=500.

SLO-aware example (same, plus sloWaitSeconds 2, serviceSeconds 5, cold start
60 s -> horizon 1200 s): a burst of 70 at t=0 -> K = 70 / (1 + 2 / 5) = 50
slots -> metric 50 x 0.8 = 40 -> ceil(40 / 6.4) = 7 replicas (the ordinary rule
asks ceil(70 / 6.4) = 11 for 120 s, then the hold gives 7) until t=1200.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from scaler import window
from scaler.signals import Signals
from scaler.target_config import TargetConfig

# Buckets per scale-down window: memory per target is bounded by this, and a
# sample is held at most one bucket (delay / 60) longer than the delay.
BUCKETS_PER_WINDOW = 60
_MIN_BUCKET_S = 1.0


class Reason(StrEnum):
    """Why a decision came out as it did; a bounded set, so usable as a metric label."""

    IDLE = "idle"  # no demand for scaleToZeroDelaySeconds: inactive
    BELOW_ACTIVATION = "below_activation"  # demand too low to wake the target
    ZERO_DELAY_HOLD = "zero_delay_hold"  # no demand, but not yet for scaleToZeroDelaySeconds
    BURST_HOLD = "burst_hold"  # holding a burst's peak until the burst has passed
    SCALE_DOWN_HELD = "scale_down_held"  # demand fell; the window still holds a higher value
    FOLLOWING = "following"  # the metric is the demand now
    SLO_HOLD = "slo_hold"  # SLO-aware mode: capacity for the horizon's peak held warm


@dataclass(frozen=True)
class PolicyState:
    """All a decision remembers; stored in Redis so every scaler replica shares it.

    Every field merges across replicas by maximum (see `merge`), so two replicas
    saving at once cannot lose each other's samples."""

    bucket_s: float = 0.0  # width the buckets were recorded with
    buckets: window.Buckets = field(default=())
    active_until: float = 0.0  # IsActive holds true until then
    burst_started_at: float = 0.0  # identifies the current burst: a later start replaces it
    burst_peak: float = 0.0
    burst_until: float = 0.0  # burst mode holds until then
    # SLO-aware mode only: max requests in the system (in flight + waiting) per bucket,
    # over the SLO horizon, same bucket width. `buckets` then hold the requests served.
    peak_buckets: window.Buckets = field(default=())


@dataclass(frozen=True)
class Decision:
    metric_value: float  # TOTAL demand to size for; the HPA divides by the replica target
    active: bool
    reason: Reason
    detail: str  # the reason with its numbers, for the debug log
    new_state: PolicyState
    demand: float  # the demand sampled now, before smoothing
    at: float  # the time it was decided at


def needs_saving(stored: PolicyState, new: PolicyState) -> bool:
    """Whether merging `new` into `stored` would change anything a later decision reads.

    Most polls change nothing (no new maximum, same deadlines), and skipping
    their write halves the Redis round trips of a poll. Expired buckets are left
    for the next write to drop: the window ignores them meanwhile."""
    if new.bucket_s != stored.bucket_s or new.active_until > stored.active_until:
        return True
    burst_new = (new.burst_started_at, new.burst_peak, new.burst_until)
    burst_old = (stored.burst_started_at, stored.burst_peak, stored.burst_until)
    if new.burst_started_at > stored.burst_started_at or (
        new.burst_started_at == stored.burst_started_at and burst_new > burst_old
    ):
        return True
    return _raises(stored.buckets, new.buckets) or _raises(stored.peak_buckets, new.peak_buckets)


def _raises(stored: window.Buckets, new: window.Buckets) -> bool:
    old = dict(stored)
    return any(value > old.get(index, -1.0) for index, value in new)


# SLO-aware mode: the horizon a burst's capacity is held for, in cold starts,
# when sloHorizonSeconds is not set (see README "Choosing settings").
HORIZON_COLD_STARTS = 20.0
MAX_COLD_START_S = 3600.0


def cold_start_s(signals: Signals, config: TargetConfig) -> float:
    """The cold start the SLO-aware mode plans with: coldStartSeconds, or the longest
    one a pod measured if that is longer (capped at an hour)."""
    return min(max(config.cold_start_s, signals.cold_start_s), MAX_COLD_START_S)


def slo_horizon_s(config: TargetConfig, cold_s: float) -> float:
    """How long the SLO-aware mode holds a peak: sloHorizonSeconds, else 20 cold starts;
    never shorter than the scale-down delay."""
    horizon = config.slo_horizon_s
    if horizon is None:
        horizon = HORIZON_COLD_STARTS * cold_s
    return max(horizon, config.scale_down_delay_s)


def window_length_s(config: TargetConfig, cold_s: float) -> float:
    """How far back the window must reach: the scale-down delay, or the SLO horizon."""
    if config.slo_wait_s is None:
        return config.scale_down_delay_s
    return slo_horizon_s(config, cold_s)


def bucket_width(config: TargetConfig, cold_s: float | None = None) -> float:
    length = window_length_s(config, config.cold_start_s if cold_s is None else cold_s)
    return max(_MIN_BUCKET_S, length / BUCKETS_PER_WINDOW)


def retained_s(state: PolicyState) -> float:
    """How far back stored buckets can matter: 60 buckets of the state's own width."""
    return BUCKETS_PER_WINDOW * max(state.bucket_s, _MIN_BUCKET_S)


def slo_slots(config: TargetConfig, peak: float) -> float:
    """Warm slots that start every request of a peak of `peak` concurrent requests within
    sloWaitSeconds: peak / (1 + W / s) (the derivation is in the module docstring)."""
    assert config.slo_wait_s is not None
    return peak / (1.0 + config.slo_wait_s / config.service_s)


def slo_level(peaks: list[float], config: TargetConfig) -> float:
    """The load L the warm slots must start within the SLO: the largest peak, or with
    sloTarget q < 1, the smallest L at which the horizon's requests that would have
    waited longer are at most 1 - q of them.

    Each bucket's peak N_b stands for a burst of N_b requests (bursts are shorter than a
    bucket; for steady load it is the concurrency, proportional to the requests either
    way). K slots start L = K x (1 + W / s) of a burst within W, so a burst of N_b misses
    max(0, N_b - L) of its requests, and L is the smallest with
        sum_b max(0, N_b - L) <= (1 - q) x sum_b N_b.
    The excess falls linearly in L between peaks, so with the k largest peaks above
    L (P_k their sum, A the allowance): L = (P_k - A) / k, the first k at which that
    is at least the (k+1)-th peak. Worked example, q 0.9, peaks 100, 60, 40, 0:
    A = 0.1 x 200 = 20; k=1: L = 80 >= 60 -> L = 80 (the 100-burst misses 20 of its
    requests: 10 % of the 200); with q 0.8, A = 40: k=1: L = 60 >= 60 -> 60 (it
    misses 40). Peaks 50, 50 at q 0.9: A = 10; k=1: 40 < 50; k=2: L = 45. One
    outlying peak then costs at most its share of the requests, not the whole
    hold; but only when the horizon holds enough peaks to share them with (60
    buckets), so a short horizon stays close to its largest peak."""
    if not peaks:
        return 0.0
    ordered = sorted(peaks, reverse=True)
    if config.slo_target >= 1.0:
        return ordered[0]
    allowance = (1.0 - config.slo_target) * sum(ordered)
    top = 0.0
    for k, value in enumerate(ordered, start=1):
        top += value
        level = (top - allowance) / k
        if k == len(ordered) or level >= ordered[k]:
            return max(level, 0.0)
    return 0.0  # not reached: the loop returns at k = len(ordered)


def reactive_demand(signals: Signals, config: TargetConfig) -> float:
    """What the reactive rule (window, burst mode) sizes for: all demand, or in SLO-aware
    mode the requests being served (in flight).

    In SLO-aware mode a backlog is the SLO formula's: it holds K >= N / (1 + W / s) for
    the requests in the system, N, which counts the waiting ones. Sizing the backlog
    again at targetConcurrency x targetUtilization per replica orders 1.75x the SLO's
    slots (at W 2 s, s 5 s, utilisation 0.8) for a queue the warm slots clear long
    before the new pods are ready: K slots clear K x C / s requests in a cold start C
    (96 per replica of 8 slots at 60 s and s = 5 s), where a burst's queue is tens."""
    if config.slo_wait_s is None:
        return signals.demand
    return signals.inflight


def decide(signals: Signals, state: PolicyState, config: TargetConfig, now: float) -> Decision:
    demand = signals.demand
    served = reactive_demand(signals, config)
    delay = config.scale_down_delay_s
    cold_s = cold_start_s(signals, config)
    length = window_length_s(config, cold_s)
    bucket_s = bucket_width(config, cold_s)
    rebucketed = _rebucketed(state.buckets, state.bucket_s, bucket_s, now)
    # SLO-aware mode keeps the horizon in `peak_buckets`; these need only the delay.
    kept_s = length if config.slo_wait_s is None else max(delay, config.burst_window_s)
    buckets = window.record(rebucketed, now, served, kept_s, bucket_s)
    held = window.window_max(buckets, now, delay, bucket_s) if delay > 0 else served
    held = served if held is None else max(held, served)

    committed = (signals.pods_ready + signals.pods_starting) * config.target_concurrency
    short = window.window_max(buckets, now, config.burst_window_s, bucket_s) or served
    bursting = committed > 0 and short > config.burst_threshold * committed
    burst_started_at, burst_peak, burst_until = _burst(state, bursting, demand, now, delay)
    in_burst = now < burst_until
    metric = max(held, burst_peak) if in_burst else held

    wakes = demand > config.activation_threshold
    was_active = now < state.active_until
    active_until = state.active_until
    if wakes or (was_active and demand > 0):
        active_until = max(active_until, _deadline(now, _zero_delay_s(config, cold_s)))
    active = wakes or now < active_until

    slo_metric = None
    peak_buckets: window.Buckets = ()
    if config.slo_wait_s is not None:
        horizon = slo_horizon_s(config, cold_s)
        peaks = _rebucketed(state.peak_buckets, state.bucket_s, bucket_s, now)
        peak_buckets = window.record(peaks, now, demand, length, bucket_s)
        peak = slo_level(window.window_values(peak_buckets, now, horizon, bucket_s), config)
        # In the HPA's unit: ceil(metric / (targetConcurrency x targetUtilization))
        # = ceil(slots / targetConcurrency) replicas.
        slo_metric = slo_slots(config, peak) * config.target_utilization
        if not active:
            slo_metric = min(slo_metric, demand)  # asleep: nothing held (IsActive agrees)
        metric = max(metric, slo_metric)

    new_state = PolicyState(
        bucket_s=bucket_s,
        buckets=buckets,
        active_until=active_until,
        burst_started_at=burst_started_at,
        burst_peak=burst_peak,
        burst_until=burst_until,
        peak_buckets=peak_buckets,
    )
    reason, detail = _explain(
        config,
        demand,
        served,
        metric,
        held,
        active,
        in_burst,
        burst_peak,
        committed,
        active_until - now,
        _zero_delay_s(config, cold_s),
    )
    if slo_metric is not None and demand > 0 and active and slo_metric >= metric > held:
        reason, detail = (
            Reason.SLO_HOLD,
            (
                f"SLO hold: peak {peak:g} within {horizon:g} s needs {slo_slots(config, peak):.3g} "
                f"warm slots to start within {config.slo_wait_s:g} s (demand now {demand:g})"
            ),
        )
    return Decision(metric, active, reason, detail, new_state, demand, now)


def _zero_delay_s(config: TargetConfig, cold_s: float) -> float:
    """SLO-aware mode keeps the target awake for the whole horizon: going to zero
    guarantees that the next burst waits a full cold start."""
    if config.slo_wait_s is None:
        return config.scale_to_zero_delay_s
    return max(config.scale_to_zero_delay_s, slo_horizon_s(config, cold_s))


def _deadline(now: float, delay_s: float) -> float:
    """now + delay_s, rounded up to a 60th of the delay: never earlier than asked
    (at most 1.7% later), and the stored deadline then changes 60 times per delay
    rather than on every poll (see `needs_saving`)."""
    if delay_s <= 0:
        return now
    quantum = delay_s / BUCKETS_PER_WINDOW
    return math.ceil((now + delay_s) / quantum) * quantum


def _rebucketed(
    buckets: window.Buckets, stored_s: float, bucket_s: float, now: float
) -> window.Buckets:
    """A stored window in today's bucket width.

    If scaleDownDelaySeconds changed, the old buckets mean other times: keep
    their maximum as one sample at `now` rather than forget it, so a config
    change can hold a replica a little longer but never release one early."""
    if stored_s == bucket_s or not buckets:
        return buckets
    highest = max(v for _, v in buckets)
    return ((window.bucket_of(now, bucket_s), highest),)


def _burst(
    state: PolicyState, bursting: bool, demand: float, now: float, hold_s: float
) -> tuple[float, float, float]:
    """(started_at, peak, until) of the burst after this sample."""
    ongoing = now < state.burst_until
    if bursting:
        if ongoing:
            return state.burst_started_at, max(state.burst_peak, demand), now + hold_s
        return now, demand, now + hold_s
    if ongoing:
        return state.burst_started_at, state.burst_peak, state.burst_until
    return state.burst_started_at, 0.0, state.burst_until


def _explain(
    config: TargetConfig,
    demand: float,
    served: float,
    metric: float,
    held: float,
    active: bool,
    in_burst: bool,
    burst_peak: float,
    committed: float,
    active_left_s: float,
    zero_delay_s: float,
) -> tuple[Reason, str]:
    if not active:
        if demand > 0:
            return Reason.BELOW_ACTIVATION, (
                f"demand {demand:g} <= activationThreshold {config.activation_threshold:g}"
            )
        return Reason.IDLE, f"no demand for {zero_delay_s:g} s"
    if demand == 0:
        return Reason.ZERO_DELAY_HOLD, (
            f"scale to zero held: no demand, {active_left_s:.0f} s of "
            f"{zero_delay_s:g} s left; metric {metric:g}"
        )
    if in_burst and burst_peak > held:
        return Reason.BURST_HOLD, (
            f"burst: holding peak {burst_peak:g} (committed capacity {committed:g}, "
            f"demand now {demand:g})"
        )
    if metric > served:
        return Reason.SCALE_DOWN_HELD, (
            f"scale-down held: max over {config.scale_down_delay_s:g} s window = {metric:g} "
            f"(demand now {demand:g})"
        )
    return Reason.FOLLOWING, f"following demand {served:g}"
