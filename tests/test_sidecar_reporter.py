"""The report loop against the Triton stand-in (real gRPC, real HTTP) and a real Redis.

Readiness cases run over both transports: Triton's HTTP health endpoints and its gRPC
API (answered by tritonclient's own generated servicer).

Time is a stepped FakeClock: each test drives `Reporter.tick` itself, so nothing
sleeps on wall time except the bounded waits for a real server to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from prometheus_client import CollectorRegistry

from scaler.demo.triton_standin import ModelFigures, TritonStandIn, TrtFigures, ensemble_config
from scaler.local_redis import LocalRedis
from scaler.redis_connect import connect
from scaler.report_writer import ReportWriter
from scaler.reports import PodReport, report_keys
from sidecar.config import SidecarConfig
from sidecar.readiness import readiness_probe
from sidecar.reporter import MAX_BACKOFF_S, Reporter, TickResult
from sidecar.scrape import MetricsScraper
from sidecar.selection import SelectionError
from sidecar.telemetry import SidecarMetrics
from tests.harness import NAMESPACE, FakeClock

POD = "llama-0"
TARGET = "llama"
WALL_AT_START = 1_750_000_000.0
KEYS = report_keys(NAMESPACE, TARGET)


@pytest.fixture(params=["http", "grpc"])
def readiness(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def triton() -> Iterator[TritonStandIn]:
    standin = TritonStandIn().start()
    yield standin
    standin.stop()


def engine(
    active: float = 0, waiting: float = 0, pending: float = 0, **trt: float
) -> dict[str, ModelFigures]:
    figures = TrtFigures(active=active, waiting=waiting, max=8, kv_used=100, kv_max=400, **trt)  # type: ignore[arg-type]
    return {"tensorrt_llm": ModelFigures(pending=pending, trt=figures)}


@dataclass
class Sidecar:
    reporter: Reporter
    registry: CollectorRegistry
    clock: FakeClock

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def tick(self, after_s: float = 0.0) -> TickResult:
        self.clock.advance(after_s)
        return await self.reporter.tick()


@contextlib.asynccontextmanager
async def sidecar(
    triton: TritonStandIn, redis_url: str, **overrides: object
) -> AsyncIterator[Sidecar]:
    config = SidecarConfig(
        pod=POD,
        namespace=NAMESPACE,
        target=TARGET,
        redis_url=redis_url,
        triton_http_url=triton.http_url,
        triton_grpc_url=triton.grpc_url,
        triton_metrics_url=triton.metrics_url,
        capacity=4,
        poll_interval_s=0.25,
        redis_timeout_s=0.5,
        **overrides,  # type: ignore[arg-type]
    )
    link = connect(config)
    probe = readiness_probe(config)
    registry = CollectorRegistry()
    clock = FakeClock(1000.0)  # a monotonic clock: any origin
    reporter = Reporter(
        config,
        probe,
        MetricsScraper(config.triton_metrics_url, config.triton_timeout_s),
        ReportWriter(link.client, KEYS),
        SidecarMetrics(registry),
        clock=clock,
        wall_at_start=WALL_AT_START,
    )
    try:
        yield Sidecar(reporter, registry, clock)
    finally:
        await probe.close()
        await link.aclose()


def stored(client: redis.Redis) -> PodReport | None:
    payload = client.hget(KEYS.reports, POD)
    return None if payload is None else PodReport.from_json(payload)  # type: ignore[arg-type]


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Waits for a real server to come back (process start, reconnect): real time, bounded."""
    for _ in range(int(timeout_s / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not so within {timeout_s} s")


def test_ready_trt_llm_pod_reports_the_engine_figures(
    triton: TritonStandIn,
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    readiness: str,
) -> None:
    triton.set_ready(models=("tensorrt_llm",))
    triton.set_models(engine(active=5, waiting=2, pending=1))

    async def scenario() -> None:
        async with sidecar(
            triton, redis_server.url, readiness=readiness, models=("tensorrt_llm",)
        ) as car:
            assert await car.tick() is TickResult.WROTE
            assert car.sample("llm_sidecar_reports_written_total") == 1
            assert car.sample("llm_sidecar_inflight_requests") == 5
            assert car.sample("llm_sidecar_kv_cache_utilization_ratio") == 0.25

    run(scenario)
    report = stored(redis_client)
    assert report is not None
    assert (report.inflight, report.waiting, report.capacity, report.ready) == (5, 3, 8, True)
    assert report.kv_cache_utilization == 0.25
    assert report.started_at == WALL_AT_START
    assert report.cold_start_s is None  # ready at the first look: its start is unknown
    # Stamped with Redis's own clock, not the pod's.
    (seen,) = redis_client.zrange(KEYS.seen, 0, -1, withscores=True)
    assert seen[0] == POD and abs(seen[1] - float(redis_client.time()[0])) < 5


def test_plain_triton_reports_in_flight_from_completions_and_pending(
    triton: TritonStandIn, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    def resnet(success: float = 0, busy_s: float = 0, pending: float = 0) -> None:
        figures = ModelFigures(pending, request_duration_us=busy_s * 1e6, success=success)
        triton.set_models({"resnet": figures})

    resnet()
    triton.set_ready(False)

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url) as car:
            assert await car.tick() is TickResult.WROTE  # starting: nothing in flight
            triton.set_ready(models=("resnet",))
            # Ready: the first sample of the counters measures nothing yet, and nothing
            # is written rather than a zero.
            assert await car.tick(0.5) is TickResult.NO_FIGURE
            assert await car.tick(0.5) is TickResult.NO_FIGURE
            assert await car.tick(1.5) is TickResult.WROTE  # a 1 s window, 1 s ago
            idle = stored(redis_client)
            assert idle is not None and (idle.ready, idle.inflight) == (True, 0.0)
            # 3 requests of 2 s each end, one more is queued: in flight once the window
            # [now - 2 lags; now - 1 lag] holds the time they ran.
            resnet(success=3, busy_s=6.0, pending=1)
            for _ in range(5):
                await car.tick(0.5)
            reports.append(stored(redis_client))
            # Overload: 12 queued now, more than the window held: shown at once, not
            # added to the past that counts some of the same requests.
            resnet(success=3, busy_s=6.0, pending=12)
            await car.tick(0.5)
            reports.append(stored(redis_client))

    reports: list[PodReport | None] = []
    run(scenario)
    report, overloaded = reports
    assert report is not None
    assert report.capacity == 4  # configured
    # Seen ending at the middle of the 0.5 s poll interval, they ran over [e - 2; e]; the
    # lag is 2.25 s, the window [e - 2; e + 0.25] after 5 polls: 3 x 2 / 2.25. Waiting,
    # from the same window: the pending 1, read from e + 0.25 on, for none of it.
    assert report.inflight == pytest.approx(3 * 2 / 2.25)
    assert report.waiting == 0.0
    assert report.kv_cache_utilization is None
    assert overloaded is not None and overloaded.waiting == 12


def test_model_filter_counts_and_checks_only_the_listed_models(
    triton: TritonStandIn,
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    readiness: str,
) -> None:
    models = {
        **engine(active=2, pending=1),
        "preprocessing": ModelFigures(pending=3),
        "other_team_model": ModelFigures(pending=50),
    }
    triton.set_models(models)
    triton.set_ready(models=("preprocessing", "other_team_model"))  # tensorrt_llm loading

    async def scenario() -> None:
        async with sidecar(
            triton, redis_server.url, readiness=readiness, models=("tensorrt_llm", "preprocessing")
        ) as car:
            await car.tick()
            starting = stored(redis_client)
            assert starting is not None and not starting.ready
            triton.set_ready(models=("tensorrt_llm", "preprocessing"))
            # preprocessing, a plain model, counts from its completion counters: no
            # figure until they have been watched over a window.
            assert await car.tick(1.0) is TickResult.NO_FIGURE
            assert await car.tick(1.0) is TickResult.NO_FIGURE
            assert await car.tick(1.0) is TickResult.WROTE

    run(scenario)
    report = stored(redis_client)
    assert report is not None
    assert (report.ready, report.inflight, report.waiting) == (True, 2, 1 + 3)


def test_starting_pod_reports_its_start_then_its_cold_start_once(
    triton: TritonStandIn,
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    readiness: str,
) -> None:
    triton.set_ready(server=False)
    triton.set_models({})  # models loading: no per-model metrics yet

    async def scenario() -> None:
        async with sidecar(
            triton, redis_server.url, readiness=readiness, models=("tensorrt_llm",)
        ) as car:
            assert await car.tick() is TickResult.WROTE
            starting = stored(redis_client)
            assert starting is not None
            assert (starting.ready, starting.inflight, starting.waiting) == (False, 0, 0)
            assert starting.capacity == 4  # the configured capacity, on its way
            assert starting.started_at == WALL_AT_START
            assert starting.cold_start_s is None

            triton.set_ready(models=("tensorrt_llm",))
            triton.set_models(engine(active=1))
            assert await car.tick(42.0) is TickResult.WROTE
            assert car.sample("llm_sidecar_cold_start_seconds") == 42.0
            for _ in range(3):
                assert await car.tick(1.0) is TickResult.WROTE
            assert car.sample("llm_sidecar_cold_starts_total") == 1

    run(scenario)
    report = stored(redis_client)
    assert report is not None
    assert (report.ready, report.capacity, report.inflight) == (True, 8, 1)
    assert report.cold_start_s == 42.0  # measured once, kept in every later report
    assert report.started_at == WALL_AT_START


def test_triton_down_at_start_writes_nothing_then_reports_once_up(
    triton: TritonStandIn,
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    readiness: str,
) -> None:
    triton.stop()

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url, readiness=readiness) as car:
            assert await car.tick() is TickResult.TRITON_UNAVAILABLE
            assert await car.tick(0.25) is TickResult.TRITON_UNAVAILABLE
            assert stored(redis_client) is None  # missing data is not a zero report
            assert car.sample("llm_sidecar_failures_total", stage="triton") == 2

            triton.set_ready(server=False)
            triton.start()
            await until(lambda: _wrote(car))
            assert stored(redis_client) is not None

            triton.set_ready()
            triton.set_models(engine(active=3))
            assert await car.tick(30.0) is TickResult.WROTE
            assert car.sample("llm_sidecar_cold_start_seconds") == 30.25

    run(scenario)
    report = stored(redis_client)
    assert report is not None and report.ready and report.inflight == 3


async def _wrote(car: Sidecar) -> bool:
    return await car.tick() is TickResult.WROTE


def test_triton_restart_begins_a_new_start_and_writes_nothing_while_gone(
    triton: TritonStandIn,
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    readiness: str,
) -> None:
    triton.set_ready()
    triton.set_models(engine(active=6))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url, readiness=readiness) as car:
            assert await car.tick() is TickResult.WROTE
            before = stored(redis_client)
            triton.stop()
            result = await car.tick(1.0)
            assert result in (TickResult.METRICS_UNAVAILABLE, TickResult.TRITON_UNAVAILABLE)
            assert await car.tick(0.25) is TickResult.TRITON_UNAVAILABLE
            assert stored(redis_client) == before  # the last report ages out; no fake zero

            triton.set_ready(server=False)
            triton.start()
            car.clock.advance(10.0)
            await until(lambda: _wrote(car))
            restarting = stored(redis_client)
            assert restarting is not None and not restarting.ready
            assert restarting.capacity == 8  # what the engine said before the restart
            assert restarting.started_at == WALL_AT_START + 1.0  # when it was seen gone

            triton.set_ready()
            assert await car.tick(60.0) is TickResult.WROTE
            assert car.sample("llm_sidecar_cold_start_seconds") == 70.25

    run(scenario)


