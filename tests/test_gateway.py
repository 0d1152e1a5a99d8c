"""The gateway over real HTTP on loopback, with a real redis-server; the worker's side is
played on Redis directly (tests.gateway_harness.WorkerSide), as the contract describes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import redis

from gateway.app import Gateway
from gateway.contract import LIVE_TTL_MS, PRIORITIES, Kind, ReplyType, live_key
from gateway.targets import Target
from scaler.local_redis import LocalRedis
from tests.gateway_harness import (
    ANY,
    LLAMA,
    MISTRAL,
    WorkerSide,
    eventually,
    running_gateway,
    sample,
)

SCENARIO_TIMEOUT_S = 30  # a scenario that hangs fails instead
Scenario = Callable[[Gateway, WorkerSide, aiohttp.ClientSession], Awaitable[None]]


def run(redis_server: LocalRedis, scenario: Scenario, **overrides: object) -> None:
    async def main() -> None:
        async with running_gateway(redis_server.url, **overrides) as gateway:
            worker = WorkerSide(redis_server.url)
            async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as http:
                try:
                    async with asyncio.timeout(SCENARIO_TIMEOUT_S):
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


def test_curl_default_content_type_is_read_as_json_as_triton_does(
    redis_server: LocalRedis,
) -> None:
    """`curl -d '{...}' URL` sends application/x-www-form-urlencoded; Triton serves it."""

    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        call = asyncio.ensure_future(
            http.post("/v2/models/llama/generate", data=b'{"text_input": "hi"}', headers=form)
        )
        request = await worker.take_one()
        assert request.content_type == "application/json"
        await worker.full(request, b'{"text_output": "hello"}', status=200)
        assert (await call).status == 200
        broken = await http.post("/v2/models/llama/generate", data=b"a=1", headers=form)
        assert broken.status == 400  # still checked to be JSON

    run(redis_server, scenario)


def post(
    http: aiohttp.ClientSession, path: str, body: object, **headers: str
) -> asyncio.Future[aiohttp.ClientResponse]:
    """The call, started now, answered when the worker's side replies."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("Content-Type", "application/json")
    return asyncio.ensure_future(http.post(path, data=data, headers=headers))


ROUTES = [
    # path, body, extra headers, worker's target, kind, model, stream
    ("/v2/models/llama/infer", INFER_BODY, {}, LLAMA, Kind.INFER, "llama", False),
    (
        "/v2/models/mistral/generate",
        {"text_input": "hi"},
        {},
        MISTRAL,
        Kind.GENERATE,
        "mistral",
        False,
    ),
    (
        "/v2/models/mistral-instruct/generate_stream",
        {"text_input": "hi"},
        {},
        MISTRAL,
        Kind.GENERATE,
        "mistral-instruct",
        True,
    ),
    ("/v1/completions", {"model": "llama", "prompt": "hi"}, {}, LLAMA, Kind.OPENAI, "llama", False),
    (
        "/v1/chat/completions",
        {"model": "mistral", "messages": [], "stream": True},
        {},
        MISTRAL,
        Kind.OPENAI,
        "mistral",
        True,
    ),
    # Host wins over the model's own target; ANY lists no models, so serves any.
    (
        "/v1/completions",
        {"model": "llama"},
        {"Host": "LAB.example.com:8000"},
        ANY,
        Kind.OPENAI,
        "llama",
        False,
    ),
    # A path prefix finds ANY for a model no target lists.
    ("/v2/models/exp-7/infer", INFER_BODY, {}, ANY, Kind.INFER, "exp-7", False),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "target", "kind", "model", "stream"),
    ROUTES,
    ids=[
        "infer",
        "generate",
        "generate_stream",
        "completions",
        "chat-stream",
        "by-host",
        "by-path",
    ],
)
def test_routes_and_mapping_put_the_request_on_its_targets_stream(
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    path: str,
    body: object,
    headers: dict[str, str],
    target: Target,
    kind: Kind,
    model: str,
    stream: bool,
) -> None:
    async def scenario(gateway: Gateway, _: WorkerSide, http: aiohttp.ClientSession) -> None:
        worker = WorkerSide(redis_server.url, target)
        try:
            call = post(http, path, body, **headers)
            request = await worker.take_one()
            assert (request.kind, request.model, request.stream) == (kind, model, stream)
            assert request.path == path
            assert json.loads(request.body) == body
            if stream:
                await worker.reply(
                    request, ReplyType.HEAD, status=200, content_type="text/event-stream"
                )
                await worker.reply(request, ReplyType.CHUNK, data=b"data: {}\n\n", seq=0)
                await worker.reply(request, ReplyType.END)
            else:
                await worker.full(request, b"{}")
            response = await call
            assert response.status == 200
            assert await response.read() == (b"data: {}\n\n" if stream else b"{}")
        finally:
            await worker.aclose()

    run(redis_server, scenario)


