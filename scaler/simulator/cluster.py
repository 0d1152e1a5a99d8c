"""The simulated cluster: pods that cold-start and batch, a FIFO queue, and the bookkeeping.

Model, with its parameters (defaults from the SLO-aware capacity issue):

- A replica is a pod with `slots_per_replica` (8) concurrent request slots:
  continuous batching admits a request whenever a slot is free, and a request
  holds its slot for its whole service time.
- Service time = prefill + decode = input_tokens / `prefill_tokens_per_s`
  (10,000) + output_tokens x `decode_s_per_token` (30 ms). Worked example, the
  conversation trace's mean request (1,154 in, 211 out): 0.115 s + 6.33 s =
  6.45 s. Decode speed does not depend on how full the batch is: the limit on
  concurrency stands for the point where it would start to.
- Time to first token (estimate) = wait to start + prefill + one decode step:
  the same request waiting 0 s gets its first token at 0.145 s.
- A new pod is ready after a cold start: fixed (60 s), uniform ("45-90") or
  log-normal ("lognormal:60:0.3", median and sigma). Its GPU is paid from the
  moment it is created, cold start included.
- Requests wait in one FIFO queue when every ready slot is busy, and go to the
  ready pod with the fewest requests in flight (a least-request balancer).
- Scaling down removes pods the way a ReplicaSet does: pods still starting
  first (newest first), then ready pods with the fewest requests in flight
  (what pod-deletion-cost asks for). A removed pod takes no new request and
  drains the ones it runs; its GPU is paid until the last one ends. Draining
  pods are not in the signals (not ready, and not capacity on its way).
- Completions are added to the target's service record as the sidecars' writes add
  them (`scaler.service_record.ServiceRecord`), all those since the last read at once; the
  signals carry its mean.

With a measured pod profile (`ClusterParams.profile`) decode time depends on the batch
and the context: `scaler.simulator.batching.BatchingCluster`, chosen by the engine.

Cost is counted over [0, horizon]: GPU-hours = pod-time alive, idle
replica-hours = pod-time ready with nothing in flight.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from scaler.service_record import NOTHING_LEARNED, Served, ServiceRecord
from scaler.signals import Signals
from scaler.simulator.profile import PodProfile
from scaler.simulator.trace import FloatArray, Trace


@dataclass(frozen=True)
class ColdStart:
    """Seconds from a pod's creation to its readiness."""

    kind: str = "fixed"  # fixed | uniform | lognormal
    a: float = 60.0  # fixed: the value; uniform: low; lognormal: median
    b: float = 0.0  # uniform: high; lognormal: sigma

    @staticmethod
    def parse(text: str) -> ColdStart:
        """'60' | '45-90' | 'lognormal:60:0.3'."""
        try:
            if text.startswith("lognormal:"):
                _, median, sigma = text.split(":")
                cold = ColdStart("lognormal", float(median), float(sigma))
            elif "-" in text.strip("-"):
                low, high = text.split("-")
                cold = ColdStart("uniform", float(low), float(high))
            else:
                cold = ColdStart("fixed", float(text))
        except ValueError:
            raise ValueError(
                f"cold start = {text!r}, must be seconds ('60'), a range ('45-90') "
                "or 'lognormal:MEDIAN:SIGMA'"
            ) from None
        if cold.a < 0 or cold.b < 0 or (cold.kind == "uniform" and cold.b < cold.a):
            raise ValueError(f"cold start = {text!r}, must be non-negative and low <= high")
        return cold

    @property
    def nominal_s(self) -> float:
        """The one figure the oracle plans with: the value, the mean, or the median."""
        return (self.a + self.b) / 2 if self.kind == "uniform" else self.a

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "uniform":
            return float(rng.uniform(self.a, self.b))
        if self.kind == "lognormal":
            return float(self.a * math.exp(self.b * rng.standard_normal()))
        return self.a

    def __str__(self) -> str:
        if self.kind == "uniform":
            return f"{self.a:g}-{self.b:g} s"
        if self.kind == "lognormal":
            return f"lognormal median {self.a:g} s sigma {self.b:g}"
        return f"{self.a:g} s"


