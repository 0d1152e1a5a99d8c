"""`python -m sidecar` with WORKER=on: a real sidecar process, redis-server and Triton.

The report's in-flight is the worker's exact count less what waits inside the engine, and
its capacity the worker's slots, also while the admit key has it take fewer; SIGTERM stops
the taking at once and the process exits once what it held is answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Iterator

import pytest
from redis.asyncio import Redis

from gateway.contract import Kind, ReplyType
from scaler.local_redis import LocalRedis, free_port
from scaler.reports import PodReport, report_keys
from tests.harness import NAMESPACE
from tests.real_triton import Repository, TritonServer, serving
from tests.test_worker import (
    SLEEPER,
    STREAMER,
    TARGET,
    Gateway,
    infer_body,
    pending_count,
    queued_count,
    scenario,
    until,
)

ENGINE = "engine"  # decoupled, vLLM gauges, 2 running at once: the others wait inside it


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("worker_process_triton")
    repository = Repository(root / "models")
    repository.sleeper(SLEEPER, instances=4)
    repository.engine(ENGINE, max_running=2)
    # Decoupled without gauges: refused without the worker, whose count makes it measurable.
    repository.engine("no-gauges", max_running=1, gauges="none")
    repository.streamer(STREAMER)
    with serving(root / "models", root) as server:
        yield server


class WorkerPod:
    """`python -m sidecar` with the worker on, for pod `pod` of the test target."""

    def __init__(self, triton: TritonServer, redis_url: str, pod: str, **env: str) -> None:
        self.pod = pod
        self.metrics_port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "--interval", "1", "--poll-interval", "0.2"],
            env={
                **os.environ,
                "POD_NAME": pod,
                "POD_NAMESPACE": NAMESPACE,
                "TARGET_NAME": TARGET,
                "REDIS_URL": redis_url,
                "TRITON_HTTP_URL": triton.http_url,
                "TRITON_METRICS_URL": triton.metrics_url,
                "BIND_ADDRESS": "127.0.0.1",
                "METRICS_PORT": str(self.metrics_port),
                "DELETION_COST": "off",
                "WORKER": "on",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def report(self, client: Redis) -> PodReport | None:
        payload = await client.hget(report_keys(NAMESPACE, TARGET).reports, self.pod)
        return None if payload is None else PodReport.from_json(payload)

    def metric(self, name: str) -> float | None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=30)
        return output


def test_the_report_carries_the_workers_exact_count_less_what_waits_in_the_engine(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        plain = [(await gateway.enqueue(infer_body(4.0)))[0] for _ in range(2)]
        generate = [
            (
                await gateway.enqueue(
                    {"DURATION_S": [4.0]},
                    model=ENGINE,
                    kind=Kind.GENERATE,
                    path=f"/v2/models/{ENGINE}/generate",
                )
            )[0]
            for _ in range(4)
        ]
        pod = WorkerPod(triton, redis_server.url, "worker-0", WORKER_SLOTS="8")
        try:
            await until(lambda: _is(pending_count(client), 6), 20, "all six taken")

            async def settled() -> bool:
                report = await pod.report(client)
                return report is not None and report.ready and report.waiting == 2

            await until(settled, 10, "a report with the engine's two waiting")
            report = await pod.report(client)
            assert report is not None
            # Six taken and not answered: two wait inside the engine (its gauge), four run.
            assert (report.inflight, report.waiting, report.capacity) == (4, 2, 8)
            assert pod.metric("llm_sidecar_worker_inflight_requests") == 6
            for request_id in plain + generate:
                (reply,) = await gateway.answered(request_id, timeout_s=30)
                assert (reply.type, reply.status) == (ReplyType.FULL, 200)

            async def idle() -> bool:
                report = await pod.report(client)
                return report is not None and (report.inflight, report.waiting) == (0, 0)

            await until(idle, 10, "a report of nothing in flight once all are answered")
        finally:
            output = pod.stop()
        assert pod.process.returncode == 0, output

    scenario(redis_server, body)


async def _is(count: Awaitable[int], wanted: int) -> bool:
    return await count == wanted


def test_under_the_admit_key_the_pod_takes_fewer_and_still_reports_its_slots(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    """The scaler's admit key (tokenLatencyMs) read by the real process: 3 of 8 slots taken,
    the rest left in the stream; the report's capacity stays CAPACITY, which caps C."""

    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        await client.set(report_keys(NAMESPACE, TARGET).admit, "3.5")
        queued = [(await gateway.enqueue(infer_body(2.0)))[0] for _ in range(6)]
        pod = WorkerPod(triton, redis_server.url, "worker-admit", CAPACITY="8")
        try:
            await until(lambda: _is(pending_count(client), 3), 20, "3 taken")

            async def reported() -> bool:
                report = await pod.report(client)
                return report is not None and report.ready and report.inflight == 3

            await until(reported, 10, "a report of the 3 taken")
            report = await pod.report(client)
            assert report is not None and report.capacity == 8
            assert await pending_count(client) == 3  # still 3, a report later
            assert await queued_count(client) == 6  # the other 3 wait in the stream
            for request_id in queued:
                (reply,) = await gateway.answered(request_id, timeout_s=30)
                assert (reply.type, reply.status) == (ReplyType.FULL, 200)
        finally:
            output = pod.stop()
        assert pod.process.returncode == 0, output

    scenario(redis_server, body)


