"""The scaling decision: a pure function of (signals, policy state, config, now).

No I/O, no clock reads, no globals: the gRPC service, the tests and the simulator
call the same `decide`. One decision gives KEDA both answers, so they cannot
disagree: the metric value for the HPA (GetMetrics) and whether the target is
active at all (IsActive / StreamIsActive).

`decide` reads the signals and the stored windows and combines the rules
(`scaler.rules`), each a small pure function with its own table of cases:

1. Size for when capacity is ready (`rules.forecast`). Capacity ordered now
   serves a cold start from now, so the metric is the capacity needed then: the
   offered load (arrival rate x service time, over the last cold start) plus the
   part of the backlog the ready slots cannot clear before capacity ordered now
   has had a cold start to help. A burst the ready replicas drain within a cold
   start orders nothing; a sustained rise orders at once. While requests wait,
   pods still starting are kept (`rules.forecast.kept_replicas`).
2. Scale down only after a delay. The metric is the largest need over the last
   `scaleDownDelaySeconds` (`scaler.window`), so it releases a replica only once
   the need has stayed low for the whole delay. What the window remembers is the
   need, never a queue inflated while capacity was starting.
3. SLO-aware hold (on by default, `rules.slo`): warm slots for the horizon's bursts, at
   a level that serves `sloTarget` of their requests within `sloWaitSeconds`, so bursts
   shorter than a cold start start in time.
4. Scale to zero only after real silence (`rules.activation`).
5. A one-replica rise a small fleet's HPA tolerance band would swallow is reported just past
   the band (`rules.tolerance`).
6. With a token-latency objective (`tokenLatencyMs`), a replica's size is the concurrency C
   the measured token curve allows within it (`scaler.token_curve.replica_concurrency`), not
   targetConcurrency: every rule above counts C slots a replica, and the metric is reported
   in units of the HPA's fixed target, need x targetConcurrency / C. A rise of C (fewer
   replicas) waits for the scale-down window like any scale-down; a fall acts at once. The
   C the curve allows now (not the held one) is also what a pod's worker may admit
   (`Decision.admit_concurrency`): replicas sized for C keep tokens within the objective
   only if no pod runs more.

The HPA turns the metric into replicas: desired = ceil(metric / replica_target),
replica_target = targetConcurrency x targetUtilization.

Worked example (targetConcurrency 8, targetUtilization 0.8, serviceSeconds 5,
cold start 60 s, delay 120 s, sloWaitSeconds off), steady: 30 requests in flight for a minute,
nothing waiting -> offered 30 -> metric 30 -> ceil(30 / 6.4) = 5 replicas. The
load falls to 6 at t=0 -> the mean over the cold start falls to 6 by t=60 ->
the window holds the higher needs until t=180 -> 1 replica.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

from scaler import policy_windows, window
from scaler.policy_state import BUCKETS_PER_WINDOW, PolicyState
from scaler.rules import activation, forecast, slo, tolerance
from scaler.signals import Signals
from scaler.target_config import TargetConfig
from scaler.token_curve import Sized, replica_concurrency

# PolicyState lives in scaler.policy_state, which the codec and the store import without
# the decision; importable from here as before.
__all__ = [
    "BUCKETS_PER_WINDOW",
    "COLD_START_KEY",
    "DERIVED_KEYS",
    "MAX_COLD_START_S",
    "SERVICE_KEY",
    "ZERO_DELAY_KEY",
    "Decision",
    "PolicyState",
    "Reason",
    "bucket_width",
    "cold_start_s",
    "decide",
    "derived",
    "needs_saving",
    "peak_bucket_width",
    "recent_s",
    "service_s",
    "slo_horizon_s",
    "zero_delay_s",
]

_MIN_BUCKET_S = 1.0
MAX_COLD_START_S = 3600.0
# The keys with a derived default (`derived`): written, they are obeyed as written.
SERVICE_KEY = "serviceSeconds"
COLD_START_KEY = "coldStartSeconds"
ZERO_DELAY_KEY = "scaleToZeroDelaySeconds"
DERIVED_KEYS = (SERVICE_KEY, COLD_START_KEY, ZERO_DELAY_KEY)


class Reason(StrEnum):
    """Why a decision came out as it did; a bounded set, so usable as a metric label."""

    IDLE = "idle"  # no demand for scaleToZeroDelaySeconds: inactive
    BELOW_ACTIVATION = "below_activation"  # demand too low to wake the target
    ZERO_DELAY_HOLD = "zero_delay_hold"  # no demand, but not yet for scaleToZeroDelaySeconds
    BACKLOG = "backlog"  # sizing for a backlog the ready slots cannot clear in time
    SCALE_DOWN_HELD = "scale_down_held"  # the need fell; the window still holds a higher one
    FOLLOWING = "following"  # the metric is the offered load now
    SLO_HOLD = "slo_hold"  # the SLO-aware hold: warm capacity for the horizon's bursts
    STARTING_KEPT = "starting_kept"  # requests wait: pods still starting are not released


@dataclass(frozen=True)
class Decision:
    metric_value: float  # TOTAL demand to size for; the HPA divides by the replica target
    active: bool
    reason: Reason
    detail: str  # the reason with its numbers, for the debug log
    new_state: PolicyState
    demand: float  # requests in the system now, before any rule
    at: float  # the time it was decided at
    # The concurrency one replica is sized for: targetConcurrency, or with tokenLatencyMs the
    # one the measured token curve allows (held as a scale-down); learned: from measurements.
    replica_concurrency: float = 0.0
    concurrency_learned: bool = False
    # With tokenLatencyMs, the sequences a pod may run at once: the C the token curve allows
    # now, not the one held for the scale-down delay (admitting up to today's C keeps every
    # token within the objective; the held C only keeps replicas). Published to the workers,
    # which take no more than this into a pod. None without tokenLatencyMs.
    admit_concurrency: float | None = None


def cold_start_s(signals: Signals, config: TargetConfig) -> float:
    """The cold start the rules plan with: coldStartSeconds as written; absent, the longest
    one a pod measured if that is longer than the default (capped at an hour)."""
    if COLD_START_KEY in config.written:
        return config.cold_start_s
    return min(max(config.cold_start_s, signals.cold_start_s), MAX_COLD_START_S)


def service_s(signals: Signals, config: TargetConfig) -> float:
    """The service time the rules plan with: serviceSeconds as written; absent, the mean the
    pods' completions taught (`scaler.service_record`) where it is longer than the default, which is
    its floor: a short early mean cannot make the forecast smaller than the default plans."""
    if SERVICE_KEY in config.written:
        return config.service_s
    return max(config.service_s, signals.service_s)


def recent_s(config: TargetConfig, cold_s: float) -> float:
    """How far back the in_system and in_flight windows reach: a cold start (planned as at
    least one service time), and the burst window."""
    return max(forecast.planning_horizon_s(cold_s, config.service_s), config.burst_window_s)


def bucket_width(config: TargetConfig, cold_s: float | None = None) -> float:
    """The width of the needed, in_system and in_flight buckets: 60 of them span the longer of
    the scale-down delay and `recent_s` (at the cold start `cold_s`, else coldStartSeconds)."""
    cold = config.cold_start_s if cold_s is None else cold_s
    length = max(config.scale_down_delay_s, recent_s(config, cold))
    return max(_MIN_BUCKET_S, length / BUCKETS_PER_WINDOW)


def slo_horizon_s(config: TargetConfig) -> float:
    """How far back the SLO-aware hold remembers bursts (`rules.slo.horizon_s`)."""
    return slo.horizon_s(config.slo_horizon_s, config.scale_down_delay_s)


def peak_bucket_width(config: TargetConfig) -> float:
    """The width of the SLO-aware hold's burst buckets: 60 of them span its horizon."""
    return max(_MIN_BUCKET_S, slo_horizon_s(config) / BUCKETS_PER_WINDOW)