BAD_INPUT = [
    # id, path, body, headers, status, text expected in the body, reason label
    (
        "malformed-json",
        "/v2/models/llama/infer",
        b'{"inputs": [',
        {},
        400,
        "failed to parse the request JSON",
        "bad_json",
    ),
    (
        "not-an-object",
        "/v2/models/llama/infer",
        b"[1, 2]",
        {},
        400,
        "must be a JSON object",
        "bad_json",
    ),
    (
        "openai-malformed",
        "/v1/completions",
        b"{model",
        {},
        400,
        '"invalid_request_error"',
        "bad_json",
    ),
    (
        "openai-no-model",
        "/v1/completions",
        b'{"prompt": "x"}',
        {},
        400,
        '"param": "model"',
        "bad_json",
    ),
    (
        "openai-stream-type",
        "/v1/completions",
        b'{"model": "llama", "stream": "yes"}',
        {},
        400,
        '\\"stream\\" = \\"yes\\"',
        "bad_json",
    ),
    (
        "unknown-model-kserve",
        "/v2/models/gpt/infer",
        b"{}",
        {},
        400,
        "Request for unknown model: 'gpt' is not found",
        "unknown_model",
    ),
    (
        "unknown-model-openai",
        "/v1/chat/completions",
        b'{"model": "gpt"}',
        {},
        404,
        '"code": "model_not_found"',
        "unknown_model",
    ),
    (
        "model-not-of-host",
        "/v2/models/gpt/generate",
        b"{}",
        {"Host": "mistral.example.com"},
        400,
        "unknown model",
        "unknown_model",
    ),
    (
        "too-large",
        "/v2/models/llama/infer",
        b"{" + b" " * 2048 + b"}",
        {},
        413,
        "over the gateway's limit of 1024 bytes",
        "too_large",
    ),
    (
        "content-type",
        "/v2/models/llama/infer",
        b"{}",
        {"Content-Type": "text/plain"},
        415,
        "send application/json",
        "content_type",
    ),
    (
        "binary-tensors",
        "/v2/models/llama/infer",
        b"{}",
        {"Inference-Header-Content-Length": "2"},
        415,
        "binary tensor extension",
        "binary_tensors",
    ),
    (
        "priority",
        "/v2/models/llama/infer",
        b"{}",
        {"X-Priority": "urgent"},
        400,
        "header X-Priority = 'urgent', must be one of high, normal, low",
        "bad_header",
    ),
    (
        "timeout",
        "/v2/models/llama/infer",
        b"{}",
        {"X-Request-Timeout": "-1"},
        400,
        "header X-Request-Timeout = '-1', must be seconds",
        "bad_header",
    ),
    ("route", "/v2/models/llama/explain", b"{}", {}, 404, "Not Found", ""),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "text", "reason"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_is_refused_with_a_named_problem_and_never_queued(
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    text: str,
    reason: str,
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        response = await post(http, path, body, **headers)
        assert response.status == status
        assert text in await response.text()
        for target in (LLAMA, MISTRAL, ANY):
            assert set((await WorkerSide(redis_server.url, target).depth()).values()) == {0}
        if reason:
            assert (
                sample(gateway, "llm_gateway_requests_refused_total", target="-", reason=reason)
                == 1
            )
        assert sample(gateway, "llm_gateway_requests_accepted_total", target="inference/llama") == 0

    run(redis_server, scenario, max_body_bytes=1024)


def test_chunked_body_over_the_limit_is_refused(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit bites on read
            for _ in range(4):
                yield b" " * 512

        response = await http.post(
            "/v2/models/llama/infer", data=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status == 413
        assert "1024 bytes" in await response.text()
        assert set((await worker.depth()).values()) == {0}

    run(redis_server, scenario, max_body_bytes=1024)


@pytest.mark.parametrize(("header", "stream"), [("high", "high"), ("LOW", "low"), (None, "normal")])
def test_priority_header_picks_the_stream(
    redis_server: LocalRedis, redis_client: redis.Redis, header: str | None, stream: str
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        headers = {} if header is None else {"X-Priority": header}
        call = post(http, "/v2/models/llama/infer", INFER_BODY, **headers)
        request = await worker.take_one(stream)
        assert (await worker.depth())[stream] == 1
        await worker.full(request, b"{}")
        assert (await call).status == 200

    run(redis_server, scenario)


def test_full_queue_answers_429_with_retry_after_and_counts_only_untaken(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        limit = LLAMA.queue_limit
        held = [
            post(http, "/v2/models/llama/infer", INFER_BODY, **{"X-Priority": p})
            for p in (["high", "low"] * limit)[:limit]
        ]
        await eventually(lambda: waiting_is(worker, limit))
        refused = await post(http, "/v1/completions", {"model": "llama"})
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) >= 1
        answer = await refused.json()
        assert answer["error"]["code"] == "queue_full"
        assert f"{limit} requests wait, its limit is {limit}" in answer["error"]["message"]
        assert (
            sample(
                gateway,
                "llm_gateway_requests_refused_total",
                target="inference/llama",
                reason="queue_full",
            )
            == 1
        )
        # A request a pod took no longer waits: one more fits.
        taken = await worker.take_one("high")
        more = post(http, "/v2/models/llama/infer", INFER_BODY)
        await eventually(lambda: waiting_is(worker, limit + 1))
        for request in [taken] + [
            r for p in PRIORITIES for _, r in await worker.take(p, count=10, block_ms=10)
        ]:
            await worker.full(request, b"{}")
        assert [(await c).status for c in [*held, more]] == [200] * (limit + 1)

    run(redis_server, scenario)


async def waiting_is(worker: WorkerSide, count: int) -> bool:
    return sum((await worker.depth()).values()) == count


def test_live_key_holds_the_incarnation(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def scenario(gateway: Gateway, worker: WorkerSide, http: aiohttp.ClientSession) -> None:
        key = live_key("gw-test")
        assert redis_client.get(key) == gateway.incarnation
        assert 0 < redis_client.pttl(key) <= LIVE_TTL_MS
        assert (await http.get("/readyz")).status == 200
        assert (await http.get("/healthz")).status == 200

    run(redis_server, scenario)
