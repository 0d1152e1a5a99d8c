"""KEDA and the HPA, emulated over real gRPC: the demo's control plane.

What KEDA does with an `external-push` trigger, against the real scaler
replicas: one channel to all of them with `round_robin` balancing (KEDA's
pooled connection to a headless Service); every `pollingInterval` the
ScaledObject loop calls GetMetricSpec -> GetMetrics -> IsActive, every HPA
sync the metrics adapter calls the same three again, and one StreamIsActive
stays open (reopened after an error with KEDA's backoff, 2 s doubling to 60 s),
whose streamed `true` acts at once. What those answers do to the replica count
is `scaler.simulator.keda_hpa`, the same pure model the simulator uses; this
module only feeds it real answers on the real clock, and tells the caller how
many replicas the Deployment should have.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, replace

import grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.simulator import keda_hpa
from scaler.simulator.keda_hpa import Call, HpaBehavior, KedaHpaConfig, KedaHpaState

log = logging.getLogger(__name__)

_DEADLINE_S = 3.0  # KEDA's HPA path allows about this for the three calls


@dataclass(frozen=True)
class Answer:
    """One round of GetMetricSpec, GetMetrics and IsActive."""

    target_per_replica: float
    metric: float
    active: bool


def keda_config(
    polling_interval_s: float,
    cooldown_period_s: float,
    hpa_sync_s: float,
    min_replicas: int,
    max_replicas: int,
    scale_down_stabilization_s: float,
    rate_period_s: float,
) -> KedaHpaConfig:
    """The ScaledObject and HPA settings; the target comes from GetMetricSpec later."""
    behavior = HpaBehavior(
        scale_down_stabilization_s=scale_down_stabilization_s,
        scale_up_period_s=rate_period_s,
        scale_down_period_s=rate_period_s,
    )
    return KedaHpaConfig(
        target_per_replica=1.0,
        polling_interval_s=polling_interval_s,
        cooldown_period_s=cooldown_period_s,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        hpa_sync_s=hpa_sync_s,
        behavior=behavior,
        keda_offset_s=0.0,
        hpa_offset_s=hpa_sync_s / 2,  # the two loops run independently
    )


class KedaEmulator:
    def __init__(
        self, addresses: list[str], scaled_object: pb.ScaledObjectRef, config: KedaHpaConfig
    ) -> None:
        target = "ipv4:" + ",".join(addresses)
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.lb_policy_name", "round_robin")]
        )
        self._stub = pb_grpc.ExternalScalerStub(self._channel)
        self._ref = scaled_object
        self.config = config
        self.state: KedaHpaState = keda_hpa.initial_state(config, 0, now=0.0)
        self.last: Answer | None = None
        self.calls = 0  # unary RPCs answered
        self.errors = 0  # rounds that failed (KEDA counts them towards `fallback`)
        self.pushes = 0  # `true` received on StreamIsActive
        self._pushed: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stream: grpc.CallIterator[pb.IsActiveResponse] | None = None
        self._stream_thread = threading.Thread(target=self._stream_loop, name="stream", daemon=True)

    @property
    def replicas(self) -> int:
        return self.state.replicas

    def start(self) -> None:
        self._stream_thread.start()

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()  # type: ignore[no-untyped-call]
        self._stream_thread.join(5)
        self._channel.close()

    def tick(self, now: float) -> None:
        """Everything due by `now` (seconds on the caller's clock): pushes, polls, syncs."""
        while not self._pushed.empty():
            if self._pushed.get():
                self.pushes += 1
                self.state = keda_hpa.keda_push(self.state, self.config, now)
        while True:
            at, call = keda_hpa.due(self.state)
            if at > now:
                return
            answer = self._ask()
            if answer is None:  # KEDA logs it and tries again next time
                self.errors += 1
                if call is Call.KEDA_POLL:
                    next_at = now + self.config.polling_interval_s
                    self.state = replace(self.state, next_poll_at=next_at)
                else:
                    self.state = replace(self.state, next_sync_at=now + self.config.hpa_sync_s)
                continue
            if answer.target_per_replica != self.config.target_per_replica:
                self.config = replace(self.config, target_per_replica=answer.target_per_replica)
            self.last = answer
            self.state = keda_hpa.step(
                self.state, self.config, now, call, answer.metric, answer.active
            )

    def _ask(self) -> Answer | None:
        try:
            spec = self._stub.GetMetricSpec(self._ref, timeout=_DEADLINE_S).metricSpecs[0]
            request = pb.GetMetricsRequest(scaledObjectRef=self._ref, metricName=spec.metricName)
            value = self._stub.GetMetrics(request, timeout=_DEADLINE_S).metricValues[0]
            active = self._stub.IsActive(self._ref, timeout=_DEADLINE_S).result
        except grpc.RpcError as exc:
            log.warning("scaler call failed: %s", exc)
            return None
        self.calls += 3
        # KEDA: the float fields win when > 0.
        target = spec.targetSizeFloat if spec.targetSizeFloat > 0 else float(spec.targetSize)
        metric = value.metricValueFloat if value.metricValueFloat > 0 else float(value.metricValue)
        return Answer(target_per_replica=target, metric=metric, active=active)

    def _stream_loop(self) -> None:
        backoff_s = 2.0
        while not self._stop.is_set():
            try:
                stream = self._stub.StreamIsActive(self._ref)
                self._stream = stream
                if self._stop.is_set():
                    stream.cancel()  # type: ignore[no-untyped-call]
                for answer in stream:
                    backoff_s = 2.0
                    self._pushed.put(answer.result)
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                log.warning("StreamIsActive ended: %s; again in %g s", exc, backoff_s)
            if self._stop.wait(backoff_s):
                return
            backoff_s = min(backoff_s * 2, 60.0)