def needs_saving(stored: PolicyState, new: PolicyState) -> bool:
    """Whether merging `new` into `stored` would change anything a later decision reads.

    Most polls change nothing (no new maximum in a bucket, same deadline), and
    skipping their write halves the Redis round trips of a poll. Expired buckets
    are left for the next write to drop: the windows ignore them meanwhile."""
    if (new.bucket_s, new.peak_bucket_s) != (stored.bucket_s, stored.peak_bucket_s):
        return True
    if new.active_until > stored.active_until:
        return True
    return any(
        _raises(getattr(stored, name), getattr(new, name))
        for name in ("needed", "in_system", "in_flight", "peak_buckets", "inverse_concurrency")
    )


def _raises(stored: window.Buckets, new: window.Buckets) -> bool:
    old = dict(stored)
    return any(value > old.get(index, -1.0) for index, value in new)


def decide(signals: Signals, state: PolicyState, config: TargetConfig, now: float) -> Decision:
    """The metric and the activity for this target at `now`, given what the pods and the queue
    report and what earlier decisions left, with the state the next decision starts from."""
    demand = signals.demand
    cold_s = cold_start_s(signals, config)
    bucket_s = bucket_width(config, cold_s)
    written_concurrency = config.target_concurrency
    sized = _replica_size(signals, state, config, bucket_s, now)
    if sized is not None:
        # Every rule below counts a replica as C slots; the metric is converted at the end.
        config = replace(config, target_concurrency=sized.concurrency)
        signals = replace(
            signals,
            capacity_ready=signals.pods_ready * sized.concurrency,
            capacity_starting=signals.pods_starting * sized.concurrency,
        )
    # The windows' widths stay on serviceSeconds, so a learned mean that moves a little at
    # every poll cannot re-bucket them; the rules plan with the learned one.
    config = replace(config, service_s=service_s(signals, config))
    delay = config.scale_down_delay_s
    # Stages, each named: the windows, the forecast, the scale-down window, the SLO-aware
    # hold, activation, then the answer refined by the pods kept, the hold, sleep and the
    # HPA's tolerance.
    recent = policy_windows.recent(state, signals, bucket_s, now)
    need = _need(signals, config, cold_s, recent, now)
    needed = policy_windows.needed(state, need.settled, delay, bucket_s, now)
    held = window.window_max(needed, now, delay, bucket_s) if delay > 0 else None
    metric = need.now if held is None else max(held, need.now)
    hold = _slo_hold(signals, state, config, recent, cold_s, now)
    zero_delay = zero_delay_s(config, cold_s)
    active, active_until = activation.awake_until(
        demand, config.activation_threshold, state.active_until, now, zero_delay
    )
    answer = _Answer(metric, *_explain(config, demand, need, metric, active, zero_delay))
    if active and cold_s > 0:  # with no cold start the need is the demand now: no forecast
        answer = _starting_kept(answer, signals, config, need)
    if hold is not None:
        answer = _with_slo_hold(answer, hold, active and demand > 0)
    if not active:
        # Asleep: nothing is held, and the metric agrees with IsActive (a need still
        # measured over the last cold start would keep the HPA's pods after the drain).
        answer = answer._replace(metric=min(answer.metric, demand))
    else:
        answer = _past_tolerance(answer, signals, config)

    new_state = PolicyState(
        bucket_s=bucket_s,
        needed=needed,
        in_system=recent.in_system,
        in_flight=recent.in_flight,
        active_until=active_until,
        peak_bucket_s=hold.bucket_s if hold else 0.0,
        peak_buckets=hold.buckets if hold else (),
    )
    if sized is None:
        return Decision(
            answer.metric,
            active,
            answer.reason,
            answer.detail,
            new_state,
            demand,
            now,
            written_concurrency,
            False,
        )
    # In units of the HPA's fixed target: ceil(metric / (targetConcurrency x utilization))
    # = ceil(need / (C x utilization)).
    metric = answer.metric * written_concurrency / sized.concurrency
    return Decision(
        metric,
        active,
        answer.reason,
        f"{answer.detail}; a replica carries {sized.detail}",
        replace(new_state, inverse_concurrency=sized.window),
        demand,
        now,
        sized.concurrency,
        sized.learned,
        sized.admit,
    )


