"""The report loop: read Triton, decide whether to write, write the pod report, back off.

One `tick` reads readiness (HTTP or gRPC) and the metrics page, turns them into the
report's figures and writes them through `scaler.report_writer.ReportWriter` when the
report interval is over or the load changed. Tests drive `tick` directly with a
stepped clock; `run` calls it every poll interval.

The rules it keeps:
- Missing data is not zero. Triton not answering, a metrics page that cannot be
  read or parsed, or an in-flight figure not yet measurable: nothing is written,
  the failure is counted, and the scaler drops the last report once it is older
  than staleAfterSeconds. A not-ready server is different: it answers, gets no
  traffic (its pod is out of the Service's endpoints), so its load is a real 0
  and it reports itself as starting.
- Never stale data as fresh: every write is built from a reading taken in the
  same tick, and Redis stamps it with its own clock. A failed write is not
  retried as is; the next attempt reads Triton again.
- Redis down: attempts back off from one poll interval to `MAX_BACKOFF_S`, so
  reports resume at most that long after Redis is back.
- Which model counts for what (an ensemble through its engine's gauges, say) is read
  from Triton once it is ready, and again after it was gone (sidecar.selection); models
  whose load cannot be measured raise SelectionError, which ends the process.
- Service time: every write carries what the served models completed since the previous
  successful write (sidecar.served); a failed write keeps it for the next.
- Token time: every write carries what the selected engines decoded since the previous
  successful write (sidecar.token_time: steps, their seconds, the sequences decoded
  together); a failed write keeps it for the next. Plain Triton carries none, said once
  in the log when the models are selected.
- With the in-pod worker (sidecar.worker), in-flight is exact on every engine: the
  requests the worker took and has not answered, less what the engine's gauges say
  waits inside it (reported as waiting); capacity is the worker's slots. The completion
  counters are then not needed. The worker takes work only while the `ready` event this
  loop keeps is set: at once when the probe first sees the pod ready.
- Cold start: measured once per start, from the start (the sidecar's own start,
  which is the pod's, or the moment a ready Triton was seen gone) to the first
  ready answer, and carried in every report after, so a scaler that reads only
  at its polls cannot miss it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from scaler.clock import Clock
from scaler.redis_connect import REDIS_ERRORS
from scaler.report_writer import ReportWriter
from scaler.reports import PodReport
from sidecar.config import SidecarConfig
from sidecar.readiness import Readiness, ReadinessProbe, TritonUnavailable
from sidecar.scrape import MetricsScraper, ScrapeError
from sidecar.selection import ModelConfig, Selection, SelectionError, describe, select
from sidecar.served import ServedTally
from sidecar.telemetry import SidecarMetrics
from sidecar.token_time import DecodedTally
from sidecar.triton_metrics import (
    Load,
    LoadEstimator,
    MetricsError,
    TritonSample,
    parse_exposition,
)

if TYPE_CHECKING:  # imported by __main__ only when on
    from sidecar.deletion_cost import DeletionCost

log = logging.getLogger(__name__)


MAX_BACKOFF_S = 2.0
# With the worker on and Triton not ready yet: how often readiness is asked (a 200 costs
# well under a millisecond), so the worker starts taking work at most this long after it.
READY_WATCH_S = 0.02
# A change smaller than this is noise in a Little's-law average, not new load;
# integer gauges (TensorRT-LLM) always move by at least 1.
CHANGE_THRESHOLD = 0.5


class WorkerLoad(Protocol):
    """The in-pod worker's exact count, as the report reads it."""

    @property
    def inflight(self) -> int: ...

    @property
    def slots(self) -> int: ...


class TickResult(StrEnum):
    WROTE = "wrote"
    UNCHANGED = "unchanged"  # interval not over and nothing changed
    BACKING_OFF = "backing_off"  # waiting out a Redis failure
    TRITON_UNAVAILABLE = "triton_unavailable"
    METRICS_UNAVAILABLE = "metrics_unavailable"
    NO_FIGURE = "no_figure"  # metrics read, in-flight not measurable yet (first window)
    REDIS_FAILED = "redis_failed"
    STOPPED = "stopped"  # the report was removed on shutdown; nothing more is written


@dataclass(frozen=True)
class Figures:
    """What one report says about the load, compared between ticks to spot a change."""

    ready: bool
    inflight: float
    waiting: float
    capacity: float
    kv_cache_utilization: float | None

    def differs_from(self, other: Figures) -> bool:
        return (
            self.ready != other.ready
            or self.capacity != other.capacity
            or abs(self.inflight - other.inflight) >= CHANGE_THRESHOLD
            or abs(self.waiting - other.waiting) >= CHANGE_THRESHOLD
        )