def test_unreadable_metrics_write_nothing_and_count_a_failure(
    triton: TritonStandIn, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    triton.set_ready()
    triton.set_models(engine(active=2))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url) as car:
            assert await car.tick() is TickResult.WROTE
            triton.set_metrics_text("overloaded\n", status=503)
            assert await car.tick(1.0) is TickResult.METRICS_UNAVAILABLE
            triton.set_metrics_text("<html>not metrics</html>\n")
            assert await car.tick(1.0) is TickResult.METRICS_UNAVAILABLE
            assert car.sample("llm_sidecar_failures_total", stage="metrics") == 2
            assert car.sample("llm_sidecar_reports_written_total") == 1

    run(scenario)
    report = stored(redis_client)
    assert report is not None and report.inflight == 2


def test_a_load_change_is_written_at_once_else_once_per_interval(
    triton: TritonStandIn, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    triton.set_ready()
    triton.set_models(engine(active=2))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url, interval_s=1.0) as car:
            assert await car.tick() is TickResult.WROTE
            first = car.reporter.seq
            assert await car.tick(0.25) is TickResult.UNCHANGED
            triton.set_models(engine(active=3))
            assert await car.tick(0.25) is TickResult.WROTE  # changed: no wait
            assert await car.tick(0.25) is TickResult.UNCHANGED
            assert await car.tick(0.5) is TickResult.UNCHANGED
            triton.set_models(engine(active=3))
            assert await car.tick(0.5) is TickResult.WROTE  # interval over: written anyway
            assert car.reporter.seq == first + 2

    run(scenario)
    report = stored(redis_client)
    assert report is not None and report.inflight == 3