@dataclass(frozen=True)
class _Size:
    """The per-replica concurrency the decision uses, and the window that holds its rises."""

    concurrency: float
    learned: bool
    detail: str
    window: window.Buckets  # 1 / C sampled, kept scaleDownDelaySeconds (max: the smallest C)
    admit: float  # the C the curve allows now, un-held: what a pod may admit


def _replica_size(
    signals: Signals, state: PolicyState, config: TargetConfig, bucket_s: float, now: float
) -> _Size | None:
    """C under tokenLatencyMs (None without it): what the token curve allows now, or the
    smallest C over the scale-down delay if that is smaller. A larger C means fewer replicas,
    so its rise waits for the delay like any scale-down; a smaller C acts at once."""
    if config.token_latency_ms is None:
        return None
    slots = signals.capacity_ready / signals.pods_ready if signals.pods_ready > 0 else 0.0
    delay = config.scale_down_delay_s
    stored = policy_windows.rebucketed(state.inverse_concurrency, state.bucket_s, bucket_s, now)
    latest = window.value_at(stored, now, bucket_s)  # 1 / the C the latest decision set
    now_sized: Sized = replica_concurrency(
        signals.token_curve,
        config.token_latency_ms,
        config.target_concurrency,
        slots,
        in_force=1.0 / latest if latest else 0.0,
    )
    inverse = window.record(
        stored, now, 1.0 / now_sized.concurrency, max(delay, bucket_s), bucket_s
    )
    held = window.window_max(inverse, now, delay, bucket_s) if delay > 0 else None
    if held is None or 1.0 / held >= now_sized.concurrency:
        return _Size(
            now_sized.concurrency,
            now_sized.learned,
            now_sized.detail,
            inverse,
            now_sized.concurrency,
        )
    return _Size(
        1.0 / held,
        now_sized.learned,
        f"{1.0 / held:.3g} sequences, the smallest over the {delay:g} s scale-down delay "
        f"(now {now_sized.detail})",
        inverse,
        now_sized.concurrency,
    )


