"""Writing one request's reply messages to its gateway's reply stream, then acknowledging it.

Order is the guarantee: the entry is acknowledged (XACK + XDEL, and SREM from the streamed
set) only after its final reply message is written, so a pod that dies in between leaves
the entry pending and another pod answers it. A streamed reply's head goes out with its
first chunk, in one pipeline with SADD of the request id to the target's streamed set (the
request id, not the entry id: entry ids repeat across the classes' streams): once any part
of a stream can have reached the client, the request is marked, and a pod that takes it again
answers with an error instead of running it twice.

A write that fails (Redis restarting, a Sentinel failover) is retried until the request's
deadline: the answer already computed is worth more than running the request again on another
pod after CLAIM_IDLE_SECONDS, and a failover takes seconds. Retrying is safe: the gateway drops
a head or chunk it already relayed and any message for a request that has ended. Past the
deadline the gateway has answered 504, and the entry is left pending for whoever takes it next
(it answers the deadline without running it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.contract import (
    CONSUMER_GROUP,
    REPLY_STREAM_MAXLEN,
    Reply,
    ReplyType,
    reply_stream,
)
from scaler.clock import MONOTONIC, Clock
from scaler.redis_connect import REDIS_ERRORS, AnyRedis

T = TypeVar("T")
RETRY_FIRST_S = 0.1  # first pause after a failed write; doubles up to RETRY_MAX_S
RETRY_MAX_S = 1.0


async def until_written(
    call: Callable[[], Awaitable[T]],
    give_up_at: float,
    clock: Clock,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`call()`, retried on Redis errors with a doubling pause until `give_up_at` (on `clock`);
    the last error is raised once that has passed."""
    pause = RETRY_FIRST_S
    while True:
        try:
            return await call()
        except REDIS_ERRORS:
            left = give_up_at - clock.now()
            if left <= 0:
                raise
            await sleep(min(pause, left))
            pause = min(pause * 2, RETRY_MAX_S)


class ReplyWriter:
    """The reply messages of one attempt at one request."""

    def __init__(
        self,
        client: AnyRedis,
        request_id: str,
        gateway: str,
        attempt: int,
        streamed_set: str,
        give_up_at: float = 0.0,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._client = client
        self._give_up_at = give_up_at  # retry failed writes until then (the deadline)
        self._clock = clock
        self._request_id = request_id
        self._stream = reply_stream(gateway)
        self._attempt = attempt
        self._streamed_set = streamed_set
        self._head: Reply | None = None  # held until the first chunk
        self._seq = 0
        self.started = False  # a stream's first message was written

    def _reply(self, type_: ReplyType, **fields: object) -> Reply:
        return Reply(self._request_id, type_, self._attempt, **fields)  # type: ignore[arg-type]

    async def full(self, status: int, content_type: str, body: bytes) -> None:
        await self._add(
            self._reply(ReplyType.FULL, status=status, content_type=content_type, data=body)
        )

    async def error(self, status: int, reason: str) -> None:
        await self._add(self._reply(ReplyType.ERROR, status=status, reason=reason))

    def head(self, status: int, content_type: str) -> None:
        self._head = self._reply(ReplyType.HEAD, status=status, content_type=content_type)

    async def chunk(self, data: bytes) -> None:
        await self._add(self._reply(ReplyType.CHUNK, data=data, seq=self._seq))
        self._seq += 1

    async def end(self) -> None:
        await self._add(self._reply(ReplyType.END))

    async def _add(self, reply: Reply) -> None:
        head, self._head = self._head, None

        async def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            if head is not None:
                pipe.sadd(self._streamed_set, self._request_id)
                pipe.xadd(self._stream, head.fields(), maxlen=REPLY_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            pipe.xadd(self._stream, reply.fields(), maxlen=REPLY_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()

        if head is not None:
            self.started = True  # from here on any part may have reached the client
        await until_written(write, self._give_up_at, self._clock)

    async def acknowledge(self, entries: list[tuple[str, str, str]]) -> None:
        """`acknowledge`, retried until the same deadline as the replies."""
        await until_written(
            lambda: acknowledge(self._client, self._streamed_set, entries),
            self._give_up_at,
            self._clock,
        )


async def write_replies(client: AnyRedis, replies: list[tuple[str, Reply]]) -> None:
    """Several requests' single messages (gateway, reply), in one round trip."""
    if not replies:
        return
    pipe = client.pipeline(transaction=False)
    for gateway, reply in replies:
        pipe.xadd(
            reply_stream(gateway),
            reply.fields(),  # type: ignore[arg-type]
            maxlen=REPLY_STREAM_MAXLEN,
            approximate=True,
        )
    await pipe.execute()


async def acknowledge(
    client: AnyRedis, streamed_set: str, entries: list[tuple[str, str, str]]
) -> None:
    """Done with these (stream, entry id, request id): out of the group's pending list, the
    stream and the streamed set ("" for a request id the entry did not carry)."""
    if not entries:
        return
    pipe = client.pipeline(transaction=False)
    for stream, entry_id, _ in entries:
        pipe.xack(stream, CONSUMER_GROUP, entry_id)
        pipe.xdel(stream, entry_id)
    marks = [request_id for _, _, request_id in entries if request_id]
    if marks:
        pipe.srem(streamed_set, *marks)
    await pipe.execute()
