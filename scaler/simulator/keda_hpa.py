"""KEDA and the HPA, as a pure state machine: what replica count they set, and when.

Knows nothing of traces, pods or our policy: it is fed the answers a scaler
gave (IsActive, GetMetrics) at the moments KEDA and the HPA ask for them, and
returns the replica count they would write to the Deployment. The simulator
drives it from simulated pods; the local demo drives it from real gRPC answers.

Calls, each a pure function (state, config, now, answer) -> state, or all
through `step`; `due` says when the next one happens:

- `keda_poll` (every `polling_interval_s`, KEDA's ScaledObject loop): active
  refreshes `last_active_at` and wakes 0 -> max(minReplicaCount, 1); inactive
  for `cooldown_period_s` since the last activity scales to 0 (only when
  minReplicaCount is 0). KEDA never compares the metric with anything.
- `keda_push` (a streamed `true` from StreamIsActive, KEDA >= 2.18): the same as
  an active poll, at once. A streamed `false` is ignored by KEDA: not modelled.
- `hpa_sync` (every `hpa_sync_s`, 15 s; skipped at 0 replicas, where KEDA owns
  the target): AverageValue, `raw = ceil(metric / target_per_replica)`, unless
  metric / (target x replicas) is within `tolerance` (0.1) of 1; then the
  behavior: stabilisation (scale-up takes the lowest recommendation of its
  window, scale-down the highest of its 300 s window), then rate policies
  (defaults: up by max(100 %, 4 pods) per 15 s, down by 100 % per 15 s), then
  [max(minReplicaCount, 1), maxReplicaCount].

Worked example (target 6.4, 3 replicas): metric 20 -> 20 / 19.2 = 1.04, within
tolerance, stays 3. Metric 40 -> ceil(6.25) = 7 -> allowed (limit max(3 x 2,
3 + 4) = 7) -> 7. Metric then 10 -> raw 2, but the 300 s window still holds the
recommendation 7 -> stays 7 until 300 s after the 7 was recommended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum


class Call(StrEnum):
    KEDA_POLL = "keda_poll"
    KEDA_PUSH = "keda_push"
    HPA_SYNC = "hpa_sync"


@dataclass(frozen=True)
class HpaBehavior:
    """`advanced.horizontalPodAutoscalerConfig.behavior`, the Kubernetes defaults."""

    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 300.0
    scale_up_percent: float = 100.0  # per scale_up_period_s
    scale_up_pods: int = 4  # per scale_up_period_s; the larger of the two applies (Max)
    scale_up_period_s: float = 15.0
    scale_down_percent: float = 100.0  # per scale_down_period_s
    scale_down_period_s: float = 15.0


@dataclass(frozen=True)
class KedaHpaConfig:
    target_per_replica: float  # the metric target (targetSizeFloat), per replica
    polling_interval_s: float = 30.0
    cooldown_period_s: float = 300.0
    min_replicas: int = 0  # minReplicaCount
    max_replicas: int = 100  # maxReplicaCount
    hpa_sync_s: float = 15.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period
    tolerance: float = 0.1
    behavior: HpaBehavior = field(default_factory=HpaBehavior)
    # Where the two loops sit on the clock: they run independently of each other.
    keda_offset_s: float = 0.0
    hpa_offset_s: float = 7.0


@dataclass(frozen=True)
class KedaHpaState:
    replicas: int  # the Deployment's spec.replicas: the answer
    last_active_at: float = -math.inf
    next_poll_at: float = 0.0
    next_sync_at: float = 0.0
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, raw desired), HPA's memory
    changes: tuple[tuple[float, int], ...] = ()  # (time, +/- replicas) the HPA made


def initial_state(config: KedaHpaConfig, replicas: int, now: float = 0.0) -> KedaHpaState:
    """Replicas as found at `now`, in a steady state: active just now, and the HPA
    remembering that it recommended this count (so its first sync cannot drop a warm
    fleet that its stabilisation window would have held)."""
    return KedaHpaState(
        replicas=replicas,
        last_active_at=now,
        recommendations=((now, replicas),) if replicas else (),
        next_poll_at=now + config.keda_offset_s,
        next_sync_at=now + config.hpa_offset_s,
    )


def due(state: KedaHpaState) -> tuple[float, Call]:
    """The next scheduled call (pushes are not scheduled: they come when they come)."""
    if state.next_poll_at <= state.next_sync_at:
        return state.next_poll_at, Call.KEDA_POLL
    return state.next_sync_at, Call.HPA_SYNC


def step(
    state: KedaHpaState, config: KedaHpaConfig, now: float, call: Call, metric: float, active: bool
) -> KedaHpaState:
    if call is Call.KEDA_POLL:
        return keda_poll(state, config, now, active)
    if call is Call.KEDA_PUSH:
        return keda_push(state, config, now) if active else state
    return hpa_sync(state, config, now, metric)


def keda_poll(state: KedaHpaState, config: KedaHpaConfig, now: float, active: bool) -> KedaHpaState:
    state = replace(state, next_poll_at=now + config.polling_interval_s)
    if active:
        return _activate(state, config, now)
    idle_for = now - state.last_active_at
    if state.replicas > 0 and config.min_replicas == 0 and idle_for >= config.cooldown_period_s:
        return replace(state, replicas=0)
    return state


def keda_push(state: KedaHpaState, config: KedaHpaConfig, now: float) -> KedaHpaState:
    return _activate(state, config, now)


def _activate(state: KedaHpaState, config: KedaHpaConfig, now: float) -> KedaHpaState:
    replicas = state.replicas
    if replicas == 0:
        replicas = min(max(config.min_replicas, 1), config.max_replicas)
    return replace(state, replicas=replicas, last_active_at=now)


def raw_desired(metric: float, replicas: int, config: KedaHpaConfig) -> int:
    """AverageValue: the total over the per-replica target, with the tolerance band."""
    target = config.target_per_replica
    if replicas > 0 and abs(metric / (target * replicas) - 1.0) <= config.tolerance:
        return replicas
    # Rounded first so that 12.8 / 6.4 is 2, not 2.0000000000000004 -> 3.
    return math.ceil(round(metric / target, 9))


def hpa_sync(state: KedaHpaState, config: KedaHpaConfig, now: float, metric: float) -> KedaHpaState:
    state = replace(state, next_sync_at=now + config.hpa_sync_s)
    current = state.replicas
    if current == 0:  # scaling is disabled at zero: KEDA owns the wake-up
        return state
    behavior = config.behavior
    raw = raw_desired(round(max(metric, 0.0), 3), current, config)  # KEDA keeps 3 decimals
    keep = max(behavior.scale_up_stabilization_s, behavior.scale_down_stabilization_s)
    history = tuple(r for r in state.recommendations if r[0] > now - keep)
    up = down = raw
    for at, value in history:
        if at > now - behavior.scale_up_stabilization_s:
            up = min(up, value)
        if at > now - behavior.scale_down_stabilization_s:
            down = max(down, value)
    stabilised = min(max(current, up), down)
    desired = _rate_limited(stabilised, current, state.changes, behavior, now)
    floor = max(config.min_replicas, 1)
    desired = max(min(desired, config.max_replicas), floor)
    window = max(behavior.scale_up_period_s, behavior.scale_down_period_s)
    changes = tuple(c for c in state.changes if c[0] > now - window)
    if desired != current:
        changes += ((now, desired - current),)
    return replace(
        state,
        replicas=desired,
        recommendations=(*history, (now, raw)),
        changes=changes,
    )


def _rate_limited(
    desired: int,
    current: int,
    changes: tuple[tuple[float, int], ...],
    behavior: HpaBehavior,
    now: float,
) -> int:
    """Kubernetes' rate policies: the change over a period is measured from the replica
    count at the period's start, so a sync cannot stack a second 100 % on the first."""
    if desired > current:
        added = sum(d for at, d in changes if d > 0 and at > now - behavior.scale_up_period_s)
        start = current - added
        limit = max(
            math.ceil(start * (1 + behavior.scale_up_percent / 100)), start + behavior.scale_up_pods
        )
        return min(desired, max(limit, current))
    if desired < current:
        removed = -sum(d for at, d in changes if d < 0 and at > now - behavior.scale_down_period_s)
        start = current + removed
        limit = int(start * (1 - behavior.scale_down_percent / 100))
        return max(desired, min(limit, current))
    return desired
