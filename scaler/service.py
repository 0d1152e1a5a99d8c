"""The KEDA adapter: ExternalScaler RPCs -> metadata -> Redis snapshot -> decision -> response.

Kept thin on purpose: parsing lives in `target_config`, reading in `store`, the
decision in `policy`. An IsActive right after an active GetMetrics answers from
that decision, so KEDA cannot see "demand 12" and "inactive" from one poll.
GetMetricSpec is derived from the metadata alone and never touches Redis: KEDA
counts no failure for it, so a Redis outage there would bypass its `fallback`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.bounded import put_bounded
from scaler.clock import MONOTONIC, Clock, DecisionClock
from scaler.policy import Decision, decide, derived, needs_saving
from scaler.policy_state import PolicyState
from scaler.signals import Signals
from scaler.state_codec import merge_states, policy_key
from scaler.store import NoValidReports, QueueError, Snapshot, StoreUnavailable
from scaler.target_config import RETIRED_KEYS, MetadataError, TargetConfig, parse_target_config
from scaler.telemetry import ScalerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

_KEDA_INDEX_PREFIX = re.compile(r"^s\d+-")
# KEDA sends IsActive right after GetMetrics, on the same connection: a decision
# younger than this answers it. Reports arrive each second; an answer this old is fresh.
POLL_PAIR_S = 0.5
_REMEMBERED_TARGETS = 10_000  # ~2 KB each at most: bounded memory whatever KEDA sends
# Pods reporting this long with tokenLatencyMs set and no token time measured: they cannot
# measure it (a sidecar finds token time in TensorRT-LLM's or vLLM's metrics only).
NO_TOKEN_TIME_WARN_S = 300.0
# The admit key is written when its value moves by more than this share, or its last write is
# this old (refreshing its TTL, and restoring it after a flush): while C is steady, one SET a
# minute per target, not one a poll.
ADMIT_CHANGE = 0.01
ADMIT_REWRITE_S = 60.0


class SnapshotStore(Protocol):
    """What the service needs of a store (`scaler.store.TargetStore` in production): one
    snapshot of a target per decision, and the merge of the state the decision leaves."""

    async def read(
        self, config: TargetConfig, now: float | None = None, timeout_s: float | None = None
    ) -> Snapshot: ...

    async def save_state(
        self, config: TargetConfig, state: PolicyState, now: float, timeout_s: float | None = None
    ) -> None: ...

    async def write_admit(
        self, config: TargetConfig, concurrency: float, timeout_s: float | None = None
    ) -> None: ...


class KeyWatch(Protocol):
    """What StreamIsActive needs of the key events (`scaler.key_events.KeyEvents`)."""

    def watch(self, keys: Iterable[str]) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever one of `keys` changes."""
        ...


class RpcFailure(Exception):
    """An answer that is a gRPC error status, with a message for the operator."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@lru_cache(maxsize=4096)
def _parse_cached(namespace: str, name: str, items: tuple[tuple[str, str], ...]) -> TargetConfig:
    # An unknown key raises MetadataError (INVALID_ARGUMENT, on the ScaledObject's status).
    parsed = parse_target_config(namespace, name, dict(items))
    for key in sorted(parsed.retired_keys):  # cached: logged once per distinct metadata
        log.warning("%s/%s: %r is no longer used: %s", namespace, name, key, RETIRED_KEYS[key])
    return parsed.config


def target_config_of(ref: pb.ScaledObjectRef) -> TargetConfig:
    """The ScaledObject's trigger metadata parsed (cached); bad metadata is INVALID_ARGUMENT."""
    metadata: Mapping[str, str] = ref.scalerMetadata
    try:
        return _parse_cached(ref.namespace, ref.name, tuple(sorted(metadata.items())))
    except MetadataError as exc:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


@lru_cache(maxsize=4096)
def _log_derived(config: TargetConfig) -> None:
    """Once per distinct metadata: the values the scaler derives for it, and from what (a key
    written is obeyed as written and not listed)."""
    found = derived(config)
    if config.token_latency_ms is not None:
        found.append(
            "the per-replica concurrency: learned from the pods' token time within "
            f"tokenLatencyMs {config.token_latency_ms:g} ms, targetConcurrency "
            f"{config.target_concurrency:g} as the start until enough is measured"
        )
    log.info(
        "%s: derived values: %s",
        _target(config),
        "; ".join(found) if found else "none (every key with a derived default is written)",
    )


