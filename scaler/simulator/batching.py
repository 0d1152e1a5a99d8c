"""The simulated cluster with a measured pod profile: continuous batching, token by token.

Every request on a replica advances one output token per decode step, and a step takes the
profile's f(B, L) (`scaler.simulator.profile`), B the sequences the replica decodes now and L
their mean context (input + tokens generated so far). A request admitted to a slot is first
prefilled at the profile's rate (its own time: prefill does not stall the others' steps, as
with chunked prefill), which gives its first token; it then joins the batch for its remaining
output tokens.

No step-by-step simulation: between two events on a replica (a request joining or leaving its
batch, a report) B is constant, so the replica keeps a clock of steps done, advancing at
1 / step time. A request joining at step s with n tokens to decode leaves at step s + n, so
the order in which a replica's requests finish is known when they join, and the next
completion time is (its step - steps done) x step time. The mean context is
sum(input + 1 - joined at step) / B + steps done: exact at every event, and held between
events (refreshed at every report, each second).

What the pods report: each replica's sidecar writes, every `REPORT_S`, what it decoded since
its previous write (`scaler.token_curve.Decoded`: steps, seconds, mean sequences), and the
target keeps one `TokenCurve` (`token_curve.TokenCurve.add`, the write script's rule), as it
keeps the service record; the signals carry it.

Admission: the project's queueing path holds requests in Redis and each pod's worker takes
only what it may run (`sidecar/worker.py`, CAPACITY). With a token-latency objective the
worker takes at most the C the latest decision published (`Decision.admit_concurrency`,
capped by the slots, at least 1); without one the example manifests set CAPACITY to
targetConcurrency. So a replica admits at most `admit_at_most`'s limit (its slots until a
controller sets one); the rest waits in the queue, which the scaler counts. Lowering it
cancels nothing: the pod takes nothing new until it runs below the new limit.

The token side of the SLO: every output token after the first is counted with the time of the
step that produced it (a histogram in TOKEN_BIN_MS bins), so the share within any objective is
read off after the run (the first token is the wait / TTFT side).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import replace

import numpy as np

from scaler.service_record import NOTHING_LEARNED, ServiceRecord
from scaler.signals import Signals
from scaler.simulator.cluster import Cluster, ClusterParams, Pod
from scaler.simulator.profile import PodProfile
from scaler.simulator.trace import FloatArray, Trace
from scaler.token_curve import NOTHING_MEASURED, Decoded, TokenCurve

REPORT_S = 1.0  # the sidecar's default report interval (REPORT_INTERVAL_SECONDS)
TOKEN_BIN_MS = 0.01  # the token-time histogram's resolution
TOKEN_BINS = 20_000  # up to 200 ms a step; longer steps are counted in the last bin
WARMUP_S = 300.0  # tokens decoded from then on are also counted apart (a wake's backlog before)


class _Batch:
    """One replica's decoding: the step clock, its batch and what it has not yet reported."""

    __slots__ = (
        "base_sum",
        "clock",
        "decoding",
        "prefilling",
        "rep_seconds",
        "rep_sequences",
        "rep_steps",
        "step_s",
        "steps",
        "version",
    )

    def __init__(self, t: float) -> None:
        self.steps = 0.0  # decode steps done
        self.clock = t  # the time `steps` was counted at
        self.step_s = 0.0  # seconds a step now
        self.decoding: list[tuple[float, int, float]] = []  # (leaves at step, request, context)
        self.prefilling: list[tuple[float, int]] = []  # (prefill ends at, request)
        self.base_sum = 0.0  # sum over the batch of input + 1 - the step it joined at
        self.version = 0
        self.rep_steps = 0.0
        self.rep_seconds = 0.0
        self.rep_sequences = 0.0  # sequences x steps


def token_histogram() -> FloatArray:
    return np.zeros(TOKEN_BINS + 1)