def test_redis_killed_then_restarted_reports_resume_with_a_fresh_reading(
    triton: TritonStandIn, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    triton.set_ready()
    triton.set_models(engine(active=2))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url) as car:
            assert await car.tick() is TickResult.WROTE
            seq = car.reporter.seq
            redis_server.kill()
            try:
                triton.set_models(engine(active=5))
                assert await car.tick(1.0) is TickResult.REDIS_FAILED
                waits = []
                for _ in range(5):  # backs off 0.25, 0.5, 1, 2, 2 s: never a crash
                    assert await car.tick(0.01) is TickResult.BACKING_OFF
                    backoff = car.reporter._retry_at - car.clock()
                    car.clock.advance(backoff)
                    waits.append(round(backoff + 0.01, 6))
                    assert await car.tick() is TickResult.REDIS_FAILED
                assert waits == [0.25, 0.5, 1.0, MAX_BACKOFF_S, MAX_BACKOFF_S]
                assert car.sample("llm_sidecar_failures_total", stage="redis") == 6
                assert car.reporter.healthy()  # Redis down is not a reason to restart us
            finally:
                redis_server.start()
            # Load moved while Redis was away: the next report carries the new reading.
            triton.set_models(engine(active=7))
            car.clock.advance(MAX_BACKOFF_S)
            assert await car.tick() is TickResult.WROTE
            assert car.reporter.seq == seq + 1

    run(scenario)
    report = stored(redis_client)
    assert report is not None and report.inflight == 7