def metric_spec(config: TargetConfig) -> pb.GetMetricSpecResponse:
    """GetMetricSpec's answer: the target's one metric, with its per-replica target."""
    target = config.replica_target
    spec = pb.MetricSpec(
        metricName=config.metric_name, targetSize=math.ceil(target), targetSizeFloat=target
    )
    return pb.GetMetricSpecResponse(metricSpecs=[spec])


class TokenTimeWatch:
    """Says once per target when tokenLatencyMs is set and its pods have reported for
    NO_TOKEN_TIME_WARN_S without any token time measured: the objective then sizes nothing
    and targetConcurrency is used (plain Triton exposes no token time). Judged on the
    decisions' clock; a target whose pods stop reporting starts counting again."""

    _WARNED = -math.inf

    def __init__(self) -> None:
        self._since: OrderedDict[str, float] = OrderedDict()  # first decision without it

    def observe(self, config: TargetConfig, signals: Signals, now: float) -> None:
        if config.token_latency_ms is None:
            return
        key = policy_key(config)
        since = self._since.get(key)
        if signals.token_curve.bins:
            self._since.pop(key, None)
        elif since == self._WARNED:
            return
        elif signals.pods_reported == 0:
            self._since.pop(key, None)
        elif since is None:
            put_bounded(self._since, key, now, _REMEMBERED_TARGETS)
        elif now - since >= NO_TOKEN_TIME_WARN_S:
            self._since[key] = self._WARNED
            log.warning(
                "%s: tokenLatencyMs set but no pod measures token time (plain Triton? the "
                "sidecar reads TensorRT-LLM or vLLM metrics): targetConcurrency %g is used",
                _target(config),
                config.target_concurrency,
            )


class AdmitWrites:
    """When this scaler process writes a target's admit key: the first decision with
    tokenLatencyMs, then a change of more than ADMIT_CHANGE from what it last wrote, or
    ADMIT_REWRITE_S since (on the decisions' clock; a clock that went back writes too).
    Every scaler replica writes the same value, so their writes never disagree."""

    def __init__(self) -> None:
        self._written: OrderedDict[str, tuple[float, float]] = OrderedDict()  # value, at

    def due(self, key: str, value: float, now: float) -> bool:
        last = self._written.get(key)
        if last is None:
            return True
        written, at = last
        return abs(value - written) > ADMIT_CHANGE * written or not 0 <= now - at < ADMIT_REWRITE_S

    def wrote(self, key: str, value: float, now: float) -> None:
        put_bounded(self._written, key, (value, now), _REMEMBERED_TARGETS)