class _Answer(NamedTuple):
    """What a stage hands the next: the metric so far and why."""

    metric: float
    reason: Reason
    detail: str


class Need(NamedTuple):
    """The forecast's answer (`rules.forecast`), in slots."""

    offered: float  # the offered load
    settled: float  # over a whole cold start: what the scale-down window may hold
    now: float  # what to order now (above `settled` only while waking from zero)


def _starting_kept(answer: _Answer, signals: Signals, config: TargetConfig, need: Need) -> _Answer:
    """Pods still starting kept while requests wait (`rules.forecast.kept_replicas`)."""
    # Not yet running: waiting in the pods' servers plus queued in Redis.
    backlog = signals.demand - signals.inflight
    kept = forecast.kept_replicas(backlog, signals.pods_ready, signals.pods_starting)
    floor = kept * config.replica_target
    if floor <= answer.metric:
        return answer
    return _Answer(
        floor,
        Reason.STARTING_KEPT,
        f"starting pods kept: {kept} replicas ({signals.pods_starting} starting) while "
        f"{backlog:g} requests wait (need now {need.now:.3g})",
    )


def _with_slo_hold(answer: _Answer, hold: _Hold, explains: bool) -> _Answer:
    """The SLO-aware hold as a floor; it is the reason when it raised an awake metric."""
    if explains and hold.metric > answer.metric:
        return _Answer(hold.metric, Reason.SLO_HOLD, hold.detail)
    return answer._replace(metric=max(answer.metric, hold.metric))


def _past_tolerance(answer: _Answer, signals: Signals, config: TargetConfig) -> _Answer:
    """A one-replica rise the HPA's tolerance would swallow, reported past it
    (`rules.tolerance`)."""
    running = signals.pods_reported
    metric = answer.metric
    lifted = tolerance.past_tolerance(metric, running, config.replica_target, config.hpa_tolerance)
    if lifted <= metric:
        return answer
    return _Answer(
        lifted,
        answer.reason,
        answer.detail
        + (
            f"; lifted from {metric:.3g} past the HPA's {config.hpa_tolerance:g} tolerance: "
            f"{running} -> {running + 1} replicas"
        ),
    )


