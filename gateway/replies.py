"""The gateway's one reader of its reply stream, and the waiters it hands replies to.

One task per process reads `llm-gateway:{<gateway>}:replies` with XREAD BLOCK from the
point the process started (older replies were for an incarnation whose clients are gone),
trims what it has read in the same round trip as the next read, and passes each message to
the handler waiting for its request id. No task per request: a handler awaits its waiter's
queue. Which messages a waiter takes (`Waiter.offer`):

- the first attempt that answers is followed; messages of other attempts are dropped, except
  an `error` from a later attempt: that one was written by the pod that took the request
  again and found the followed attempt had stopped mid-stream (streams are not replayed), so
  it is the last word on the request;
- a chunk whose seq was already relayed is dropped (a duplicate), as is a second head.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.contract import Reply, ReplyType
from scaler.redis_connect import REDIS_ERRORS, AnyRedis

log = logging.getLogger("gateway.replies")

READ_COUNT = 1000  # messages per XREAD: one round trip carries a burst
RETRY_AFTER_ERROR_S = 0.2


class Waiter:
    """What one handler waits on: the replies of its request, in order, filtered."""

    __slots__ = ("attempt", "headed", "next_seq", "queue", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.queue: asyncio.Queue[Reply] = asyncio.Queue()
        self.attempt: int | None = None
        self.headed = False
        self.next_seq = 0

    def offer(self, reply: Reply) -> bool:
        """Queue `reply` if it is one to relay; False: dropped (see the module docstring)."""
        if self.attempt is None:
            self.attempt = reply.attempt
        elif reply.attempt != self.attempt:
            if not (reply.type is ReplyType.ERROR and reply.attempt > self.attempt):
                return False
        elif reply.type is ReplyType.CHUNK:
            if reply.seq < self.next_seq:
                return False
            self.next_seq = reply.seq + 1
        elif reply.type is ReplyType.HEAD:
            if self.headed:
                return False
            self.headed = True
        self.queue.put_nowait(reply)
        return True


class ReplyReader:
    """Reads the reply stream and dispatches by request id until cancelled."""

    def __init__(
        self,
        client: AnyRedis,
        stream: str,
        block_ms: int,
        on_success: Callable[[], None],
        on_failure: Callable[[], None],
        on_ignored: Callable[[], None],
    ) -> None:
        """`client` must return bytes (decode_responses=False); `block_ms` stays under its
        socket timeout, so a quiet stream is no error."""
        self._client = client
        self._stream = stream
        self._block_ms = block_ms
        self._on_success = on_success
        self._on_failure = on_failure
        self._on_ignored = on_ignored
        self._waiters: dict[str, Waiter] = {}

    def register(self, request_id: str) -> Waiter:
        waiter = Waiter(request_id)
        self._waiters[request_id] = waiter
        return waiter

    def unregister(self, request_id: str) -> None:
        self._waiters.pop(request_id, None)

    async def run(self, start_id: str) -> None:
        """Read the messages after `start_id` ("<ms>-0": the process's start on Redis's clock)."""
        last_id = start_id
        trim_to: str | None = None
        while True:
            try:
                pipe = self._client.pipeline(transaction=False)
                if trim_to is not None:
                    # MINID keeps ids >= trim_to: everything before the last one read goes.
                    pipe.xtrim(self._stream, minid=trim_to, approximate=False)
                pipe.xread({self._stream: last_id}, count=READ_COUNT, block=self._block_ms)
                results = await pipe.execute()
            except REDIS_ERRORS as exc:
                log.warning("reading replies from %s failed: %s", self._stream, exc)
                self._on_failure()
                await asyncio.sleep(RETRY_AFTER_ERROR_S)
                continue
            self._on_success()
            trim_to = None
            read = results[-1]
            if not read:
                continue
            for entry_id, fields in read[0][1]:
                self._dispatch(fields)
                last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            trim_to = last_id

    def _dispatch(self, fields: dict[bytes, bytes]) -> None:
        try:
            reply = Reply.from_fields(fields)
        except (KeyError, ValueError) as exc:
            log.warning("malformed reply dropped: %r (%s)", fields.get(b"id"), exc)
            self._on_ignored()
            return
        waiter = self._waiters.get(reply.request_id)
        if waiter is None or not waiter.offer(reply):
            self._on_ignored()

    def fail_all(self, reply_for: Callable[[str], Reply]) -> int:
        """Hand every waiting request the reply `reply_for(id)` (at shutdown); how many."""
        for request_id, waiter in list(self._waiters.items()):
            waiter.queue.put_nowait(reply_for(request_id))
        return len(self._waiters)

    @property
    def waiting(self) -> int:
        return len(self._waiters)
