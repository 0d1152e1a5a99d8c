"""How the gateway relays replies: streams chunk by chunk in order, an error event after the
head, the first attempt that answers wins, 504 at the deadline, and a cancelled mark when the
client is gone (so no pod starts the request later)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import redis
import redis.asyncio as aioredis

from gateway.app import Gateway
from gateway.contract import ReplyType, cancelled_key
from gateway.marks import MARGIN_MS, CancelMarks
from scaler.local_redis import LocalRedis
from tests.gateway_harness import LLAMA, NAMESPACE, WorkerSide, eventually, sample
from tests.test_gateway import INFER_BODY, post, run, waiting_is

LABEL = "inference/llama"


def test_stream_is_relayed_chunk_by_chunk_then_ends_with_an_error_event(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        call = post(http, "/v2/models/llama/generate_stream", {"text_input": "hi"})
        request = await worker.take_one()
        assert request.stream
        await worker.reply(request, ReplyType.HEAD, status=200, content_type="text/event-stream")
        response = await call
        assert (response.status, response.content_type) == (200, "text/event-stream")
        chunks = [f'data: {{"text_output": "t{i}"}}\n\n'.encode() for i in range(3)]
        # Each chunk reaches the client before the next is written: relayed as it comes.
        for seq, chunk in enumerate(chunks):
            await worker.reply(request, ReplyType.CHUNK, data=chunk, seq=seq)
            assert await response.content.readexactly(len(chunk)) == chunk
        await worker.reply(request, ReplyType.CHUNK, data=chunks[1], seq=1)  # a duplicate
        await worker.reply(request, ReplyType.ERROR, status=502, reason="the engine died")
        rest = await response.content.read()
        assert rest.startswith(b"event: error\ndata: ")
        assert json.loads(rest.split(b"data: ", 1)[1]) == {"error": "the engine died"}
        assert (
            sample(
                gateway, "llm_gateway_requests_failed_total", target=LABEL, reason="worker_error"
            )
            == 1
        )
        assert sample(gateway, "llm_gateway_replies_ignored_total") == 1

    run(redis_server, scenario)


def test_openai_stream_ends_on_end_and_errors_before_the_head_keep_their_status(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        call = post(
            http, "/v1/chat/completions", {"model": "llama", "stream": True, "messages": []}
        )
        request = await worker.take_one()
        await worker.reply(request, ReplyType.HEAD, status=200, content_type="text/event-stream")
        await worker.reply(request, ReplyType.CHUNK, data=b"data: [DONE]\n\n", seq=0)
        await worker.reply(request, ReplyType.END)
        response = await call
        assert await response.read() == b"data: [DONE]\n\n"
        # An error before any head: the client gets its status and reason, in OpenAI's shape.
        call = post(http, "/v1/completions", {"model": "llama"})
        request = await worker.take_one()
        await worker.reply(request, ReplyType.ERROR, attempt=4, status=503, reason="taken 3 times")
        response = await call
        assert response.status == 503
        assert (await response.json())["error"]["message"] == "taken 3 times"
        assert (
            sample(gateway, "llm_gateway_requests_answered_total", target=LABEL, status_class="2xx")
            == 1
        )
        assert (
            sample(
                gateway, "llm_gateway_requests_failed_total", target=LABEL, reason="worker_error"
            )
            == 1
        )

    run(redis_server, scenario)


def test_first_attempt_that_answers_wins(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        call = post(http, "/v2/models/llama/infer", INFER_BODY)
        request = await worker.take_one()
        await worker.full(request, b'{"from": 2}', attempt=2)
        await worker.full(request, b'{"from": 1}', attempt=1)
        assert await (await call).json() == {"from": 2}
        # Streaming: attempt 1 answered first; attempt 2's head and chunk are dropped, but its
        # error (it found attempt 1's pod gone mid-stream: no replay) ends the stream.
        call = post(http, "/v2/models/llama/generate_stream", {})
        request = await worker.take_one()
        await worker.reply(
            request, ReplyType.HEAD, attempt=1, status=200, content_type="text/event-stream"
        )
        await worker.reply(request, ReplyType.CHUNK, attempt=1, data=b"data: a\n\n", seq=0)
        await worker.reply(
            request, ReplyType.HEAD, attempt=2, status=200, content_type="text/event-stream"
        )
        await worker.reply(request, ReplyType.CHUNK, attempt=2, data=b"data: b\n\n", seq=0)
        await worker.reply(request, ReplyType.ERROR, attempt=2, status=502, reason="not replayed")
        body = await (await call).read()
        assert body.startswith(b"data: a\n\nevent: error\n")
        assert b"data: b" not in body

    run(redis_server, scenario)


def test_no_reply_by_the_deadline_is_504_and_marks_it_cancelled(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        response = await post(
            http, "/v1/completions", {"model": "llama"}, **{"X-Request-Timeout": "0.2"}
        )
        assert response.status == 504
        message = (await response.json())["error"]["message"]
        assert "within the request's deadline of 0.2 s: no pod answered in time" in message
        rid = response.headers["X-Request-Id"]
        key = cancelled_key(NAMESPACE, LLAMA.name)
        assert await eventually(lambda: worker.client.zscore(key, rid))
        taken = await worker.take_one()
        assert taken.request_id == rid
        # The deadline went with it, on Redis's clock: a worker would skip it too.
        seconds, micros = await worker.client.time()
        assert taken.deadline_ms <= seconds * 1000 + micros // 1000
        assert (
            sample(gateway, "llm_gateway_requests_failed_total", target=LABEL, reason="deadline")
            == 1
        )

    run(redis_server, scenario)


def test_deadline_passing_mid_stream_ends_it_with_an_error_event(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        call = post(http, "/v2/models/llama/generate_stream", {}, **{"X-Request-Timeout": "0.5"})
        request = await worker.take_one()
        await worker.reply(request, ReplyType.HEAD, status=200, content_type="text/event-stream")
        body = await (await call).read()
        assert body.startswith(b"event: error\n")
        assert b"its pod did not finish" in body

    run(redis_server, scenario)


def test_client_that_goes_while_waiting_leaves_a_cancelled_mark(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as client:
            call = post(client, "/v2/models/llama/infer", INFER_BODY)
            request = await worker.take_one()
        # The session closed with the call unanswered: the connection is gone.
        call.cancel()
        key = cancelled_key(NAMESPACE, LLAMA.name)
        score = await eventually(lambda: worker.client.zscore(key, request.request_id))
        assert score > request.deadline_ms  # kept past the deadline, so no worker misses it
        await eventually(lambda: _counted(gateway, "client_gone"))
        assert gateway.inflight == 0
        # A late reply finds no one waiting and is dropped.
        await worker.full(request, b"{}")
        await eventually(lambda: _ignored(gateway))

    run(redis_server, scenario)


async def _counted(gateway: Gateway, reason: str) -> bool:
    return sample(gateway, "llm_gateway_requests_failed_total", target=LABEL, reason=reason) == 1


async def _ignored(gateway: Gateway) -> bool:
    return sample(gateway, "llm_gateway_replies_ignored_total") == 1


def test_books_balance_accepted_is_answered_plus_failed(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        calls = [post(http, "/v2/models/llama/infer", INFER_BODY) for _ in range(4)]
        await eventually(lambda: waiting_is(worker, 4))
        taken = await worker.take(count=4)
        for i, (_, request) in enumerate(taken):
            if i == 3:
                await worker.reply(request, ReplyType.ERROR, status=504, reason="deadline passed")
            else:
                await worker.full(request, b"{}", status=200 if i else 400)
        assert sorted([(await c).status for c in calls]) == [200, 200, 400, 504]
        accepted = sample(gateway, "llm_gateway_requests_accepted_total", target=LABEL)
        answered = sum(
            sample(gateway, "llm_gateway_requests_answered_total", target=LABEL, status_class=c)
            for c in ("2xx", "3xx", "4xx", "5xx")
        )
        failed = sample(
            gateway, "llm_gateway_requests_failed_total", target=LABEL, reason="worker_error"
        )
        assert (accepted, answered, failed) == (4, 3, 1)

    run(redis_server, scenario)


def test_reply_stream_is_trimmed_as_it_is_read(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        for _ in range(3):
            call = post(http, "/v2/models/llama/infer", INFER_BODY)
            await worker.full(await worker.take_one(), b"{}")
            assert (await call).status == 200
        # The reader trims all it has read but the last (MINID keeps it) with its next read.
        assert await eventually(lambda: _length_is(worker, gateway.reply_stream, 1))

    run(redis_server, scenario)


async def _length_is(worker: WorkerSide, stream: str, length: int) -> bool:
    return await worker.client.xlen(stream) == length


def test_cancelled_marks_outlive_the_deadline_then_are_trimmed(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        now_ms = [1_700_000_000_000]
        marks = CancelMarks(client, lambda: now_ms[0])
        key = cancelled_key(NAMESPACE, LLAMA.name)
        marks.mark(key, "a", deadline_ms=now_ms[0] + 1000)
        assert await marks.flush()
        assert await client.zscore(key, "a") == now_ms[0] + 1000 + MARGIN_MS
        now_ms[0] += 1000 + MARGIN_MS + 1  # past a's use: no worker would start it now
        marks.mark(key, "b", deadline_ms=now_ms[0] + 1000)
        assert await marks.flush()
        assert [m.decode() for m in await client.zrange(key, 0, -1)] == ["b"]
        await client.aclose()

    asyncio.run(main())