def _need(
    signals: Signals,
    config: TargetConfig,
    cold_s: float,
    recent: policy_windows.Recent,
    now: float,
) -> Need:
    """`rules.forecast` on what the windows say.

    The settled need measures the offered load over the last cold start, silence
    included: what the scale-down window may hold. While no replica is ready (a wake
    from zero) the need now measures it over the traffic's own age instead, so a
    sustained stream orders at once; being a forecast from less than a cold start of
    evidence, it orders but is not held, so a burst's first seconds are not latched."""
    demand = signals.demand
    if cold_s == 0:
        return Need(demand, demand, demand)  # capacity is ready at once: the demand now
    in_system, in_flight, bucket_s = recent.in_system, recent.in_flight, recent.bucket_s
    service_s = config.service_s
    span = forecast.planning_horizon_s(cold_s, service_s)
    backlog = demand - signals.inflight
    ready = _ready_slots(signals, config)

    def over(
        span_s: float, clear_s: float | None = None, before: float = demand
    ) -> tuple[float, float]:
        then = window.value_at(in_system, now - span_s, bucket_s)
        mean_inflight = window.time_mean(in_flight, now, span_s, bucket_s)
        offered = forecast.offered_load(
            signals.inflight if mean_inflight is None else mean_inflight,
            demand,
            before if then is None else then,  # `before`: the span reaches past every sample
            service_s,
            span_s,
        )
        return offered, forecast.needed_slots(offered, backlog, ready, service_s, cold_s, clear_s)

    offered, settled = over(span)  # nothing known before: taken as steady
    if signals.pods_ready > 0:
        return Need(offered, settled, settled)
    # Waking: the rate over the traffic's own age, and the backlog cleared within that age
    # (the silence before says nothing of the rate; the queue is all misses).
    waking = forecast.waking_span_s(_busy_for_s(in_system, now, bucket_s), service_s, span)
    # Traffic younger than a service time began within the windows: what came before their
    # first sample is at most that sample, not the demand now (which would read as no growth).
    young_offered, young = over(waking, waking, before=in_system[0][1])
    return Need(max(offered, young_offered), settled, max(settled, young))


@dataclass(frozen=True)
class _Hold:
    metric: float
    detail: str
    bucket_s: float
    buckets: window.Buckets


def _slo_hold(
    signals: Signals,
    state: PolicyState,
    config: TargetConfig,
    recent: policy_windows.Recent,
    cold_s: float,
    now: float,
) -> _Hold | None:
    """The SLO-aware hold (`rules.slo`): warm slots for the horizon's bursts at the level
    sloTarget asks for, in the HPA's unit; None when sloWaitSeconds is off. What arrived
    within the burst window is the growth of the requests in the system plus what
    completed meanwhile (the mean in flight over the window, x window / s)."""
    if config.slo_wait_s is None:
        return None
    in_system, in_flight, bucket_s = recent.in_system, recent.in_flight, recent.bucket_s
    demand = signals.demand
    horizon = slo_horizon_s(config)
    width = peak_bucket_width(config)
    window_s = config.burst_window_s
    before = window.value_at(in_system, now - window_s, bucket_s)
    mean_inflight = window.time_mean(in_flight, now, window_s, bucket_s)
    completed = (mean_inflight or 0.0) * window_s / config.service_s
    burst = slo.burst_size(demand, before, demand - (before or 0.0) + completed)
    peaks = policy_windows.rebucketed(state.peak_buckets, state.peak_bucket_s, width, now)
    buckets = window.record(peaks, now, burst, horizon, width)
    # With tokenLatencyMs too: the workers admit at most C a pod (Decision.admit_concurrency),
    # so a request beyond the warm slots waits for one, which turns over within a service
    # time, as without the objective (ratio 1 + W / s). On the H200 profile's bursty trace,
    # holding bursts whole instead (ratio 1) cost 11 % more GPU-h for the same waits.
    wait_s = config.slo_wait_s
    ratio = slo.burst_ratio(wait_s, config.service_s)
    oldest = window.oldest_bucket(now, horizon, width)
    seen = [(i * width, v) for i, v in buckets if i >= oldest and v > 0]
    # One burst seen by decisions up to a burst window apart can fall in two buckets.
    apart = width + window_s
    recent_from_s = slo.recent_from_s(now, cold_s)
    largest = slo.level(slo.recurring(seen, apart, recent_from_s), config.slo_target, ratio)
    slots = slo.slots_for(largest, wait_s, config.service_s)
    # ceil(metric / (targetConcurrency x targetUtilization)) = ceil(slots / targetConcurrency)
    metric = slots * config.target_utilization
    detail = (
        f"SLO hold: bursts up to {largest:.4g}, recurring or under {cold_s:g} s old "
        f"(sloTarget {config.slo_target:g} of "
        f"{horizon:g} s) need {slots:.3g} warm slots to start within {config.slo_wait_s:g} s "
        f"(demand now {demand:g})"
    )
    return _Hold(metric, detail, width, buckets)


