"""Whether a request just taken may start: deadline, client still there, delivery count.

A request is never started when its deadline (Redis time, stamped by the enqueue script)
has passed, when its gateway's `live` key no longer holds the incarnation that enqueued it
(the gateway restarted or died: its client is gone), or when it is in the target's
`cancelled` set (the client hung up). A request taken again after its pod stopped is
refused when it was already streaming (streams are not replayed) or when it was taken
more than its `max_deliveries` times. All of it for one batch in one pipelined round trip.

Deadlines are compared on Redis's clock: `RedisOffsetClock` keeps the offset between Redis TIME
and the worker's own (injected) monotonic clock, a `scaler.clock.Clock`, measured now and then.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.contract import (
    CONSUMER_GROUP,
    QueuedRequest,
    cancelled_key,
    live_key,
    streamed_key,
)
from scaler.clock import MONOTONIC, Clock
from scaler.redis_connect import AnyRedis


class RedisOffsetClock:
    """Redis's time in ms, read from `clock` (monotonic seconds) plus a measured offset."""

    def __init__(self, clock: Clock = MONOTONIC) -> None:
        self._clock = clock
        self._offset_ms: float | None = None

    async def sync(self, client: AnyRedis) -> None:
        before = self._clock.now()
        answer: Any = await client.time()
        if isinstance(answer, dict):  # a Cluster may answer per node: any one will do
            answer = next(iter(answer.values()))
        seconds, micros = answer
        after = self._clock.now()
        redis_ms = seconds * 1000 + micros / 1000
        # Redis read the time somewhere in the round trip: its middle is the best guess.
        self._offset_ms = redis_ms - (before + after) / 2 * 1000

    @property
    def synced(self) -> bool:
        return self._offset_ms is not None

    def now_ms(self) -> float:
        if self._offset_ms is None:
            raise RuntimeError("RedisOffsetClock.now_ms before the first sync")
        return self._clock.now() * 1000 + self._offset_ms


class Verdict(StrEnum):
    RUN = "run"
    MALFORMED = "malformed"  # fields missing or broken: nobody to answer, or a 500
    GATEWAY_GONE = "gateway_gone"  # its gateway restarted or died: no client to answer
    CANCELLED = "cancelled"  # its client hung up
    STREAMED = "streamed"  # taken again after its stream began: not replayed
    MAX_DELIVERIES = "max_deliveries"  # taken too many times: the pods that took it stopped
    DEADLINE = "deadline"  # its deadline passed before it could start

    @property
    def replies(self) -> bool:
        """Whether a client is still there to be told why."""
        return self in (Verdict.STREAMED, Verdict.MAX_DELIVERIES, Verdict.DEADLINE)


@dataclass(frozen=True)
class Taken:
    """One entry a worker took: from XREADGROUP (delivery 1) or XAUTOCLAIM (again)."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    reclaimed: bool = False


@dataclass(frozen=True)
class Checked:
    taken: Taken
    request: QueuedRequest | None  # None: malformed
    verdict: Verdict
    deliveries: int  # times taken, this time included
    reason: str = ""  # for the client, when it is told


async def check_batch(
    client: AnyRedis, namespace: str, target: str, batch: list[Taken], now_ms: float
) -> list[Checked]:
    """A verdict for each of `batch`, from one pipelined round trip."""
    parsed: list[QueuedRequest | None] = []
    for taken in batch:
        try:
            parsed.append(QueuedRequest.from_fields(taken.fields))
        except (KeyError, ValueError, UnicodeDecodeError):
            parsed.append(None)
    pipe = client.pipeline(transaction=False)
    gateways = sorted({r.gateway for r in parsed if r is not None})
    for gateway in gateways:
        pipe.get(live_key(gateway))
    cancelled = cancelled_key(namespace, target)
    streamed = streamed_key(namespace, target)
    asked: list[tuple[int, str]] = []  # (index in batch, what was asked)
    for i, (taken, request) in enumerate(zip(batch, parsed, strict=True)):
        if request is None:
            continue
        pipe.zscore(cancelled, request.request_id)
        asked.append((i, "cancelled"))
        if taken.reclaimed:
            pipe.sismember(streamed, request.request_id)
            asked.append((i, "streamed"))
            pipe.xpending_range(taken.stream, CONSUMER_GROUP, taken.entry_id, taken.entry_id, 1)
            asked.append((i, "pending"))
    answers: list[Any] = await pipe.execute() if gateways else []
    live = {g: answers[n] for n, g in enumerate(gateways)}
    seen: dict[int, dict[str, Any]] = {}
    for (i, what), answer in zip(asked, answers[len(gateways) :], strict=True):
        seen.setdefault(i, {})[what] = answer
    return [
        _verdict(taken, request, live, seen.get(i, {}), now_ms)
        for i, (taken, request) in enumerate(zip(batch, parsed, strict=True))
    ]


def _verdict(
    taken: Taken,
    request: QueuedRequest | None,
    live: dict[str, Any],
    seen: dict[str, Any],
    now_ms: float,
) -> Checked:
    deliveries = 1
    pending = seen.get("pending")
    if pending:
        deliveries = int(pending[0]["times_delivered"])
    if request is None:
        return Checked(taken, None, Verdict.MALFORMED, deliveries)
    holder = live.get(request.gateway)
    if holder is None or _text(holder) != request.incarnation:
        return Checked(taken, request, Verdict.GATEWAY_GONE, deliveries)
    if seen.get("cancelled") is not None:
        return Checked(taken, request, Verdict.CANCELLED, deliveries)
    if seen.get("streamed"):
        reason = (
            "the pod that was streaming this reply stopped; a stream is not replayed, "
            "send the request again"
        )
        return Checked(taken, request, Verdict.STREAMED, deliveries, reason)
    if deliveries > request.max_deliveries:
        reason = (
            f"taken {deliveries} times (at most {request.max_deliveries}): "
            "the pods that took it stopped before answering"
        )
        return Checked(taken, request, Verdict.MAX_DELIVERIES, deliveries, reason)
    if now_ms >= request.deadline_ms:
        late_ms = now_ms - request.deadline_ms
        reason = f"deadline passed {late_ms:.0f} ms before a pod could start the request"
        return Checked(taken, request, Verdict.DEADLINE, deliveries, reason)
    return Checked(taken, request, Verdict.RUN, deliveries)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
