"""The sidecar against a real tritonserver that starts, is killed and comes back.

One server per module, started and stopped by the tests (tests.real_triton), in
explicit model-control mode so that a model can stay unloaded (not ready) while the
server serves another: `plain` (2 instances) is loaded at start, `late` on request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from scaler.local_redis import LocalRedis
from scaler.reports import PodReport
from tests.real_triton import ClosedLoop, Repository, SidecarProcess, TritonServer, wait_for


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    workdir = tmp_path_factory.mktemp("triton")
    repository = Repository(workdir / "models")
    repository.sleeper("plain", instances=2)
    repository.sleeper("late", instances=1)
    server = TritonServer(
        workdir / "models", workdir, "--model-control-mode=explicit", "--load-model=plain"
    )
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    connection.close()


def running(server: TritonServer) -> TritonServer:
    if not server.running:
        server.start()
    server.wait_ready()
    return server


def test_cold_start_is_measured_from_the_pods_start_to_ready(
    triton: TritonServer, redis_server: LocalRedis, client: redis.Redis
) -> None:
    triton.stop()
    car = SidecarProcess(triton, redis_server.url, "cold-0", "plain", target="cold")
    spawned = time.monotonic()
    try:
        # The pod's sidecar is up before Triton starts (as a pod's containers start), so
        # its clock starts between `spawned` and Triton's start, however long Python took.
        wait_for(car.serving, 30, "the sidecar serving /healthz")
        triton.start()
        server_start_s = triton.wait_ready()
        pod_start_s = time.monotonic() - spawned

        def cold_start() -> float | None:
            report = car.report(client)
            return None if report is None or not report.ready else report.cold_start_s

        wait_for(lambda: cold_start() is not None, 15, "a ready report with its cold start")
        measured = cold_start()
    finally:
        car.stop()
    assert measured is not None
    # From the sidecar's (the pod's) start to the first ready answer, read every 0.5 s.
    assert server_start_s - 0.5 <= measured <= pod_start_s + 1.0, (server_start_s, measured)


def test_a_model_not_ready_is_a_starting_pod_until_it_is_loaded(
    triton: TritonServer, redis_server: LocalRedis, client: redis.Redis
) -> None:
    running(triton)
    car = SidecarProcess(triton, redis_server.url, "late-0", "late", target="late")
    try:

        def report() -> PodReport | None:
            return car.report(client)

        wait_for(lambda: report() is not None, 15, "a report")
        starting = report()
        assert starting is not None and not starting.ready and starting.inflight == 0
        assert triton.post("/v2/repository/models/late/load") == 200
        wait_for(lambda: (r := report()) is not None and r.ready, 20, "a ready report")
        ready = report()
        assert ready is not None and ready.cold_start_s is not None and ready.cold_start_s > 0
    finally:
        car.stop()
        triton.post("/v2/repository/models/late/unload")


def test_triton_killed_writes_nothing_and_after_its_restart_counts_again(
    triton: TritonServer, redis_server: LocalRedis, client: redis.Redis
) -> None:
    running(triton)
    car = SidecarProcess(triton, redis_server.url, "crash-0", "plain", target="crash")
    load = ClosedLoop(triton, "plain", 1.0)
    try:

        def inflight_near_2() -> bool:
            report = car.report(client)
            return report is not None and report.ready and abs(report.inflight - 2) <= 0.4

        # The sidecar started next to a ready server: requests may have been running
        # before it, so it waits until one completed and a full window lies after its start.
        load.set_clients(2)
        wait_for(inflight_near_2, 20, "2 in flight")
        triton.stop(kill=True)
        assert triton.get("/v2/health/ready")[0] == 0  # gone
        time.sleep(1.0)  # a tick begun before the kill may still write what it read
        before = car.report(client)
        time.sleep(3.0)  # real time: what a dead server's sidecar writes (nothing)
        after = car.report(client)
        assert before is not None and after is not None and after.seq == before.seq, car.stop()
        load.stop()
        triton.start().wait_ready()
        wait_for(lambda: (r := car.report(client)) is not None and r.seq > before.seq, 15, "back")
        restarted = car.report(client)
        assert restarted is not None and restarted.ready and restarted.inflight == 0
        assert restarted.cold_start_s is not None  # the restart, from its death to ready
        load = ClosedLoop(triton, "plain", 1.0)
        load.set_clients(2)
        # Counters started again at 0: no negative figure, no spike, the load is back.
        seen: list[float] = []

        def back_to_2() -> bool:
            report = car.report(client)
            seen.append(-1.0 if report is None else report.inflight)
            return inflight_near_2()

        wait_for(back_to_2, 15, "2 in flight again")
        assert min(seen) >= 0 and max(seen) <= 4, seen
    finally:
        load.set_clients(0)
        car.stop()
