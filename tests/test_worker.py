"""The in-pod worker (sidecar.worker) against a real redis-server and a real Triton.

Requests are enqueued as the gateway enqueues them (gateway.contract.ENQUEUE_LUA with
QueuedRequest.fields()) and the replies are read off the gateway's reply stream. The
worker runs in the test's event loop; a pod that died holding a request is a consumer
that took it with XREADGROUP and never answered, as a SIGKILLed pod leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis, RedisCluster

from gateway.contract import (
    CONSUMER_GROUP,
    ENQUEUE_LUA,
    Kind,
    QueuedRequest,
    Reply,
    ReplyType,
    cancelled_key,
    live_key,
    reply_stream,
    request_stream,
    request_streams,
    streamed_key,
)
from scaler.clock import MONOTONIC, Clock
from scaler.local_redis import LocalRedis
from scaler.redis_connect import RedisLink
from sidecar.telemetry import WorkerMetrics
from sidecar.worker import Worker, WorkerSettings
from sidecar.worker_engine import Engine
from tests.conftest import EVERY_DEPLOYMENT
from tests.harness import NAMESPACE
from tests.real_triton import Repository, TritonServer, serving
from tests.redis_deployments import Deployment

TARGET = "llm"
GATEWAY = "gw-0"
SLEEPER = "sleep"  # plain model, 4 instances: DURATION_S seconds each
STREAMER = "streamer"  # decoupled: 3 events over DURATION_S


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("worker_triton")
    repository = Repository(root / "models")
    repository.sleeper(SLEEPER, instances=4)
    repository.streamer(STREAMER)
    with serving(root / "models", root) as server:
        yield server


class ShiftedClock:
    """Monotonic time the test can move forward: deadlines pass without sleeping."""

    def __init__(self) -> None:
        self.shift_s = 0.0

    def now(self) -> float:
        return time.monotonic() + self.shift_s


@dataclass
class Running:
    worker: Worker
    ready: asyncio.Event
    stop: asyncio.Event
    task: asyncio.Task[None]
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_worker(
    redis_url: str,
    triton: TritonServer | Any,
    *,
    slots: int = 2,
    consumer: str = "pod-a",
    claim_idle_s: float = 30.0,
    grace_s: float = 10.0,
    ready: bool = True,
    clock: Clock = MONOTONIC,
    openai_url: str = "http://127.0.0.1:9",
    sentinel_password: str | None = None,
    admit_refresh_s: float = 1.0,
) -> AsyncIterator[Running]:
    # Connected as the sidecar connects (any REDIS_URL form), with bytes replies.
    link = RedisLink(redis_url, None, 2.0, sentinel_password, decode_responses=False)
    client = link.client
    engine = Engine(triton.http_url, openai_url)
    registry = CollectorRegistry()
    gate = asyncio.Event()
    if ready:
        gate.set()
    settings = WorkerSettings(
        NAMESPACE, TARGET, consumer, slots, claim_idle_s, grace_s, admit_refresh_s=admit_refresh_s
    )
    worker = Worker(client, settings, engine, WorkerMetrics(registry), gate, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield Running(worker, gate, stop, task, registry)
    finally:
        stop.set()
        await task
        await worker.close()
        await link.aclose()


class Gateway:
    """Enqueues as the gateway does and reads its reply stream."""

    def __init__(self, client: Redis | RedisCluster, name: str = GATEWAY) -> None:
        self.client = client
        self.name = name
        self.incarnation = uuid.uuid4().hex

    async def live(self) -> None:
        await self.client.set(live_key(self.name), self.incarnation, px=60_000)

    async def enqueue(
        self,
        body: object,
        *,
        model: str = SLEEPER,
        kind: Kind = Kind.INFER,
        path: str | None = None,
        stream: bool = False,
        priority: str = "normal",
        timeout_ms: int = 60_000,
        max_deliveries: int = 3,
    ) -> tuple[str, str]:
        """Returns (request id, entry id)."""
        request_id = uuid.uuid4().hex
        request = QueuedRequest(
            request_id=request_id,
            kind=kind,
            model=model,
            version="",
            path=path or f"/v2/models/{model}/infer",
            stream=stream,
            content_type="application/json",
            headers="{}",
            body=body if isinstance(body, bytes) else json.dumps(body).encode(),
            gateway=self.name,
            incarnation=self.incarnation,
            max_deliveries=max_deliveries,
        )
        keys = [*request_streams(NAMESPACE, TARGET), request_stream(NAMESPACE, TARGET, priority)]
        args: list[Any] = [1000, timeout_ms]
        for field, value in request.fields().items():
            args += [field, value]
        answer = await self.client.eval(ENQUEUE_LUA, len(keys), *keys, *args)
        assert answer[0] == b"ok", answer
        return request_id, answer[1].decode()

    async def replies(self) -> list[Reply]:
        entries = await self.client.xrange(reply_stream(self.name))
        return [Reply.from_fields(fields) for _, fields in entries]

    async def replies_to(self, request_id: str) -> list[Reply]:
        return [r for r in await self.replies() if r.request_id == request_id]

    async def answered(self, request_id: str, timeout_s: float = 20.0) -> list[Reply]:
        """The request's replies once its last message (full, end, error) is there."""
        final = (ReplyType.FULL, ReplyType.END, ReplyType.ERROR)

        async def done() -> bool:
            return any(r.type in final for r in await self.replies_to(request_id))

        await until(done, timeout_s, f"request {request_id} answered")
        return await self.replies_to(request_id)


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def infer_body(seconds: float) -> dict[str, Any]:
    return {"inputs": [{"name": "DURATION_S", "shape": [1], "datatype": "FP32", "data": [seconds]}]}