def test_removed_report_is_gone_and_nothing_is_written_after(
    triton: TritonStandIn, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    triton.set_ready()
    triton.set_models(engine(active=2))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url) as car:
            assert await car.tick() is TickResult.WROTE
            assert stored(redis_client) is not None
            assert await car.reporter.remove()
            assert stored(redis_client) is None
            assert redis_client.zscore(KEYS.seen, POD) is None
            assert await car.tick(5.0) is TickResult.STOPPED
            assert stored(redis_client) is None

    run(scenario)


def test_health_fails_only_when_the_loop_stops_ticking(
    triton: TritonStandIn, redis_server: LocalRedis
) -> None:
    async def scenario() -> None:
        async with sidecar(triton, redis_server.url) as car:
            assert car.reporter.healthy()
            car.clock.advance(car.reporter.stall_after_s + 1)
            assert not car.reporter.healthy()
            await car.tick()  # Triton not ready, whatever: the loop is alive
            assert car.reporter.healthy()

    run(scenario)


def test_an_ensemble_named_counts_its_tensorrt_llm_engines_gauges(
    triton: TritonStandIn,
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    readiness: str,
) -> None:
    """A TensorRT-LLM ensemble named is measured by its engine's exact gauges, not the
    ensemble's counters: clients call `ensemble`, the user names it; the engine holds 20
    requests while the ensemble's counters stand still. The ensemble's configuration
    (read over the readiness transport) says it runs through `tensorrt_llm`."""
    steps = ("preprocessing", "tensorrt_llm", "postprocessing")
    triton.set_models(
        {
            "ensemble": ModelFigures(config=ensemble_config(*steps)),
            "preprocessing": ModelFigures(pending=1),
            **engine(active=20, waiting=2),
            "postprocessing": ModelFigures(),
        }
    )
    triton.set_ready(models=("ensemble", *steps))

    async def scenario() -> None:
        async with sidecar(
            triton, redis_server.url, readiness=readiness, models=("ensemble",)
        ) as car:
            assert await car.tick() is TickResult.WROTE

    run(scenario)
    report = stored(redis_client)
    assert report is not None
    # 20 held by the engine; 2 in its queue + 1 in preprocessing's Triton queue.
    assert (report.inflight, report.waiting, report.capacity) == (20, 3, 8)