@dataclass(frozen=True)
class ClusterParams:
    slots_per_replica: int = 8
    prefill_tokens_per_s: float = 10_000.0
    decode_s_per_token: float = 0.030
    cold_start: ColdStart = field(default_factory=ColdStart)
    # A measured pod profile (`scaler.simulator.batching`); None: the constant model above.
    profile: PodProfile | None = None
    # The token-latency objective the runs are scored by and the oracle plans with (ms).
    token_objective_ms: float | None = None

    def service_s(self, trace: Trace) -> FloatArray:
        """Service times as planned: with a profile, every replica decoding
        `planning_slots` sequences at the trace's mean context."""
        if self.profile is not None:
            step_s = self.profile.step_ms(self.planning_slots(trace), _mean_context(trace)) / 1000
            decode_steps = np.maximum(trace.output_tokens - 1, 0)
            return trace.input_tokens / self.profile.prefill_tokens_per_s + decode_steps * step_s
        return trace.input_tokens / self.prefill_tokens_per_s + (
            trace.output_tokens * self.decode_s_per_token
        )

    def first_token_s(self, trace: Trace) -> FloatArray:
        """From start of service to the first token: prefill and one decode step (with a
        profile, prefill gives the first token)."""
        if self.profile is not None:
            return trace.input_tokens / self.profile.prefill_tokens_per_s
        return trace.input_tokens / self.prefill_tokens_per_s + self.decode_s_per_token

    def planning_slots(self, trace: Trace) -> int:
        """The requests a replica carries in the clairvoyant floor (`oracle`): its slots; with
        a profile and an objective, the most whose step stays within the objective at the
        trace's mean context."""
        if self.profile is None or self.token_objective_ms is None:
            return self.slots_per_replica
        within = self.profile.concurrency_within(self.token_objective_ms, _mean_context(trace))
        return max(1, min(self.slots_per_replica, math.floor(within)))


def _mean_context(trace: Trace) -> float:
    """A decoding sequence's mean context: its input and half its output."""
    if len(trace) == 0:
        return 0.0
    return float(np.mean(trace.input_tokens + trace.output_tokens / 2))


class Pod:
    __slots__ = ("created_at", "gone_at", "idle_since", "inflight", "ready", "ready_at")

    def __init__(self, created_at: float, ready_at: float) -> None:
        self.created_at = created_at
        self.ready_at = ready_at
        self.ready = False
        self.inflight = 0
        self.idle_since: float | None = None
        self.gone_at: float | None = None


@dataclass
class Accounts:
    gpu_s: float = 0.0
    ready_s: float = 0.0
    idle_s: float = 0.0
    cold_starts: int = 0