def executions(triton: TritonServer, model: str) -> int:
    """How many requests Triton executed for `model` (its statistics)."""
    status, text = triton.get(f"/v2/models/{model}/stats")
    assert status == 200, text
    return int(json.loads(text)["model_stats"][0]["inference_count"])


async def pending_count(client: Redis) -> int:
    total = 0
    for stream in request_streams(NAMESPACE, TARGET):
        with contextlib.suppress(Exception):
            total += int((await client.xpending(stream, CONSUMER_GROUP))["pending"])
    return total


async def queued_count(client: Redis) -> int:
    return sum([await client.xlen(s) for s in request_streams(NAMESPACE, TARGET)])


def scenario(redis_server: LocalRedis, body: Callable[[Redis], Awaitable[None]]) -> None:
    async def run() -> None:
        client = Redis.from_url(redis_server.url)
        await client.flushall()
        try:
            await body(client)
        finally:
            await client.aclose()

    asyncio.run(run())


# ---- the tests ----


@pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)
def test_requests_round_trip_on_every_redis_deployment(
    deployment: Deployment, redis_client: object, triton: TritonServer
) -> None:
    """Single, Sentinel and Cluster: the take, the checks (keys in the gateway's and the
    target's slots) and the replies work alike; `redis_client` has flushed it."""

    async def body() -> None:
        link = RedisLink(
            deployment.url, None, 2.0, deployment.sentinel_password, decode_responses=False
        )
        try:
            gateway = Gateway(link.client)  # type: ignore[arg-type]
            await gateway.live()
            plain, _ = await gateway.enqueue(infer_body(0.01), priority="high")
            streamed, _ = await gateway.enqueue(
                {"DURATION_S": [0.1]},
                model=STREAMER,
                kind=Kind.GENERATE,
                path=f"/v2/models/{STREAMER}/generate_stream",
                stream=True,
            )
            gone, _ = await gateway.enqueue(infer_body(0.01), priority="low")
            await link.client.zadd(cancelled_key(NAMESPACE, TARGET), {gone: 1})
            async with running_worker(
                deployment.url, triton, sentinel_password=deployment.sentinel_password
            ) as running:
                (reply,) = await gateway.answered(plain)
                assert reply.status == 200
                types = [r.type for r in await gateway.answered(streamed)]
                assert types == [ReplyType.HEAD, *[ReplyType.CHUNK] * 3, ReplyType.END]

                async def skipped() -> bool:
                    return (
                        running.sample("llm_sidecar_worker_skipped_total", reason="cancelled") == 1
                    )

                await until(skipped, 5, "the cancelled one skipped")
            assert await gateway.replies_to(gone) == []
        finally:
            await link.aclose()

    asyncio.run(body())