class ExternalScalerService(pb_grpc.ExternalScalerServicer):
    def __init__(
        self,
        store: SnapshotStore,
        metrics: ScalerMetrics,
        stopping: asyncio.Event,
        key_events: KeyWatch,
        stream_interval_s: float,
        clock: DecisionClock,
        max_streams: int = 10_000,
        monotonic: Clock = MONOTONIC,
    ) -> None:
        """`clock`: the decisions' (Redis's in production); `monotonic`: the one that pairs
        GetMetrics with the IsActive right after it (POLL_PAIR_S), stepped by tests."""
        self._store = store
        self._metrics = metrics
        self._stopping = stopping
        self._key_events = key_events
        self._stream_interval_s = stream_interval_s
        self._clock = clock
        self._monotonic = monotonic
        self._max_streams = max_streams
        self._streams_open = 0
        # What this replica last decided, per ScaledObject: a floor under what Redis
        # returns, so state lost with a Redis restart is refilled, never forgotten.
        self._remembered: OrderedDict[str, PolicyState] = OrderedDict()
        # GetMetrics's latest decision per ScaledObject, for the IsActive that follows it.
        self._handed: OrderedDict[str, tuple[float, TargetConfig, Decision]] = OrderedDict()
        self.on_target: Callable[[TargetConfig], None] = lambda config: None  # the pod watch
        self._token_time = TokenTimeWatch()
        self._admit_writes = AdmitWrites()

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: Context
    ) -> pb.GetMetricSpecResponse:
        async def answer() -> pb.GetMetricSpecResponse:
            config = target_config_of(request)
            _log_derived(config)
            return metric_spec(config)

        return await self._unary("GetMetricSpec", context, answer)

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: Context
    ) -> pb.GetMetricsResponse:
        async def answer() -> pb.GetMetricsResponse:
            config = target_config_of(request.scaledObjectRef)
            asked = _KEDA_INDEX_PREFIX.sub("", request.metricName)
            if request.metricName and asked != config.metric_name:
                raise RpcFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"metricName = {request.metricName!r}, must be {config.metric_name!r} "
                    "(the name GetMetricSpec returns for this ScaledObject)",
                )
            decision = await self._decide(config, context.time_remaining())
            if decision.active:
                self._hand_to_is_active(config, decision)
            value = decision.metric_value
            metric = pb.MetricValue(
                metricName=config.metric_name,
                metricValue=math.ceil(value),
                metricValueFloat=value,
            )
            return pb.GetMetricsResponse(metricValues=[metric])

        return await self._unary("GetMetrics", context, answer)

    async def IsActive(self, request: pb.ScaledObjectRef, context: Context) -> pb.IsActiveResponse:
        async def answer() -> pb.IsActiveResponse:
            config = target_config_of(request)
            decision = self._from_get_metrics(config)
            if decision is None:
                decision = await self._decide(config, context.time_remaining())
            return pb.IsActiveResponse(result=decision.active)

        return await self._unary("IsActive", context, answer)

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: Context
    ) -> AsyncIterator[pb.IsActiveResponse]:
        """Send the current state at once, then every change, until shutdown.

        Inactive, the stream sleeps until the queue or the pod reports change
        (keyspace notifications), so the first request queued at zero is pushed
        at once. Active, nothing but time can end the activity, so it sleeps
        until the scale-to-zero delay would run out. Either way it re-checks
        every STREAM_INTERVAL_SECONDS, in case an event was missed.

        A failed read sends nothing and keeps the stream: KEDA acts only on a
        streamed `true`, and the polled GetMetrics carries the error to its fallback."""
        config = await self._config_or_abort("StreamIsActive", request, context)
        await self._admit_stream("StreamIsActive", context)
        try:
            async for response in self._active_changes(config):
                yield response
        finally:
            self._streams_open -= 1
        self._metrics.rpc_requests.labels("StreamIsActive", grpc.StatusCode.OK.name).inc()

    async def _active_changes(self, config: TargetConfig) -> AsyncIterator[pb.IsActiveResponse]:
        last: bool | None = None
        keys = [config.report_keys.reports, *config.queue_keys]
        with self._metrics.streams_open.labels("StreamIsActive").track_inprogress():
            async with self._key_events.watch(keys) as changed:
                while not self._stopping.is_set():
                    changed.clear()
                    try:
                        decision: Decision | None = await self._decide(config, None)
                    except RpcFailure as failure:
                        log.warning("StreamIsActive: %s", failure.message)
                        decision = None
                    if decision is not None and decision.active != last:
                        last = decision.active
                        yield pb.IsActiveResponse(result=decision.active)
                    await self._until_change(changed, decision)

    async def StreamMetricSpec(
        self, request: pb.ScaledObjectRef, context: Context
    ) -> AsyncIterator[pb.GetMetricSpecResponse]:
        """The spec depends on the metadata alone, which cannot change within one stream:
        send it once, then hold the stream open until shutdown."""
        config = await self._config_or_abort("StreamMetricSpec", request, context)
        await self._admit_stream("StreamMetricSpec", context)
        try:
            with self._metrics.streams_open.labels("StreamMetricSpec").track_inprogress():
                yield metric_spec(config)
                await self._stopping.wait()
        finally:
            self._streams_open -= 1
        self._metrics.rpc_requests.labels("StreamMetricSpec", grpc.StatusCode.OK.name).inc()

    async def _decide(self, config: TargetConfig, time_remaining_s: float | None) -> Decision:
        self.on_target(config)
        now = self._clock.now()
        try:
            snapshot = await self._store.read(config, now, time_remaining_s)
            state = self._with_remembered(config, snapshot.state)
            decision = decide(snapshot.signals, state, config, snapshot.now)
            self._remember(config, decision.new_state)
            # Saved before answering: another replica's next answer must include this sample.
            if needs_saving(snapshot.state, decision.new_state):
                await self._store.save_state(
                    config, decision.new_state, snapshot.now, time_remaining_s
                )
        except StoreUnavailable as exc:
            self._metrics.redis_errors.labels("unavailable").inc()
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, f"{_target(config)}: {exc}") from None
        except NoValidReports as exc:
            self._metrics.redis_errors.labels("invalid_reports").inc()
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, f"{_target(config)}: {exc}") from None
        except QueueError as exc:
            self._metrics.redis_errors.labels("queue").inc()
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION, f"{_target(config)}: {exc}"
            ) from None
        self._metrics.redis_last_success.set_to_current_time()
        self._metrics.record_decision(config, snapshot.signals, decision)
        self._token_time.observe(config, snapshot.signals, snapshot.now)
        if decision.admit_concurrency is not None:
            await self._publish_admit(
                config, decision.admit_concurrency, snapshot.now, time_remaining_s
            )
        log.debug("%s: %s (%s)", _target(config), decision.reason.value, decision.detail)
        return decision

    async def _publish_admit(
        self, config: TargetConfig, concurrency: float, now: float, time_remaining_s: float | None
    ) -> None:
        """Write the admit key the workers take by, when it is due. A failed write is logged
        and tried again at the next decision; the decision itself stands."""
        key = config.report_keys.admit
        if not self._admit_writes.due(key, concurrency, now):
            return
        try:
            await self._store.write_admit(config, concurrency, time_remaining_s)
        except StoreUnavailable as exc:
            self._metrics.redis_errors.labels("unavailable").inc()
            log.warning("%s: admit key %s not written: %s", _target(config), key, exc)
            return
        self._admit_writes.wrote(key, concurrency, now)

    async def _unary(self, method: str, context: Context, answer: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await answer()
        except RpcFailure as failure:
            code = failure.code
            if code is not grpc.StatusCode.INVALID_ARGUMENT:
                log.warning("%s: %s", method, failure.message)
            await _abort(context, failure)
        except Exception:  # never a crash: answer INTERNAL and keep serving
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            await _abort(context, RpcFailure(code, f"{method}: internal error, see scaler log"))
        finally:
            self._metrics.rpc_requests.labels(method, code.name).inc()
            self._metrics.rpc_duration.labels(method).observe(time.perf_counter() - started)

    async def _config_or_abort(
        self, method: str, request: pb.ScaledObjectRef, context: Context
    ) -> TargetConfig:
        try:
            return target_config_of(request)
        except RpcFailure as failure:
            self._metrics.rpc_requests.labels(method, failure.code.name).inc()
            await _abort(context, failure)

    def _hand_to_is_active(self, config: TargetConfig, decision: Decision) -> None:
        handed = (self._monotonic.now(), config, decision)
        put_bounded(self._handed, policy_key(config), handed, _REMEMBERED_TARGETS)

    def _from_get_metrics(self, config: TargetConfig) -> Decision | None:
        """The active decision GetMetrics just made for this ScaledObject, used once.

        KEDA asks GetMetrics then IsActive for each poll; answering both from one
        decision keeps them consistent (a value above zero with IsActive false would
        scale the target to zero) and halves the Redis reads a poll costs. Only an
        active one: an idle target's IsActive reads afresh, so a request queued
        between the two calls wakes it at this poll, not the next."""
        handed = self._handed.pop(policy_key(config), None)
        if handed is None:
            return None
        made_at, made_for, decision = handed
        if made_for != config or self._monotonic.now() - made_at > POLL_PAIR_S:
            return None
        return decision

    def _with_remembered(self, config: TargetConfig, stored: PolicyState) -> PolicyState:
        remembered = self._remembered.get(policy_key(config))
        return stored if remembered is None else merge_states(stored, remembered)

    def _remember(self, config: TargetConfig, state: PolicyState) -> None:
        put_bounded(self._remembered, policy_key(config), state, _REMEMBERED_TARGETS)

    async def _admit_stream(self, method: str, context: Context) -> None:
        """Each open stream holds memory and a watch: beyond MAX_STREAMS, refuse more."""
        if self._streams_open >= self._max_streams:
            failure = RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._streams_open} streams open, MAX_STREAMS = {self._max_streams}",
            )
            self._metrics.rpc_requests.labels(method, failure.code.name).inc()
            await _abort(context, failure)
        self._streams_open += 1

    async def _until_change(self, changed: asyncio.Event, decision: Decision | None) -> None:
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._stopping.wait())]
        holding = decision is not None and decision.new_state.active_until > decision.at
        if decision is not None and decision.active and holding:
            # Only time can end a held activity: more demand would just extend it.
            until = decision.new_state.active_until
            waits.append(asyncio.ensure_future(self._clock.wait_until(until, decision.at)))
        else:
            waits.append(asyncio.ensure_future(changed.wait()))
        try:
            await asyncio.wait(
                waits, timeout=self._stream_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()


async def _abort(context: Context, failure: RpcFailure) -> NoReturn:
    await context.abort(failure.code, failure.message)
    raise AssertionError("context.abort returned")  # it raises; this satisfies the type checker


def _target(config: TargetConfig) -> str:
    return f"{config.namespace}/{config.scaled_object}"