class StartTracker:
    """When the current start of the server began, and its cold start once measured."""

    def __init__(self, now: float, wall_at_now: float) -> None:
        self._mono_origin = now
        self._wall_origin = wall_at_now
        self.started_at = now  # on the monotonic clock
        self.cold_start_s: float | None = None
        self._ready: bool | None = None  # None: not observed yet

    @property
    def started_at_wall(self) -> float:
        return self._wall_origin + (self.started_at - self._mono_origin)

    def not_ready(self, now: float) -> None:
        """Triton did not answer, or answered not ready. If it was ready, a new start
        (a Triton restart) begins now."""
        if self._ready:
            self.started_at, self.cold_start_s = now, None
        self._ready = False

    def ready(self, now: float) -> float | None:
        """Returns the cold start when this answer ends a start, else None."""
        was, self._ready = self._ready, True
        if was is False:
            self.cold_start_s = max(0.0, now - self.started_at)
            return self.cold_start_s
        # was None: ready at the first look (the sidecar restarted next to a running
        # server): how long that start took is unknown, so no cold start is claimed.
        return None


class Reporter:
    def __init__(
        self,
        config: SidecarConfig,
        probe: ReadinessProbe,
        scraper: MetricsScraper,
        writer: ReportWriter,
        metrics: SidecarMetrics,
        clock: Clock,
        wall_at_start: float,
        deletion_cost: DeletionCost | None = None,
        worker: WorkerLoad | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        """`clock`: monotonic seconds; `wall_at_start`: unix seconds at clock() now;
        `deletion_cost`: offered the pod's load at every reading, when on; `worker`: the
        in-pod worker, whose count is the in-flight figure; `ready`: kept set while the
        probe says ready (the worker takes work only then)."""
        self._config = config
        self._probe = probe
        self._scraper = scraper
        self._writer = writer
        self._metrics = metrics
        self._clock = clock
        self._deletion_cost = deletion_cost
        self._worker = worker
        self._ready_gate = ready
        now = clock.now()
        self._starts = StartTracker(now, wall_at_start)
        # Which models count for what is read from Triton once it is ready, and again
        # after it was gone (sidecar.selection).
        self._estimator = LoadEstimator()
        self._served = ServedTally()
        self._decoded = DecodedTally()
        # Triton was seen down or not ready: nothing was in flight when it came up.
        self._seen_down = False
        # seq starts at the run's start in milliseconds, so the reports of a restarted
        # sidecar also sort after its previous run's (each run writes < 1000 per second).
        self._seq = int(wall_at_start * 1000)
        self._last_written: tuple[float, Figures] | None = None
        self._engine_capacity: float | None = None
        self._backoff_s = 0.0
        self._retry_at = now
        self._last_tick_at = now
        self._failing: str | None = None
        self._readiness_seen: tuple[float, Readiness] | None = None
        self._stopped = False
        # Liveness: a tick is bounded by its timeouts, so one that has not completed
        # in a few times that bound is stuck, and a restart is the cure.
        tick_bound = config.poll_interval_s + 2 * config.triton_timeout_s + config.redis_timeout_s
        self.stall_after_s = max(5.0, 3 * tick_bound)

    @property
    def seq(self) -> int:
        return self._seq

    def healthy(self) -> bool:
        return self._clock.now() - self._last_tick_at <= self.stall_after_s

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every poll interval until `stop` is set. Never raises out of a tick."""
        while not stop.is_set():
            began = self._clock.now()
            try:
                await self.tick()
            except SelectionError:
                raise  # the configuration cannot work: stop, and say why
            except Exception:  # a bug must not end the reports of a healthy pod
                log.exception("report tick failed")
            pause = self._config.poll_interval_s - (self._clock.now() - began)
            if self._ready_gate is not None and not self._ready_gate.is_set():
                await self._watch_ready(stop, pause)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, pause))

    async def _watch_ready(self, stop: asyncio.Event, pause_s: float) -> None:
        """While the worker waits for a ready Triton, readiness alone is asked every
        READY_WATCH_S instead of every poll: the tick that opens the gate follows at once,
        so a pod that becomes ready takes work within tens of milliseconds, not a poll."""
        until = self._clock.now() + max(0.0, pause_s)
        while not stop.is_set() and self._clock.now() < until:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), READY_WATCH_S)
            try:
                if (await self._probe.check()).ready:
                    assert self._ready_gate is not None
                    self._ready_gate.set()  # the worker takes work now; the tick follows
                    return
            except TritonUnavailable:
                pass

    async def tick(self) -> TickResult:
        now = self._clock.now()
        try:
            return await self._tick(now)
        finally:
            self._last_tick_at = self._clock.now()

    async def remove(self) -> bool:
        """Delete this pod's report at once (SIGTERM) and write none after; True when done."""
        self._stopped = True
        try:
            async with asyncio.timeout(self._config.redis_timeout_s):
                await self._writer.delete(self._config.pod)
        except (*REDIS_ERRORS, TimeoutError) as exc:
            self._metrics.failures.labels("redis").inc()
            log.warning(
                "could not remove the report of %s (%s); the scaler drops it once stale",
                self._config.pod,
                exc or type(exc).__name__,
            )
            return False
        log.info("removed the report of %s", self._config.pod)
        return True

    async def _tick(self, now: float) -> TickResult:
        if self._stopped:
            return TickResult.STOPPED
        if now < self._retry_at:
            return TickResult.BACKING_OFF
        try:
            readiness = await self._readiness(now)
        except TritonUnavailable as exc:
            self._readiness_seen = None
            self._starts.not_ready(now)
            self._seen_down = True
            self._estimator.reset(None, origin_idle=True)  # its counters start again
            self._served.rebase()
            self._decoded.rebase()
            self._metrics.ready.set(0)
            if self._ready_gate is not None:
                self._ready_gate.clear()
            return self._fail("triton", str(exc), TickResult.TRITON_UNAVAILABLE)
        # Read even while not ready: the in-flight window is then measured by the time
        # the server is ready, and its first ready report need not wait for it.
        load, error = await self._read_load(now, readiness.ready)
        if not readiness.ready:
            self._seen_down = True
            self._starts.not_ready(now)
            figures = Figures(False, 0.0, 0.0, self._starting_capacity(), None)
        else:
            cold_start = self._starts.ready(now)
            if cold_start is not None:
                self._metrics.cold_start.set(cold_start)
                self._metrics.cold_starts.inc()
                log.info("triton ready: cold start %.1f s", cold_start)
            if load is None:
                if error is not None:
                    self._readiness_seen = None  # a dead server fails here first: ask again
                    return self._fail("metrics", error, TickResult.METRICS_UNAVAILABLE)
                return TickResult.NO_FIGURE
            capacity = load.capacity if load.capacity is not None else self._config.capacity
            kv = load.kv_cache_utilization
            figures = Figures(True, load.inflight, load.waiting, capacity, kv)
            if self._worker is not None:
                # Exact: taken and not answered, less what waits inside the engine.
                inflight = max(0.0, self._worker.inflight - load.waiting)
                figures = Figures(True, inflight, load.waiting, self._worker.slots, kv)
                self._metrics.inflight.set(inflight)
        if self._deletion_cost is not None:
            self._deletion_cost.offer(figures.inflight, figures.waiting, now)
        if self._last_written is not None:
            written_at, written = self._last_written
            if now - written_at < self._config.interval_s and not figures.differs_from(written):
                return TickResult.UNCHANGED
        return await self._write(figures, now)

    async def _readiness(self, now: float) -> Readiness:
        """Asked every poll while not ready (a start ends at once), else once per interval:
        a ready server stays ready for long, and one that dies fails the scrape at once."""
        if self._readiness_seen is not None:
            asked_at, seen = self._readiness_seen
            if seen.ready and now - asked_at < self._config.interval_s:
                return seen
        readiness = await self._probe.check()
        self._readiness_seen = (now, readiness)
        self._metrics.ready.set(1 if readiness.ready else 0)
        if self._ready_gate is not None:
            if readiness.ready:
                self._ready_gate.set()  # the worker takes work from this moment
            else:
                self._ready_gate.clear()
        return readiness

    async def _read_load(self, now: float, ready: bool) -> tuple[Load | None, str | None]:
        """The load, or (None, why not). Raises SelectionError when the models selected
        cannot give a load figure."""
        try:
            text = await self._scraper.fetch()
            selection = self._estimator.selection
            if selection is None:
                if not ready:
                    return None, None  # the models' configurations come with readiness
                selection = await self._select(text)
                if self._worker is not None:
                    # In flight comes from the worker: no completion counters to rebuild.
                    selection = replace(selection, counted=frozenset())
                self._estimator.reset(selection, origin_idle=self._seen_down)
            sample = parse_exposition(text, selection.models)
        except (ScrapeError, MetricsError, TritonUnavailable) as exc:
            return None, str(exc)
        self._served.observe(sample.counters, selection.served)
        self._decoded.observe(sample, selection.engines)
        load = self._estimator.observe(sample, now)
        if load is not None:
            self._metrics.inflight.set(load.inflight)
            self._metrics.waiting.set(load.waiting)
            if load.kv_cache_utilization is not None:
                self._metrics.kv_cache_utilization.set(load.kv_cache_utilization)
            if load.capacity is not None:
                self._engine_capacity = load.capacity
        return load, None

    async def _select(self, page: str) -> Selection:
        """The roles of the selected models (all on the page when none is named), from
        their configurations and the gauges they publish."""
        parse_exposition(page, self._config.models)  # every named model is there
        everything = parse_exposition(page)
        names = self._config.models or tuple(sorted(everything.model_names()))
        configs: dict[str, ModelConfig] = {}
        todo = list(names)
        while todo:  # the named models and the steps of the named ensembles: required
            name = todo.pop()
            if name not in configs:
                configs[name] = await self._model_config(name)
                todo.extend(configs[name].ensemble_steps)
        # The others only say, in a refusal, what each model offers: read when they can be.
        for name in sorted(everything.model_names() - configs.keys()):
            with contextlib.suppress(TritonUnavailable, MetricsError):
                configs[name] = await self._model_config(name)
        gauges = everything.engine_gauges()
        selection = select(names, configs, gauges, counted_elsewhere=self._worker is not None)
        log.info(
            "load from: engines %s, completion counters %s, queues %s (%s)",
            sorted(selection.engines) or "-",
            sorted(selection.counted) or "-",
            sorted(selection.queued) or "-",
            describe(configs, gauges),
        )
        log.info("token time from: %s", token_time_sources(everything, selection.engines))
        return selection

    async def _model_config(self, name: str) -> ModelConfig:
        answer = await self._probe.model_config(name)
        try:
            return ModelConfig.from_json(name, answer)
        except ValueError as exc:
            raise MetricsError(str(exc)) from None

    def _starting_capacity(self) -> float:
        # Capacity on its way: what the engine said before a restart, else the configured one.
        if self._worker is not None:
            return self._worker.slots
        if self._engine_capacity is not None:
            return self._engine_capacity
        return self._config.capacity

    async def _write(self, figures: Figures, now: float) -> TickResult:
        report = PodReport(
            pod=self._config.pod,
            inflight=figures.inflight,
            waiting=figures.waiting,
            capacity=figures.capacity,
            ready=figures.ready,
            started_at=self._starts.started_at_wall,
            seq=self._seq + 1,
            cold_start_s=self._starts.cold_start_s,
            kv_cache_utilization=figures.kv_cache_utilization,
        )
        served = self._served.pending()
        decoded = self._decoded.pending()
        try:
            async with asyncio.timeout(self._config.redis_timeout_s):
                stamped_at = await self._writer.write(report, served=served, decoded=decoded)
        except (*REDIS_ERRORS, TimeoutError) as exc:
            self._backoff_s = min(
                MAX_BACKOFF_S, max(self._config.poll_interval_s, 2 * self._backoff_s)
            )
            self._retry_at = now + self._backoff_s
            message = f"{exc or type(exc).__name__}; next attempt in {self._backoff_s:g} s"
            return self._fail("redis", message, TickResult.REDIS_FAILED)
        self._served.written(served)
        self._decoded.written(decoded)
        self._seq = report.seq
        self._last_written = (now, figures)
        self._backoff_s = 0.0
        self._metrics.reports_written.inc()
        self._metrics.last_report.set(stamped_at)
        self._metrics.capacity.set(figures.capacity)
        if self._failing is not None:
            log.info("reporting again after %s failures", self._failing)
            self._failing = None
        return TickResult.WROTE

    def _fail(self, stage: str, message: str, result: TickResult) -> TickResult:
        self._metrics.failures.labels(stage).inc()
        if self._failing != stage:  # once per kind of outage, not once per tick
            log.warning("no report (%s): %s", stage, message)
            self._failing = stage
        return result


def token_time_sources(sample: TritonSample, engines: frozenset[str]) -> str:
    """Which engines' figures tell the token time (sidecar.token_time), or why none do."""
    found = [
        f"{model} (TensorRT-LLM iteration counter and time stamp)"
        for (model, _), trt in sorted(sample.trt.items())
        if model in engines and trt.iteration_counter is not None and trt.timestamp is not None
    ]
    found += [
        f"{model} (vLLM time_per_output_token_seconds and num_requests_running)"
        for (model, _), vllm in sorted(sample.vllm.items())
        if model in engines and vllm.token_intervals is not None
    ]
    if found:
        return ", ".join(dict.fromkeys(found))
    return (
        "none: no selected engine publishes its decode steps (plain Triton, or an older "
        "backend), so the scaler sizes replicas by targetConcurrency, not tokenLatencyMs"
    )