def test_infer_round_trip_on_a_real_triton(redis_server: LocalRedis, triton: TritonServer) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        ok, _ = await gateway.enqueue(infer_body(0.01) | {"id": "r-1"})
        unknown, _ = await gateway.enqueue(infer_body(0.01), model="no-such-model")
        broken, _ = await gateway.enqueue(b"{not json")
        async with running_worker(redis_server.url, triton) as running:
            (full,) = await gateway.answered(ok)
            assert (full.type, full.status, full.attempt) == (ReplyType.FULL, 200, 1)
            answer = json.loads(full.data)
            assert answer["id"] == "r-1" and answer["model_name"] == SLEEPER
            (output,) = answer["outputs"]
            assert output["name"] == "SLEPT_S" and output["datatype"] == "FP32"
            assert output["shape"] == [1] and output["data"] == pytest.approx([0.01])
            # Triton's own status and message for a model it does not serve.
            (miss,) = await gateway.answered(unknown)
            direct = triton.post("/v2/models/no-such-model/infer", infer_body(0.01))
            assert miss.status == direct == 404 and b"no-such-model" in miss.data
            (bad,) = await gateway.answered(broken)
            assert bad.status == 400 and b"failed to parse" in bad.data
            # Answered, then acknowledged and deleted: the queue holds nothing.
            await until(lambda: _zero(queued_count(client)), 5, "entries acknowledged")
            assert running.sample("llm_sidecar_worker_answered_total", outcome="ok") == 1
            assert running.sample("llm_sidecar_worker_answered_total", outcome="engine_error") == 2

    scenario(redis_server, body)


async def _zero(count: Awaitable[int]) -> bool:
    return await count == 0


