"""Who sets the replica count: our scaler through KEDA and the HPA, and the baselines.

Every controller is asked at its own moments (`next_tick_s`, and `on_arrival`
for the ones with a push channel) and writes a replica count to the cluster.
All start from the same warm fleet, so the figures compare.

- `ScalerController`: the real `scaler.policy.decide`, called exactly where the
  server calls it. KEDA's poll (every pollingInterval) asks GetMetrics then
  IsActive; each HPA sync (15 s) asks GetMetrics then IsActive again (KEDA's
  metrics adapter repeats the calls unless `useCachedMetrics`); each call is
  one decision whose `new_state` the next one starts from, as Redis keeps it.
  StreamIsActive (trigger `external-push`) decides again on every queue change
  while it waits for a change (inactive, or active with nothing holding it),
  and at least every `stream_interval_s` (10 s); a streamed `true` wakes KEDA
  at once. The HPA skips its sync at zero replicas, so no decision then.
  Pod-report changes also wake the stream in the server; they are not
  modelled (they only add samples of the same demand).
- `MetricController`: a scaler with no memory, for KEDA's built-in Redis list
  scaler (metric = LLEN, the queue only; target `listLength`, default 5;
  active while LLEN > `activationListLength`, 0) and for an HPA on slot
  utilisation (metric = busy slots / slots per replica, target 0.8 per
  replica, minReplicas 1: it sees busy pods, never the queue).
- `FixedController`: a fleet sized for the peak (or a given size), never changed.
- `ScheduleController`: replays the oracle's schedule (see `oracle`).

What each admits (`admission`, a pod's worker taking at most that many at once; only a
measured pod profile uses it, `batching`): our scaler with tokenLatencyMs, the C each of its
decisions publishes; without, targetConcurrency (the workers' CAPACITY in the example
manifests); keda-defaults the same; the oracle's and fixed fleets, the concurrency the
oracle planned a replica at; the other baselines, the slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scaler import window
from scaler.policy import Decision, bucket_width, decide
from scaler.policy_state import PolicyState
from scaler.signals import Signals
from scaler.simulator import keda_hpa
from scaler.simulator.cluster import Cluster
from scaler.simulator.keda_hpa import Call, KedaHpaConfig
from scaler.target_config import TargetConfig
from scaler.token_curve import replica_concurrency

# (signals) -> (metric for the HPA, active for KEDA)
MetricFn = Callable[[Signals], tuple[float, bool]]


class Controller:
    name = "controller"
    remove_starting_first = True  # a ReplicaSet deletes pods not yet ready first

    def __init__(self) -> None:
        self.desired = 0
        self.scale_events = 0
        self.decisions = 0
        # (t, per-replica concurrency) of every decision sized by tokenLatencyMs
        self.concurrency_log: list[tuple[float, float]] = []
        # What a pod's worker takes at once (`Cluster.admit_at_most`); None: its slots.
        self.admission: float | None = None

    def start(self, replicas: int) -> None:
        self.desired = replicas

    def publish_admission(self, cluster: Cluster) -> None:
        """What the pods' workers find when the run starts (`Cluster.admit_at_most`)."""
        cluster.admit_at_most(self.admission)

    def next_tick_s(self) -> float:
        return math.inf

    def tick(self, now: float, cluster: Cluster) -> None:
        """Do what is due at `now`."""

    def on_arrival(self, now: float, cluster: Cluster) -> None:
        """A request was just queued (or started) at `now`."""

    def _apply(
        self, now: float, cluster: Cluster, replicas: int, cold_start_s: float | None = None
    ) -> None:
        if replicas != self.desired:
            self.scale_events += 1
            self.desired = replicas
        cluster.set_replicas(now, replicas, cold_start_s)