def share_within(histogram: FloatArray, objective_ms: float) -> float:
    """The share of the tokens whose step took <= `objective_ms` (1.0 when none)."""
    total = float(histogram.sum())
    if total <= 0:
        return 1.0
    edge = min(math.floor(objective_ms / TOKEN_BIN_MS + 1e-9), TOKEN_BINS)
    return min(1.0, float(histogram[: edge + 1].sum()) / total)


def token_percentile_ms(histogram: FloatArray, q: float) -> float:
    """The step time (ms, to TOKEN_BIN_MS) within which `q` % of the tokens came."""
    total = float(histogram.sum())
    if total <= 0:
        return 0.0
    index = int(np.searchsorted(np.cumsum(histogram), total * q / 100.0 * (1 - 1e-12)))
    return min(index, TOKEN_BINS) * TOKEN_BIN_MS


class BatchingCluster(Cluster):
    """`Cluster` with decode times from a measured profile (the module docstring)."""

    def __init__(
        self,
        trace: Trace,
        params: ClusterParams,
        horizon_s: float,
        initial_ready: int = 0,
        seed: int = 0,
        remove_starting_first: bool = True,
        served: ServiceRecord = NOTHING_LEARNED,
        curve: TokenCurve = NOTHING_MEASURED,
    ) -> None:
        if params.profile is None:
            raise ValueError("a batching cluster needs a pod profile")
        self.profile: PodProfile = params.profile
        self._input = trace.input_tokens.astype(np.float64).tolist()
        self._prefill_s = (trace.input_tokens / self.profile.prefill_tokens_per_s).tolist()
        self._decode_steps = np.maximum(trace.output_tokens - 1, 0).astype(np.float64).tolist()
        self._batches: dict[Pod, _Batch] = {}
        self._events: list[tuple[float, int, Pod, int]] = []  # (at, serial, pod, version)
        self._event_serial = 0
        self._active: set[Pod] = set()  # decoding, or with steps not yet reported
        self._next_report = math.inf
        self.curve = curve
        self.admit = params.slots_per_replica  # sequences a pod may run at once
        self.tokens = token_histogram()
        self.tokens_late = token_histogram()  # decoded from WARMUP_S on
        super().__init__(
            trace, params, horizon_s, initial_ready, seed, remove_starting_first, served
        )

    def signals(self) -> Signals:
        return replace(super().signals(), token_curve=self.curve)

    @property
    def idle(self) -> bool:
        return not self.queue and not any(
            b.decoding or b.prefilling for b in self._batches.values()
        )

    def advance_to(self, t: float) -> None:
        starting, events = self._starting, self._events
        while True:
            while events and events[0][3] != self._batches[events[0][2]].version:
                heapq.heappop(events)  # superseded by a later retiming of its pod
            next_ready = starting[0][0] if starting else math.inf
            next_pod = events[0][0] if events else math.inf
            at = min(next_ready, next_pod, self._next_report)
            if at > t or at == math.inf:
                break
            if next_ready == at:
                _, _, pod = heapq.heappop(starting)
                if pod.gone_at is None:
                    self._make_ready(pod, at)
            elif next_pod == at:
                _, _, pod, _ = heapq.heappop(events)
                self._pod_event(pod, at)
            else:
                self._report(at)
        self.now = max(self.now, t)

    # -- a replica's batch -------------------------------------------------------------

    def _batch(self, pod: Pod, t: float) -> _Batch:
        batch = self._batches.get(pod)
        if batch is None:
            batch = self._batches[pod] = _Batch(t)
        return batch

    def _advance(self, batch: _Batch, t: float) -> None:
        """Count the steps decoded from the batch's clock to `t` at its present rate."""
        dt = t - batch.clock
        size = len(batch.decoding)
        if dt > 0 and size:
            steps = dt / batch.step_s
            batch.steps += steps
            batch.rep_steps += steps
            batch.rep_seconds += dt
            batch.rep_sequences += steps * size
            step_ms = batch.step_s * 1000.0
            index = min(math.ceil(step_ms / TOKEN_BIN_MS - 1e-9), TOKEN_BINS)
            self.tokens[index] += steps * size
            if batch.clock >= WARMUP_S:
                self.tokens_late[index] += steps * size
        batch.clock = max(batch.clock, t)

    def _retime(self, pod: Pod, batch: _Batch) -> None:
        """The step time at the batch's size and mean context now, and its next event."""
        size = len(batch.decoding)
        if size:
            context = batch.base_sum / size + batch.steps
            batch.step_s = self.profile.step_ms(size, context) / 1000.0
            if pod not in self._active:
                self._active.add(pod)
                if self._next_report == math.inf:
                    self._next_report = (math.floor(batch.clock / REPORT_S) + 1) * REPORT_S
        batch.version += 1
        at = math.inf
        if batch.prefilling:
            at = batch.prefilling[0][0]
        if size:
            at = min(at, batch.clock + (batch.decoding[0][0] - batch.steps) * batch.step_s)
        if at < math.inf:
            self._event_serial += 1
            heapq.heappush(self._events, (at, self._event_serial, pod, batch.version))

    def _pod_event(self, pod: Pod, t: float) -> None:
        batch = self._batches[pod]
        self._advance(batch, t)
        finished: list[int] = []
        while batch.prefilling and batch.prefilling[0][0] <= t:
            _, request = heapq.heappop(batch.prefilling)
            if self._decode_steps[request] <= 0:
                finished.append(request)  # one output token: prefill made it
                continue
            joined = self._input[request] + 1.0 - batch.steps
            leaves = batch.steps + self._decode_steps[request]
            heapq.heappush(batch.decoding, (leaves, request, joined))
            batch.base_sum += joined
        if batch.decoding and batch.decoding[0][0] - batch.steps < 1e-6:
            batch.steps = max(batch.steps, batch.decoding[0][0])  # rounding: the step is done
        while batch.decoding and batch.decoding[0][0] <= batch.steps:
            _, request, joined = heapq.heappop(batch.decoding)
            batch.base_sum -= joined
            finished.append(request)
        if not batch.decoding:
            batch.base_sum = 0.0
        self._retime(pod, batch)
        for request in finished:
            self._done[0] += 1.0
            self._done[1] += t - float(self.start_s[request])
            self._finish_one(pod, t)

    def _report(self, t: float) -> None:
        """Every replica that decoded writes what it decoded since its previous write."""
        for pod in sorted(self._active, key=lambda p: p.created_at):
            batch = self._batches[pod]
            self._advance(batch, t)
            if batch.rep_steps > 0:
                decoded = Decoded(
                    batch.rep_sequences / batch.rep_steps, batch.rep_steps, batch.rep_seconds
                )
                self.curve = self.curve.add(decoded, t)
                batch.rep_steps = batch.rep_seconds = batch.rep_sequences = 0.0
            if batch.decoding:
                self._retime(pod, batch)  # the context has grown: refresh the step time
            else:
                self._active.discard(pod)
        self._next_report = t + REPORT_S if self._active else math.inf

    # -- admission ------------------------------------------------------------------------

    def admit_at_most(self, limit: float | None) -> None:
        """The workers take at most min(slots, max(1, floor(`limit`))) requests a pod (None:
        the slots, CAPACITY); a higher limit takes from the queue at once."""
        slots = self._slots
        admit = slots if limit is None else min(slots, max(1, math.floor(limit)))
        raised = admit > self.admit
        self.admit = admit
        if raised:
            self._dispatch(self.now)

    def _admit_limit(self) -> int:
        return self.admit

    def _start(self, pod: Pod, request: int, t: float) -> None:
        """`request` joins `pod`'s batch at `t`: prefilled first, then decoded with the rest."""
        batch = self._batch(pod, t)
        self._advance(batch, t)
        heapq.heappush(batch.prefilling, (t + self._prefill_s[request], request))
        self._retime(pod, batch)