def test_sigterm_stops_taking_and_exits_once_what_it_holds_is_answered(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        held = [(await gateway.enqueue(infer_body(2.0)))[0] for _ in range(2)]
        pod = WorkerPod(triton, redis_server.url, "worker-1", CAPACITY="2")
        try:
            await until(lambda: _is(pending_count(client), 2), 20, "both taken")
            pod.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(0.6)  # past one blocking read
            after, _ = await gateway.enqueue(infer_body(0.01))
            await asyncio.to_thread(pod.process.wait, 20)
            drained_s = time.monotonic() - signalled
        finally:
            output = pod.stop()
        assert pod.process.returncode == 0, output
        for request_id in held:
            (reply,) = await gateway.replies_to(request_id)
            assert (reply.type, reply.status) == (ReplyType.FULL, 200)
        assert await gateway.replies_to(after) == []  # never taken: left for another pod
        assert await pending_count(client) == 0 and await queued_count(client) == 1
        assert drained_s < 5, output
        # The report went at SIGTERM: the scaler stops counting a pod that is leaving.
        assert await pod.report(client) is None

    scenario(redis_server, body)


def test_a_pod_takes_work_the_moment_its_triton_is_ready(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    """Requests queued while no Triton runs; the sidecar up first, as in a starting pod."""

    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        triton.stop()
        queued = [(await gateway.enqueue(infer_body(0.3)))[0] for _ in range(6)]
        pod = WorkerPod(triton, redis_server.url, "worker-2", CAPACITY="4")
        try:
            await until(lambda: _serving(pod), 20, "the sidecar serving /metrics")
            triton.start()

            async def triton_ready() -> bool:
                status, _ = await asyncio.to_thread(triton.get, "/v2/health/ready")
                return status == 200

            await until(triton_ready, 90, "triton ready")
            ready_at = time.monotonic()
            await until(lambda: _is(pending_count(client), 4), 5, "four slots filled")
            filled_s = time.monotonic() - ready_at
            for request_id in queued:
                (reply,) = await gateway.answered(request_id)
                assert reply.status == 200
        finally:
            output = pod.stop()
            if not triton.running:
                triton.start().wait_ready()
        # Readiness is watched every 20 ms while not ready: well within a poll (0.2 s here).
        assert filled_s < 0.15, f"four slots filled {filled_s * 1000:.0f} ms after ready\n{output}"

    scenario(redis_server, body)


async def _serving(pod: WorkerPod) -> bool:
    try:
        await asyncio.to_thread(pod.metric, "llm_sidecar_worker_slots_requests")
    except OSError:
        return False
    return True


def test_a_killed_pods_requests_are_answered_by_another_and_its_streams_end_with_an_error(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        plain = [(await gateway.enqueue(infer_body(3.0)))[0] for _ in range(3)]
        stream, _ = await gateway.enqueue(
            {"DURATION_S": [6.0]},
            model=STREAMER,
            kind=Kind.GENERATE,
            path=f"/v2/models/{STREAMER}/generate_stream",
            stream=True,
        )
        fast = {"CLAIM_IDLE_SECONDS": "1", "CAPACITY": "4"}
        doomed = WorkerPod(triton, redis_server.url, "worker-3", **fast)
        try:

            async def streaming() -> bool:
                replies = await gateway.replies_to(stream)
                return any(r.type is ReplyType.CHUNK for r in replies)

            await until(streaming, 30, "the stream's first chunk")
            assert await pending_count(client) == 4
            doomed.process.kill()  # SIGKILL: nothing is finished, nothing acknowledged
            doomed.process.wait(10)
        finally:
            doomed.stop()
        survivor = WorkerPod(triton, redis_server.url, "worker-4", **fast)
        try:
            for request_id in plain:
                (reply,) = await gateway.answered(request_id, timeout_s=30)
                assert (reply.type, reply.status, reply.attempt) == (ReplyType.FULL, 200, 2)
            replies = await gateway.answered(stream, timeout_s=30)
            assert replies[0].type is ReplyType.HEAD and replies[-1].type is ReplyType.ERROR
            assert {r.attempt for r in replies[:-1]} == {1} and replies[-1].attempt == 2
            assert "not replayed" in replies[-1].reason
            await until(lambda: _is(queued_count(client), 0), 10, "every entry acknowledged")
        finally:
            output = survivor.stop()
        assert survivor.process.returncode == 0, output

    scenario(redis_server, body)
