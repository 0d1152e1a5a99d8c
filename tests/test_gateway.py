"""The gateway over real HTTP on loopback, with a real redis-server; the worker's side is
played on Redis directly (tests.gateway_harness.WorkerSide), as the contract describes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import redis

from gateway.app import Gateway
from gateway.contract import Kind, ReplyType, cancelled_key, live_key
from scaler.local_redis import LocalRedis
from tests.gateway_harness import (
    LLAMA,
    MISTRAL,
    NAMESPACE,
    WorkerSide,
    eventually,
    running_gateway,
    sample,
)

Scenario = Callable[[Gateway, WorkerSide, aiohttp.ClientSession], Awaitable[None]]


def run(redis_server: LocalRedis, scenario: Scenario, **overrides: object) -> None:
    async def main() -> None:
        async with running_gateway(redis_server.url, **overrides) as gateway:
            worker = WorkerSide(redis_server.url)
            async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as http:
                try:
                    await scenario(gateway, worker, http)
                finally:
                    await worker.aclose()

    asyncio.run(main())


INFER_BODY = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}


def test_kserve_infer_round_trip(redis_server: LocalRedis, redis_client: redis.Redis) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        body = json.dumps(INFER_BODY).encode()
        call = asyncio.ensure_future(
            http.post(
                "/v2/models/llama/versions/2/infer",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": "Bearer t"},
            )
        )
        request = await worker.take_one()
        assert (request.kind, request.model, request.version) == (Kind.INFER, "llama", "2")
        assert request.body == body  # unchanged
        assert request.path == "/v2/models/llama/versions/2/infer"
        assert not request.stream
        assert (request.gateway, request.incarnation) == ("gw-test", gateway.incarnation)
        assert request.max_deliveries == LLAMA.max_deliveries
        assert json.loads(request.headers)["Authorization"] == "Bearer t"
        assert "Host" not in json.loads(request.headers)
        assert request.deadline_ms > 0
        await worker.full(request, b'{"outputs": []}', status=200)
        response = await call
        assert response.status == 200
        assert await response.read() == b'{"outputs": []}'
        assert response.headers["X-Request-Id"] == request.request_id
        assert sample(gateway, "llm_gateway_requests_accepted_total", target="inference/llama") == 1
        assert (
            sample(
                gateway,
                "llm_gateway_requests_answered_total",
                target="inference/llama",
                status_class="2xx",
            )
            == 1
        )

    run(redis_server, scenario)
