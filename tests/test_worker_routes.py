"""The worker's HTTP routes: OpenAI-compatible requests relayed to the OpenAI frontend.

The frontend is stood in for by an aiohttp server on loopback (the tests' Triton from
nvidia-pytriton has no OpenAI frontend): it streams chat chunks one at a time, sending the
next only once the test has seen the previous one on the gateway's reply stream, so a
relay that buffered the stream would fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import types
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from gateway.contract import Kind, ReplyType
from scaler.local_redis import LocalRedis
from tests.test_worker import Gateway, queued_count, running_worker, scenario, until

NO_TRITON = types.SimpleNamespace(http_url="http://127.0.0.1:9")
CHUNKS = [b'data: {"choices":[{"delta":{"content":"%d"}}]}\n\n' % i for i in range(3)]


class OpenAIStandIn:
    def __init__(self) -> None:
        self.seen = [asyncio.Event() for _ in CHUNKS]  # set by the test, chunk by chunk
        self.bodies: list[dict[str, object]] = []
        self.url = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"content": "hi"}}]})
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        for chunk, seen in zip(CHUNKS, self.seen, strict=True):
            await answer.write(chunk)
            await asyncio.wait_for(seen.wait(), 10)  # the relay must pass it on first
        await answer.write(b"data: [DONE]\n\n")
        await answer.write_eof()
        return answer


@contextlib.asynccontextmanager
async def stand_in() -> AsyncIterator[OpenAIStandIn]:
    frontend = OpenAIStandIn()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", frontend.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    frontend.url = f"http://127.0.0.1:{port}"
    try:
        yield frontend
    finally:
        await runner.cleanup()


def test_a_streamed_chat_is_relayed_chunk_by_chunk(redis_server: LocalRedis) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        streamed, _ = await gateway.enqueue(
            {"model": "llama", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            model="llama",
            kind=Kind.OPENAI,
            path="/v1/chat/completions",
            stream=True,
        )
        whole, _ = await gateway.enqueue(
            {"model": "llama", "messages": [{"role": "user", "content": "x"}]},
            model="llama",
            kind=Kind.OPENAI,
            path="/v1/chat/completions",
        )
        async with (
            stand_in() as frontend,
            running_worker(redis_server.url, NO_TRITON, openai_url=frontend.url),
        ):
            for index, seen in enumerate(frontend.seen):

                async def relayed(count: int = index + 1) -> bool:
                    replies = await gateway.replies_to(streamed)
                    return sum(r.type is ReplyType.CHUNK for r in replies) >= count

                await until(relayed, 10, f"chunk {index} relayed while the stream runs")
                seen.set()
            replies = await gateway.answered(streamed)
            (full,) = await gateway.answered(whole)
        assert [r.type for r in replies] == [
            ReplyType.HEAD,
            *[ReplyType.CHUNK] * 4,
            ReplyType.END,
        ]
        assert [r.data for r in replies[1:5]] == [*CHUNKS, b"data: [DONE]\n\n"]
        assert (full.type, full.status) == (ReplyType.FULL, 200)
        assert json.loads(full.data)["choices"][0]["message"]["content"] == "hi"
        assert await queued_count(client) == 0

    scenario(redis_server, body)


def test_an_engine_that_does_not_answer_gets_the_client_a_named_error(
    redis_server: LocalRedis,
) -> None:
    async def body(client: Redis) -> None:
        gateway = Gateway(client)
        await gateway.live()
        request_id, _ = await gateway.enqueue(
            {"model": "llama", "prompt": "x"},
            model="llama",
            kind=Kind.OPENAI,
            path="/v1/completions",
        )
        async with running_worker(redis_server.url, NO_TRITON) as running:  # port 9: closed
            (reply,) = await gateway.answered(request_id)
            assert (reply.type, reply.status) == (ReplyType.ERROR, 502)
            assert "engine failed" in reply.reason
            assert running.sample("llm_sidecar_worker_answered_total", outcome="failed") == 1
        assert await queued_count(client) == 0

    scenario(redis_server, body)
