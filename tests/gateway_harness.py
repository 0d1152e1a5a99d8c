"""Test helpers for the gateway: the real Gateway on loopback port 0, and the worker's side
played directly on Redis (XREADGROUP an entry, XADD replies), as the contract says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError

from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.contract import (
    CONSUMER_GROUP,
    PRIORITIES,
    QueuedRequest,
    Reply,
    ReplyType,
    reply_stream,
    request_stream,
)
from gateway.targets import Target
from scaler.redis_connect import RedisLink

NAMESPACE = "inference"
LLAMA = Target(namespace=NAMESPACE, name="llama", models=("llama",), queue_limit=5)
MISTRAL = Target(namespace=NAMESPACE, name="mistral", models=("mistral", "mistral-instruct"))
# Found by Host or path prefix; lists no models, so serves any.
ANY = Target(
    namespace=NAMESPACE, name="lab", hosts=("lab.example.com",), paths=("/v2/models/exp-",)
)


def gateway_config(redis_url: str, **overrides: Any) -> GatewayConfig:
    config = GatewayConfig(
        targets=(LLAMA, MISTRAL, ANY),
        name="gw-test",
        redis_url=redis_url,
        bind_address="127.0.0.1",
        port=0,
        metrics_port=0,
        shutdown_delay_s=0,
        shutdown_grace_s=5,
    )
    return replace(config, **overrides)


@contextlib.asynccontextmanager
async def running_gateway(redis_url: str, **overrides: Any) -> AsyncIterator[Gateway]:
    gateway = Gateway(gateway_config(redis_url, **overrides), CollectorRegistry())
    await gateway.start()
    try:
        yield gateway
    finally:
        if not gateway.closing:
            await gateway.stop(0, 0)


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    value = gateway._registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class WorkerSide:
    """What a pod's worker does on Redis, step by step, under the test's control."""

    def __init__(
        self,
        url: str,
        target: Target = LLAMA,
        consumer: str = "pod-0",
        sentinel_password: str | None = None,
    ) -> None:
        # Bytes, as the worker reads; through the project's own link for Sentinel and Cluster.
        link = RedisLink(url, None, 5.0, sentinel_password, decode_responses=False)
        self._link = link
        self.client: Any = link.client
        self.target = target
        self.consumer = consumer

    async def take(
        self, priority: str = "normal", count: int = 1, block_ms: int = 5000
    ) -> list[tuple[str, QueuedRequest]]:
        stream = request_stream(self.target.namespace, self.target.name, priority)
        with contextlib.suppress(ResponseError):  # BUSYGROUP: the gateway made it
            await self.client.xgroup_create(stream, CONSUMER_GROUP, "0", mkstream=True)
        read = await self.client.xreadgroup(
            CONSUMER_GROUP, self.consumer, {stream: ">"}, count=count, block=block_ms
        )
        if not read:
            return []
        return [
            (entry_id.decode(), QueuedRequest.from_fields(fields))
            for entry_id, fields in read[0][1]
        ]

    async def take_one(self, priority: str = "normal") -> QueuedRequest:
        taken = await self.take(priority)
        assert taken, f"nothing arrived on the {priority} stream"
        return taken[0][1]

    async def depth(self) -> dict[str, int]:
        ns, name = self.target.namespace, self.target.name
        return {p: await self.client.xlen(request_stream(ns, name, p)) for p in PRIORITIES}

    async def reply(
        self, request: QueuedRequest, type_: ReplyType, attempt: int = 1, **kw: Any
    ) -> None:
        message = Reply(request.request_id, type_, attempt, **kw)
        await self.client.xadd(reply_stream(request.gateway), message.fields())  # type: ignore[arg-type]

    async def full(
        self, request: QueuedRequest, body: bytes, status: int = 200, attempt: int = 1
    ) -> None:
        await self.reply(
            request,
            ReplyType.FULL,
            attempt,
            status=status,
            content_type="application/json",
            data=body,
        )

    async def aclose(self) -> None:
        await self._link.aclose()


async def eventually(check: Any, timeout_s: float = 5.0) -> Any:
    """Polls an async `check` until it returns a true value (Redis state written by a task)."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.01)