class Cluster:
    """Pods, queue and clock of one run. The engine moves time forward with `advance_to`."""

    def __init__(
        self,
        trace: Trace,
        params: ClusterParams,
        horizon_s: float,
        initial_ready: int = 0,
        seed: int = 0,
        remove_starting_first: bool = True,
        served: ServiceRecord = NOTHING_LEARNED,
    ) -> None:
        self.params = params
        self.horizon_s = horizon_s
        self.service_s = params.service_s(trace).tolist()
        self.start_s = np.full(len(trace), np.nan)
        self.now = 0.0
        self.queue: deque[int] = deque()
        self.live: list[Pod] = []  # starting or ready, not removed
        self.accounts = Accounts()
        self._remove_starting_first = remove_starting_first
        self._rng = np.random.default_rng(seed)
        self._slots = params.slots_per_replica
        self._starting: list[tuple[float, int, Pod]] = []  # heap by ready time
        self._running: list[tuple[float, int, Pod]] = []  # heap by completion time
        self._serial = 0
        self._record = served  # the target's service record, as the pods' writes keep it
        self._done: list[float] = [0.0, 0.0]  # completed, busy s: not yet in the record
        self._inflight_ready = 0
        self._pods_ready = 0
        for _ in range(initial_ready):
            pod = Pod(0.0, 0.0)
            self.live.append(pod)
            self._make_ready(pod, 0.0)

    # -- what the sidecars and the queue would report --------------------------------

    @property
    def pods_ready(self) -> int:
        return self._pods_ready

    @property
    def pods_starting(self) -> int:
        return len(self.live) - self._pods_ready

    @property
    def inflight(self) -> int:
        """Requests executing on ready pods (draining pods no longer report)."""
        return self._inflight_ready

    def signals(self) -> Signals:
        capacity = float(self._slots)
        return Signals(
            queue_depth=float(len(self.queue)),
            inflight=float(self._inflight_ready),
            waiting=0.0,  # the queue is ours: pods admit only what they have slots for
            pods_reported=len(self.live),
            pods_ready=self._pods_ready,
            capacity_ready=capacity * self._pods_ready,
            capacity_starting=capacity * self.pods_starting,
            service_s=self.served.mean_s,
        )

    @property
    def served(self) -> ServiceRecord:
        """The service record with every completion so far in it."""
        if self._done[0]:
            self._record = self._record.add(Served(*self._done))
            self._done = [0.0, 0.0]
        return self._record

    @property
    def idle(self) -> bool:
        return not self.queue and not self._running

    # -- time and requests ----------------------------------------------------------

    def advance_to(self, t: float) -> None:
        """Process readiness and completions up to and including `t`, in time order."""
        starting, running = self._starting, self._running
        while True:
            next_ready = starting[0][0] if starting else math.inf
            next_done = running[0][0] if running else math.inf
            if min(next_ready, next_done) > t or not (starting or running):
                break
            if next_ready <= next_done:
                _, _, pod = heapq.heappop(starting)
                if pod.gone_at is None:
                    self._make_ready(pod, next_ready)
            else:
                _, request, pod = heapq.heappop(running)
                self._done[0] += 1.0
                self._done[1] += self.service_s[request]
                self._finish_one(pod, next_done)
        self.now = max(self.now, t)

    def arrive(self, request: int, t: float) -> None:
        self.advance_to(t)
        self.queue.append(request)
        self._dispatch(t)

    def admit_at_most(self, limit: float | None) -> None:
        """What the pods' workers may take at once (`scaler.simulator.batching`). The constant
        model's slots already stand for the concurrency a pod is run at: it admits by them."""

    # -- scaling --------------------------------------------------------------------

    def set_replicas(self, t: float, replicas: int, cold_start_s: float | None = None) -> None:
        """Create or remove pods so `replicas` are starting or ready."""
        self.advance_to(t)
        while len(self.live) < replicas:
            cold = (
                self.params.cold_start.sample(self._rng) if cold_start_s is None else cold_start_s
            )
            pod = Pod(t, t + cold)
            self.live.append(pod)
            self.accounts.cold_starts += 1
            self._serial += 1
            heapq.heappush(self._starting, (pod.ready_at, self._serial, pod))
        if len(self.live) > replicas:
            for pod in self._removal_order()[: len(self.live) - replicas]:
                self._remove(pod, t)
        self.advance_to(t)  # a zero cold start is ready at once

    def _removal_order(self) -> list[Pod]:
        starting = [p for p in reversed(self.live) if not p.ready]
        ready = sorted((p for p in self.live if p.ready), key=lambda p: (p.inflight, -p.created_at))
        return starting + ready if self._remove_starting_first else ready + starting

    def _remove(self, pod: Pod, t: float) -> None:
        self.live.remove(pod)
        if pod.ready:
            self._pods_ready -= 1
            self._inflight_ready -= pod.inflight
            self._stop_idle(pod, t)
        if pod.inflight == 0:
            self._gone(pod, t)
        else:
            pod.gone_at = math.inf  # draining: settled when its last request ends

    # -- internals ------------------------------------------------------------------

    def _make_ready(self, pod: Pod, t: float) -> None:
        pod.ready = True
        pod.ready_at = t
        pod.idle_since = t
        self._pods_ready += 1
        self._dispatch(t)

    def _finish_one(self, pod: Pod, t: float) -> None:
        pod.inflight -= 1
        if pod.gone_at is not None:  # draining
            if pod.inflight == 0:
                self._gone(pod, t)
            return
        self._inflight_ready -= 1
        if pod.inflight == 0:
            pod.idle_since = t
        self._dispatch(t)

    def _admit_limit(self) -> int:
        """Requests a ready pod runs at once: its slots."""
        return self._slots

    def _dispatch(self, t: float) -> None:
        """Queued requests to the ready pod with the fewest in flight, while one has room."""
        admit = self._admit_limit()
        if not self.queue or self._inflight_ready >= self._pods_ready * admit:
            return
        ready = [p for p in self.live if p.ready]
        queue = self.queue
        while queue:
            pod = min(ready, key=_inflight)
            if pod.inflight >= admit:
                return
            request = queue.popleft()
            self.start_s[request] = t
            if pod.inflight == 0:
                self._stop_idle(pod, t)
            pod.inflight += 1
            self._inflight_ready += 1
            self._start(pod, request, t)

    def _start(self, pod: Pod, request: int, t: float) -> None:
        """`request` starts on `pod` at `t`: it ends a service time later."""
        heapq.heappush(self._running, (t + self.service_s[request], request, pod))

    def _stop_idle(self, pod: Pod, t: float) -> None:
        if pod.idle_since is not None:
            self.accounts.idle_s += self._clipped(pod.idle_since, t)
            pod.idle_since = None

    def _gone(self, pod: Pod, t: float) -> None:
        pod.gone_at = t
        self.accounts.gpu_s += self._clipped(pod.created_at, t)
        if pod.ready:
            self.accounts.ready_s += self._clipped(pod.ready_at, t)

    def _clipped(self, start: float, end: float) -> float:
        return max(0.0, min(end, self.horizon_s) - max(start, 0.0))

    def close(self) -> Accounts:
        """Settle the pods still alive at the end of the run (charged up to the horizon)."""
        end = max(self.now, self.horizon_s)
        for pod in self.live:
            if pod.ready:
                self._stop_idle(pod, end)
            self._gone(pod, end)
        self.live = []
        return self.accounts


def _inflight(pod: Pod) -> int:
    return pod.inflight