class ScalerController(Controller):
    def __init__(
        self,
        config: TargetConfig,
        keda: KedaHpaConfig,
        stream: bool = True,
        stream_interval_s: float = 10.0,
        name: str = "llm-keda-scaler",
    ) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.keda = keda
        self.policy_state = PolicyState()
        self.control = keda_hpa.initial_state(keda, 0)
        self._stream = stream
        self._stream_interval_s = stream_interval_s
        self._streamed: bool | None = None  # last value the stream sent
        self._stream_next_at = 0.0 if stream else math.inf
        self._stream_waits_on_change = stream
        # Without an objective the workers' CAPACITY is targetConcurrency (the example
        # manifests); with one they take the C each decision publishes, their slots before.
        if config.token_latency_ms is None:
            self.admission = config.target_concurrency

    def start(self, replicas: int) -> None:
        super().start(replicas)
        self.control = keda_hpa.initial_state(self.keda, replicas)
        self.policy_state = seeded_state(self.config, replicas)

    def publish_admission(self, cluster: Cluster) -> None:
        """With the objective, the C the scaler kept publishing while KEDA polled it through
        the quiet night: the one the token curve found at the start allows (the decision's
        own rule; targetConcurrency with nothing measured)."""
        if self.config.token_latency_ms is not None:
            signals = cluster.signals()
            slots = signals.capacity_ready / signals.pods_ready if signals.pods_ready else 0.0
            self.admission = replica_concurrency(
                signals.token_curve,
                self.config.token_latency_ms,
                self.config.target_concurrency,
                slots,
            ).concurrency
        super().publish_admission(cluster)

    def next_tick_s(self) -> float:
        return min(keda_hpa.due(self.control)[0], self._stream_next_at)

    def tick(self, now: float, cluster: Cluster) -> None:
        at, call = keda_hpa.due(self.control)
        if at <= now:
            if call is Call.HPA_SYNC and self.control.replicas == 0:
                self.control = keda_hpa.hpa_sync(self.control, self.keda, now, 0.0)
            else:
                metrics = self._decide(now, cluster)  # GetMetrics
                activity = self._decide(now, cluster)  # IsActive
                self.control = keda_hpa.step(
                    self.control, self.keda, now, call, metrics.metric_value, activity.active
                )
        if self._stream_next_at <= now:
            self._stream_check(now, cluster)
        self._apply(now, cluster, self.control.replicas)

    def on_arrival(self, now: float, cluster: Cluster) -> None:
        if self._stream_waits_on_change:
            self._stream_check(now, cluster)
            if self.control.replicas != self.desired:
                self._apply(now, cluster, self.control.replicas)

    def _stream_check(self, now: float, cluster: Cluster) -> None:
        decision = self._decide(now, cluster)
        if decision.active and self._streamed is not True:
            self.control = keda_hpa.keda_push(self.control, self.keda, now)
        self._streamed = decision.active
        until = decision.new_state.active_until
        holding = decision.active and until > now
        # As the server's _until_change: held activity waits for the clock only.
        self._stream_waits_on_change = not holding
        wake = now + self._stream_interval_s
        self._stream_next_at = min(wake, until) if holding else wake

    def _decide(self, now: float, cluster: Cluster) -> Decision:
        decision = decide(cluster.signals(), self.policy_state, self.config, now)
        self.policy_state = decision.new_state
        self.decisions += 1
        if self.config.token_latency_ms is not None:
            self.concurrency_log.append((now, decision.replica_concurrency))
            self.admission = decision.admit_concurrency
            cluster.admit_at_most(self.admission)
        return decision


def seeded_state(config: TargetConfig, replicas: int, now: float = 0.0) -> PolicyState:
    """The policy state as found with `replicas` warm, in a steady state: one sample at
    `now` of the demand this fleet is sized for (as `keda_hpa.initial_state` has the
    HPA remember recommending it), so a warm fleet is not dropped at the first sync
    because the trace begins empty."""
    if replicas <= 0:
        return PolicyState()
    bucket_s = bucket_width(config)
    sample = ((window.bucket_of(now, bucket_s), replicas * config.replica_target),)
    return PolicyState(bucket_s=bucket_s, needed=sample)


class MetricController(Controller):
    def __init__(self, name: str, keda: KedaHpaConfig, metric: MetricFn) -> None:
        super().__init__()
        self.name = name
        self.keda = keda
        self.metric = metric
        self.control = keda_hpa.initial_state(keda, 0)

    def start(self, replicas: int) -> None:
        super().start(replicas)
        self.control = keda_hpa.initial_state(self.keda, replicas)

    def next_tick_s(self) -> float:
        return keda_hpa.due(self.control)[0]

    def tick(self, now: float, cluster: Cluster) -> None:
        _, call = keda_hpa.due(self.control)
        value, active = self.metric(cluster.signals())
        self.decisions += 1
        self.control = keda_hpa.step(self.control, self.keda, now, call, value, active)
        self._apply(now, cluster, self.control.replicas)


def concurrency_metric() -> MetricFn:
    """The demand now (in flight + queued), no memory; active while there is any."""

    def metric(signals: Signals) -> tuple[float, bool]:
        return signals.demand, signals.demand > 0

    return metric


def redis_list_metric(activation_list_length: float = 0.0) -> MetricFn:
    def metric(signals: Signals) -> tuple[float, bool]:
        return signals.queue_depth, signals.queue_depth > activation_list_length

    return metric


def slot_utilisation_metric(slots_per_replica: int) -> MetricFn:
    def metric(signals: Signals) -> tuple[float, bool]:
        return signals.inflight / slots_per_replica, True

    return metric


class FixedController(Controller):
    """A fleet never changed: `replicas`, or (None) the peak the oracle needs."""

    def __init__(self, replicas: int | None = None) -> None:
        super().__init__()
        self.replicas = replicas
        self.name = "fixed-peak" if replicas is None else f"fixed-{replicas}"


class ScheduleController(Controller):
    """Applies (time, replica change) steps; pods it orders take exactly `cold_start_s`."""

    name = "oracle"
    remove_starting_first = False  # it knows which replica a change means: the idle ready one

    def __init__(self, schedule: tuple[tuple[float, int], ...], cold_start_s: float) -> None:
        super().__init__()
        self._schedule = schedule
        self._next = 0
        self._cold_start_s = cold_start_s

    def next_tick_s(self) -> float:
        return self._schedule[self._next][0] if self._next < len(self._schedule) else math.inf

    def tick(self, now: float, cluster: Cluster) -> None:
        replicas = self.desired
        while self._next < len(self._schedule) and self._schedule[self._next][0] <= now:
            replicas += self._schedule[self._next][1]
            self._next += 1
        self._apply(now, cluster, replicas, self._cold_start_s)