def _ready_slots(signals: Signals, config: TargetConfig) -> float:
    """Slots of the ready pods: their reported capacity, else targetConcurrency each; never
    fewer than the requests they run."""
    slots = signals.capacity_ready or signals.pods_ready * config.target_concurrency
    return max(slots, signals.inflight)


def _busy_for_s(in_system: window.Buckets, now: float, bucket_s: float) -> float:
    """How long the system has held requests without a break: since the end of the latest
    bucket whose every sample was empty, or since the first sample if none was."""
    empty = [i for i, v in in_system if v == 0]
    since = (empty[-1] + 1) * bucket_s if empty else in_system[0][0] * bucket_s
    return max(0.0, now - since)


def zero_delay_s(config: TargetConfig, cold_s: float) -> float:
    """scaleToZeroDelaySeconds as written. Absent, the SLO-aware mode keeps the target awake
    longer (`rules.slo.awake_s`, 15 cold starts) if that is longer than the default: going to
    zero guarantees that the next burst waits a full cold start."""
    if config.slo_wait_s is None or ZERO_DELAY_KEY in config.written:
        return config.scale_to_zero_delay_s
    return max(config.scale_to_zero_delay_s, slo.awake_s(cold_s))


def derived(config: TargetConfig) -> list[str]:
    """The values this configuration leaves to be derived, and from what: for the log line at
    GetMetricSpec. A key written is obeyed as written and is not listed."""
    found = []
    if SERVICE_KEY not in config.written:
        found.append(
            f"{SERVICE_KEY}: the mean the pods' completions taught, at least {config.service_s:g} s"
        )
    if ZERO_DELAY_KEY not in config.written and config.slo_wait_s is not None:
        found.append(
            f"{ZERO_DELAY_KEY}: {slo.AWAKE_COLD_STARTS:g} cold starts with the SLO-aware hold, "
            f"at least {config.scale_to_zero_delay_s:g} s"
        )
    if COLD_START_KEY not in config.written:
        found.append(
            f"{COLD_START_KEY}: the longest cold start a pod measured, "
            f"at least {config.cold_start_s:g} s"
        )
    if config.queue_key is None and config.queue_keys:
        found.append(
            f"queueKey: the gateway's stream of each priority, {','.join(config.queue_keys)}"
        )
    return found


def _explain(
    config: TargetConfig,
    demand: float,
    forecast_need: Need,
    metric: float,
    active: bool,
    zero_delay_s: float,
) -> tuple[Reason, str]:
    offered, need = forecast_need.offered, forecast_need.now
    if not active:
        if demand > 0:
            return Reason.BELOW_ACTIVATION, (
                f"demand {demand:g} <= activationThreshold {config.activation_threshold:g}"
            )
        return Reason.IDLE, f"no demand for {zero_delay_s:g} s"
    if demand == 0:
        return Reason.ZERO_DELAY_HOLD, (
            f"scale to zero held: no demand, metric {metric:.3g} (demand must stay 0 for "
            f"{zero_delay_s:g} s)"
        )
    if metric > need:
        return Reason.SCALE_DOWN_HELD, (
            f"scale-down held: max need over {config.scale_down_delay_s:g} s = {metric:.3g} "
            f"(need now {need:.3g}, demand {demand:g})"
        )
    if need > offered:
        return Reason.BACKLOG, (
            f"backlog: need {need:.3g} = offered {offered:.3g} + what the ready slots leave "
            f"of the backlog (demand {demand:g})"
        )
    return Reason.FOLLOWING, f"following the offered load {offered:.3g} (demand {demand:g})"