def test_a_model_whose_load_cannot_be_measured_stops_the_loop(
    triton: TritonStandIn, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    decoupled = {"platform": "", "model_transaction_policy": {"decoupled": True}}
    triton.set_models({"streamer": ModelFigures(config=decoupled), **engine(active=1)})
    triton.set_ready(models=("streamer",))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url, models=("streamer",)) as car:
            with pytest.raises(SelectionError, match="cannot measure the load of streamer"):
                await car.tick()
            with pytest.raises(SelectionError):  # run() does not swallow it either
                await car.reporter.run(asyncio.Event())

    run(scenario)
    assert stored(redis_client) is None  # no figure passed off as a measurement


def test_completions_reach_the_service_record_once_even_across_a_failed_write(
    triton: TritonStandIn, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    """Each write adds what completed since the last successful one; what a failed write
    carried is added by the next, and nothing twice."""

    def completed(requests: float, busy_s: float, queued_s: float) -> None:
        trt = TrtFigures(active=1, max=8)
        figures = ModelFigures(
            success=requests,
            request_duration_us=(busy_s + queued_s) * 1e6,
            queue_duration_us=queued_s * 1e6,
            trt=trt,
        )
        triton.set_models({"tensorrt_llm": figures})

    def record() -> dict[str, float]:
        return {k: float(v) for k, v in redis_client.hgetall(KEYS.service).items()}

    completed(100, 300.0, 50.0)  # before the sidecar: not ours to count
    triton.set_ready(models=("tensorrt_llm",))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url, models=("tensorrt_llm",)) as car:
            assert await car.tick() is TickResult.WROTE
            assert record() == {}  # the first sample is a baseline
            completed(103, 306.0, 51.0)
            redis_server.kill()
            try:
                assert await car.tick(1.0) is TickResult.REDIS_FAILED
            finally:
                redis_server.start()
            completed(105, 310.0, 60.0)
            car.clock.advance(MAX_BACKOFF_S)
            assert await car.tick() is TickResult.WROTE
            assert record() == {"completed": 5, "busy_s": 10.0}
            assert await car.tick(1.0) is TickResult.WROTE  # nothing new: nothing added
            assert record() == {"completed": 5, "busy_s": 10.0}

    run(scenario)
