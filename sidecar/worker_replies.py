"""Writing one request's reply messages to its gateway's reply stream, then acknowledging it.

Order is the guarantee: the entry is acknowledged (XACK + XDEL, and SREM from the streamed
set) only after its final reply message is written, so a pod that dies in between leaves
the entry pending and another pod answers it. A streamed reply's head goes out with its
first chunk, in one pipeline with SADD of the request id to the target's streamed set (the
request id, not the entry id: entry ids repeat across the classes' streams): once any part
of a stream can have reached the client, the request is marked, and a pod that takes it again
answers with an error instead of running it twice.
"""

from __future__ import annotations

from gateway.contract import (
    CONSUMER_GROUP,
    REPLY_STREAM_MAXLEN,
    Reply,
    ReplyType,
    reply_stream,
)
from scaler.redis_connect import AnyRedis


class ReplyWriter:
    """The reply messages of one attempt at one request."""

    def __init__(
        self,
        client: AnyRedis,
        request_id: str,
        gateway: str,
        attempt: int,
        streamed_set: str,
    ) -> None:
        self._client = client
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
        pipe = self._client.pipeline(transaction=False)
        if self._head is not None:
            head, self._head = self._head, None
            pipe.sadd(self._streamed_set, self._request_id)
            pipe.xadd(self._stream, head.fields(), maxlen=REPLY_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            self.started = True
        pipe.xadd(self._stream, reply.fields(), maxlen=REPLY_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        await pipe.execute()


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