def test_generate_stream_is_relayed_event_by_event(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        request_id, _ = await gateway.enqueue(
            {"DURATION_S": [0.6]},
            model=STREAMER,
            kind=Kind.GENERATE,
            path=f"/v2/models/{STREAMER}/generate_stream",
            stream=True,
        )
        async with running_worker(redis_server.url, triton):
            # While it streams, the entry is marked: never replayed.
            async def first_chunk() -> bool:
                return any(r.type is ReplyType.CHUNK for r in await gateway.replies_to(request_id))

            await until(first_chunk, 20, "first chunk")
            assert await client.sismember(streamed_key(NAMESPACE, TARGET), request_id)
            replies = await gateway.answered(request_id)
        types = [r.type for r in replies]
        assert types == [ReplyType.HEAD, *[ReplyType.CHUNK] * 3, ReplyType.END]
        assert replies[0].status == 200 and replies[0].content_type.startswith("text/event-stream")
        chunks = [r for r in replies if r.type is ReplyType.CHUNK]
        assert [c.seq for c in chunks] == [0, 1, 2]
        for index, chunk in enumerate(chunks):
            assert chunk.data.startswith(b"data: ") and chunk.data.endswith(b"\n\n")
            assert json.loads(chunk.data[len(b"data: ") :])["SLEPT_S"] == index
        # Answered: acknowledged, and out of the streamed set.
        assert not await client.sismember(streamed_key(NAMESPACE, TARGET), request_id)
        assert await queued_count(client) == 0

    scenario(redis_server, body)


def test_never_more_taken_than_slots(redis_server: LocalRedis, triton: TritonServer) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        ids = [(await gateway.enqueue(infer_body(0.4)))[0] for _ in range(6)]
        async with running_worker(redis_server.url, triton, slots=2) as running:
            seen: list[tuple[int, int]] = []  # (held by the worker, pending in Redis)
            while len(seen) < 400:
                held, pending = running.worker.inflight, await pending_count(client)
                seen.append((held, pending))
                if await queued_count(client) == 0:
                    break
                await asyncio.sleep(0.005)
            for request_id in ids:
                (reply,) = await gateway.answered(request_id)
                assert reply.status == 200
        assert max(h for h, _ in seen) == 2  # it filled its slots...
        assert max(p for _, p in seen) <= 2  # ...and never took more

    scenario(redis_server, body)


def test_a_pod_that_becomes_ready_fills_its_slots_highest_priority_first(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        order = ["low", "normal", "high", "low", "normal", "high"]
        ids = {
            (await gateway.enqueue(infer_body(0.3), priority=p))[0]: p for p in order
        }  # the lowest first: arrival order is not what is served first
        async with running_worker(redis_server.url, triton, slots=3, ready=False) as running:
            await asyncio.sleep(0.3)
            assert await pending_count(client) == 0  # not ready: takes nothing
            began = time.monotonic()
            running.ready.set()
            await until(lambda: _equals(pending_count(client), 3), 2, "slots filled")
            filled_s = time.monotonic() - began
            # The first three taken are the two high ones and the oldest normal one.
            taken = []
            for stream in request_streams(NAMESPACE, TARGET):
                for _entry in await client.xpending_range(stream, CONSUMER_GROUP, "-", "+", 10):
                    taken.append(stream.rsplit(":", 1)[1])
            assert sorted(taken) == ["high", "high", "normal"]
            for request_id in ids:
                await gateway.answered(request_id)
        assert filled_s < 0.3, f"slots filled {filled_s:.3f} s after ready"

    scenario(redis_server, body)


async def _equals(count: Awaitable[int], wanted: int) -> bool:
    return await count == wanted


def test_an_expired_deadline_is_answered_504_and_never_run(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        before = executions(triton, SLEEPER)
        late, _ = await gateway.enqueue(infer_body(0.01), timeout_ms=10_000)
        clock = ShiftedClock()
        async with running_worker(redis_server.url, triton, ready=False, clock=clock) as running:
            await asyncio.sleep(0.2)  # the worker reads Redis's time at its start
            clock.shift_s = 11.0  # ...and 11 s later, by its clock, the pod is ready
            running.ready.set()
            (reply,) = await gateway.answered(late)
            assert (reply.type, reply.status) == (ReplyType.ERROR, 504)
            assert "deadline passed" in reply.reason
            assert running.sample("llm_sidecar_worker_skipped_total", reason="deadline") == 1
        assert executions(triton, SLEEPER) == before
        assert await queued_count(client) == 0

    scenario(redis_server, body)


def test_a_gone_gateway_or_a_cancelled_request_is_never_run(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        old = Gateway(client)
        await old.live()
        orphan, _ = await old.enqueue(infer_body(0.01))
        restarted = Gateway(client)  # the same gateway, a new incarnation: old clients gone
        await restarted.live()
        cancelled, _ = await restarted.enqueue(infer_body(0.01))
        await client.zadd(cancelled_key(NAMESPACE, TARGET), {cancelled: time.time() * 1000})
        served, _ = await restarted.enqueue(infer_body(0.01))
        before = executions(triton, SLEEPER)
        async with running_worker(redis_server.url, triton) as running:
            await restarted.answered(served)
            await until(lambda: _zero(queued_count(client)), 5, "all acknowledged")
            assert running.sample("llm_sidecar_worker_skipped_total", reason="gateway_gone") == 1
            assert running.sample("llm_sidecar_worker_skipped_total", reason="cancelled") == 1
        assert executions(triton, SLEEPER) == before + 1  # the served one only
        assert await restarted.replies_to(orphan) == []
        assert await restarted.replies_to(cancelled) == []

    scenario(redis_server, body)


async def _take_as_dead_pod(client: Redis, count: int = 10) -> list[str]:
    """XREADGROUP as a pod that then dies without answering (what SIGKILL leaves)."""
    stream = request_stream(NAMESPACE, TARGET, "normal")  # where enqueue() puts them
    answer = await client.xreadgroup(CONSUMER_GROUP, "dead-pod", {stream: ">"}, count=count)
    return [entry_id.decode() for _, entries in answer or [] for entry_id, _ in entries]


def test_a_request_left_by_a_dead_pod_is_answered_by_another(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        left, _ = await gateway.enqueue(infer_body(0.01))
        assert len(await _take_as_dead_pod(client)) == 1
        async with running_worker(redis_server.url, triton, claim_idle_s=0.3) as running:
            (reply,) = await gateway.answered(left)
            assert (reply.type, reply.status, reply.attempt) == (ReplyType.FULL, 200, 2)
            assert running.sample("llm_sidecar_worker_reclaimed_total") == 1
        assert await pending_count(client) == 0

    scenario(redis_server, body)


def test_a_long_request_held_by_a_live_pod_is_not_taken_away(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        long, _ = await gateway.enqueue(infer_body(1.5))
        async with (
            running_worker(redis_server.url, triton, claim_idle_s=0.3, consumer="pod-a"),
            running_worker(
                redis_server.url, triton, claim_idle_s=0.3, consumer="pod-b", ready=False
            ) as other,
        ):
            await until(lambda: _equals(pending_count(client), 1), 5, "taken by pod-a")
            other.ready.set()  # pod-b sweeps for idle entries every 0.15 s meanwhile
            replies = await gateway.answered(long)
            assert other.sample("llm_sidecar_worker_reclaimed_total") == 0
        assert [(r.type, r.attempt) for r in replies] == [(ReplyType.FULL, 1)]

    scenario(redis_server, body)


def test_past_max_deliveries_the_client_is_told_why(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        request_id, _ = await gateway.enqueue(infer_body(0.01), max_deliveries=1)
        await _take_as_dead_pod(client)
        before = executions(triton, SLEEPER)
        async with running_worker(redis_server.url, triton, claim_idle_s=0.2) as running:
            (reply,) = await gateway.answered(request_id)
            assert (reply.type, reply.status, reply.attempt) == (ReplyType.ERROR, 502, 2)
            assert "taken 2 times (at most 1)" in reply.reason
            assert running.sample("llm_sidecar_worker_skipped_total", reason="max_deliveries") == 1
        assert executions(triton, SLEEPER) == before
        assert await queued_count(client) == 0

    scenario(redis_server, body)


def test_a_stream_that_had_begun_is_not_replayed(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        request_id, _ = await gateway.enqueue(
            {"DURATION_S": [0.3]},
            model=STREAMER,
            kind=Kind.GENERATE,
            path=f"/v2/models/{STREAMER}/generate_stream",
            stream=True,
        )
        await _take_as_dead_pod(client)
        # The dead pod had written its first chunk, and marked the request with it.
        await client.sadd(streamed_key(NAMESPACE, TARGET), request_id)
        before = executions(triton, STREAMER)
        async with running_worker(redis_server.url, triton, claim_idle_s=0.2):
            (reply,) = await gateway.answered(request_id)
            assert (reply.type, reply.status) == (ReplyType.ERROR, 502)
            assert "not replayed" in reply.reason
        assert executions(triton, STREAMER) == before
        assert await queued_count(client) == 0
        assert not await client.sismember(streamed_key(NAMESPACE, TARGET), request_id)

    scenario(redis_server, body)


def test_stop_ends_the_taking_at_once_and_finishes_what_is_held(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        held = [(await gateway.enqueue(infer_body(1.0)))[0] for _ in range(2)]
        async with running_worker(redis_server.url, triton, slots=2, grace_s=10) as running:
            await until(lambda: _equals(pending_count(client), 2), 5, "both taken")
            running.stop.set()
            await asyncio.sleep(0.7)  # past one blocking read: nothing more is taken
            after, _ = await gateway.enqueue(infer_body(0.01))
            await running.task
            for request_id in held:
                (reply,) = await gateway.replies_to(request_id)
                assert (reply.type, reply.status) == (ReplyType.FULL, 200)
        assert await gateway.replies_to(after) == []
        assert await pending_count(client) == 0 and await queued_count(client) == 1

    scenario(redis_server, body)


def test_past_the_grace_period_what_is_held_stays_pending_for_another_pod(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        request_id, _ = await gateway.enqueue(infer_body(1.0))
        async with running_worker(redis_server.url, triton, grace_s=0.1) as running:
            await until(lambda: _equals(pending_count(client), 1), 5, "taken")
            running.stop.set()
            await running.task
        assert await gateway.replies_to(request_id) == []
        assert await pending_count(client) == 1  # another pod reclaims it
        async with running_worker(redis_server.url, triton, consumer="pod-b", claim_idle_s=0.2):
            (reply,) = await gateway.answered(request_id)
            assert (reply.status, reply.attempt) == (200, 2)

    scenario(redis_server, body)


def test_a_dead_pods_requests_are_reclaimed_only_into_free_slots(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        left, _ = await gateway.enqueue(infer_body(0.01))
        await _take_as_dead_pod(client)
        long, _ = await gateway.enqueue(infer_body(1.0))
        stream = request_stream(NAMESPACE, TARGET, "normal")
        async with running_worker(redis_server.url, triton, slots=1, claim_idle_s=0.2):
            holders: list[list[bytes]] = []
            while not await gateway.replies_to(long):
                pending = await client.xpending_range(stream, CONSUMER_GROUP, "-", "+", 10)
                holders.append(sorted(p["consumer"] for p in pending))
                await asyncio.sleep(0.02)
            (reply,) = await gateway.answered(left)
            assert (reply.status, reply.attempt) == (200, 2)
        # While its one slot ran the long request, the dead pod's entry was left alone.
        assert holders and all(h == [b"dead-pod", b"pod-a"] for h in holders[5:])

    scenario(redis_server, body)


def test_with_fewer_free_slots_than_classes_a_low_request_is_still_taken(
    redis_server: LocalRedis, triton: TritonServer
) -> None:
    """One slot: the blocking read waits on the top class only, and the sweep after it
    finds the low one (the path where a blocking read on every class could overfill)."""

    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        async with running_worker(redis_server.url, triton, slots=1) as running:
            await asyncio.sleep(0.2)  # idle: blocking reads on the top class, then sweeps
            began = time.monotonic()
            low, _ = await gateway.enqueue(infer_body(0.01), priority="low")
            (reply,) = await gateway.answered(low)
            assert reply.status == 200
            assert time.monotonic() - began < 0.5
            high = [(await gateway.enqueue(infer_body(0.2), priority="high"))[0] for _ in range(2)]
            await until(lambda: _equals(pending_count(client), 1), 2, "one taken")
            for _ in range(5):  # while the one slot is busy, nothing more is taken
                assert running.worker.inflight == 1 and await pending_count(client) == 1
                await asyncio.sleep(0.02)
            for request_id in high:
                await gateway.answered(request_id)

    scenario(redis_server, body)
