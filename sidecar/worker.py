"""The in-pod worker: takes the target's queued requests into this pod's free slots and runs them.

Why inside `python -m sidecar` (WORKER=on) and not a container of its own: the reporter
then reads the worker's exact in-flight count from memory (no second channel that could
lag or fail), the worker starts taking work the moment the sidecar's readiness probe sees
the pod ready (the same probe, no second poller), and a user adds one container, not two.

What it owns:
- Taking. One consumer (the pod's name) in the group `workers` of every class's stream
  (gateway.contract), created at id 0 where missing. Work is taken only while the pod is
  ready and has free slots (its limit - requests held; the limit is the slots, or fewer under
  a token-latency objective: sidecar.worker_admit), highest class first: a non-blocking
  XREADGROUP per class with COUNT = the slots still free; with nothing there, a blocking
  read that cannot take more than the free slots (COUNT 1 on every class when free >= the
  number of classes; else on the top `free` classes with a short block, then a new sweep).
  A pod that becomes ready fills its slots, up to its limit, in its first sweep.
- Reclaiming (at least once). Every `claim_idle_s / 2`, XAUTOCLAIM takes entries idle for
  `claim_idle_s` (their pod died) into free slots only. The worker's own entries stay
  fresh: every `claim_idle_s / 3` it XCLAIMs them again with JUSTID, which resets their
  idle time without counting a delivery.
- Before running: sidecar.worker_checks (deadline, client gone, cancelled, streamed,
  delivery count), for a batch in one round trip; running: sidecar.worker_engine;
  answering and acknowledging: sidecar.worker_replies.
- Stopping (SIGTERM): no more taking at once (a blocking read already sent returns within
  its block time, and what it brings is run); what it holds gets `grace_s` to finish;
  what is left stays pending in Redis and another pod reclaims it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import ResponseError

from gateway.contract import CONSUMER_GROUP, Reply, ReplyType, request_streams, streamed_key
from scaler.clock import MONOTONIC, Clock
from scaler.redis_connect import REDIS_ERRORS, AnyRedis
from sidecar.telemetry import WorkerMetrics
from sidecar.worker_admit import ADMIT_REFRESH_S, Admission, admit_key
from sidecar.worker_checks import Checked, RedisOffsetClock, Taken, Verdict, check_batch
from sidecar.worker_engine import Chunk, Event, Failed, Full, Head
from sidecar.worker_replies import ReplyWriter, acknowledge, write_replies

log = logging.getLogger(__name__)

REDIS_RETRY_S = 0.5  # pause after a failed call to Redis
CLOCK_SYNC_S = 30.0  # how often the offset to Redis TIME is measured again


class Runner(Protocol):
    """What runs a request on the engine (sidecar.worker_engine.Engine)."""

    def run(self, request: Any) -> Any: ...  # an async iterator of Events

    async def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerSettings:
    namespace: str
    target: str
    consumer: str  # the pod's name
    slots: int
    claim_idle_s: float = 30.0
    grace_s: float = 25.0
    # Longest blocking read: bounds how late SIGTERM stops the taking; below the Redis timeout.
    block_s: float = 0.5
    # Blocking on some classes only (free < classes): the lower ones wait at most this.
    short_block_s: float = 0.05
    # How often the admit key (sidecar.worker_admit) is read again.
    admit_refresh_s: float = ADMIT_REFRESH_S


class Worker:
    def __init__(
        self,
        client: AnyRedis,
        settings: WorkerSettings,
        engine: Runner,
        metrics: WorkerMetrics,
        ready: asyncio.Event,
        clock: Clock = MONOTONIC,
    ) -> None:
        """`ready`: set while the pod's Triton is ready (the reporter's probe keeps it)."""
        self._client = client
        self._settings = settings
        self._engine = engine
        self._metrics = metrics
        self._ready = ready
        self._clock = clock
        self._redis_clock = RedisOffsetClock(clock)
        self._streams = request_streams(settings.namespace, settings.target)
        self._streamed = streamed_key(settings.namespace, settings.target)
        # (stream, entry id) -> its task, None while it is being checked. Keyed by both:
        # ids are unique within one stream only, and each class has its own.
        self._held: dict[tuple[str, str], asyncio.Task[None] | None] = {}
        self._admission = Admission(admit_key(settings.namespace, settings.target), settings.slots)
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._reclaimed_at = clock.now()
        self._synced_at = clock.now()
        metrics.slots.set(settings.slots)

    @property
    def inflight(self) -> int:
        """Requests taken and not yet answered: exact."""
        return len(self._held)

    @property
    def slots(self) -> int:
        """The engine's slots (WORKER_SLOTS): the capacity the pod reports."""
        return self._settings.slots

    @property
    def admit(self) -> int:
        """Requests run at most at once now: the slots, or fewer as the admit key says."""
        return self._admission.limit

    @property
    def free(self) -> int:
        return max(0, self._admission.limit - len(self._held))

    async def close(self) -> None:
        await self._engine.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Take and run requests until `stop`; then drain within the grace period."""
        taking = asyncio.create_task(self._take_loop())
        keeping = asyncio.create_task(self._keep_alive_loop())
        admitting = asyncio.create_task(self._admit_loop())
        try:
            await stop.wait()
            self._stopping.set()
            self._ready.set()  # wakes a loop waiting for readiness, which then sees stopping
            self._slot_freed.set()
            await taking
            await self._drain()
        finally:
            for task in (taking, keeping, admitting):
                task.cancel()
            for task in (taking, keeping, admitting):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _drain(self) -> None:
        tasks = [task for task in self._held.values() if task is not None]
        if tasks:
            log.info(
                "SIGTERM: finishing %d requests within %g s", len(tasks), self._settings.grace_s
            )
            _, left = await asyncio.wait(tasks, timeout=self._settings.grace_s)
            if left:
                log.warning(
                    "%d requests unfinished after the grace period: left pending for another pod",
                    len(left),
                )
                for task in left:
                    task.cancel()
                await asyncio.wait(left)

    # ---- taking ----

    async def _take_loop(self) -> None:
        prepared = False
        while not self._stopping.is_set():
            try:
                if not prepared:
                    await self._prepare()
                    prepared = True
                if not self._ready.is_set():
                    await self._ready.wait()
                    continue
                if self.free == 0:
                    self._slot_freed.clear()
                    if self.free == 0:
                        await self._slot_freed.wait()
                    continue
                await self._take_once()
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    prepared = False  # the stream or group was removed: create them again
                    continue
                await self._redis_failed(exc)
            except REDIS_ERRORS as exc:
                await self._redis_failed(exc)
            except Exception:  # a bug must not end the taking of a healthy pod
                log.exception("worker: taking failed; again in %g s", REDIS_RETRY_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), REDIS_RETRY_S)

    async def _prepare(self) -> None:
        for stream in self._streams:
            try:
                await self._client.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        await self._redis_clock.sync(self._client)
        self._synced_at = self._clock.now()
        # Before the first take: a pod that wakes to a backlog takes only what it may admit.
        await self._admission.refresh(self._client)

    async def _redis_failed(self, exc: BaseException) -> None:
        self._metrics.redis_errors.inc()
        log.warning("worker: redis call failed (%s); again in %g s", exc, REDIS_RETRY_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), REDIS_RETRY_S)

    async def _take_once(self) -> None:
        now = self._clock.now()
        if now - self._synced_at >= CLOCK_SYNC_S:
            await self._redis_clock.sync(self._client)
            self._synced_at = now
        if now - self._reclaimed_at >= self._settings.claim_idle_s / 2:
            self._reclaimed_at = now
            reclaimed = await self._reclaim(self.free)
            if reclaimed:
                await self._start(reclaimed)
                return
        taken = await self._sweep(self.free)
        if not taken:
            taken = await self._block(self.free)
        if taken:
            await self._start(taken)

    async def _sweep(self, free: int) -> list[Taken]:
        """Non-blocking, highest class first, never more than `free`."""
        taken: list[Taken] = []
        for stream in self._streams:
            if len(taken) >= free:
                break
            answer = await self._client.xreadgroup(
                CONSUMER_GROUP,
                self._settings.consumer,
                {stream: ">"},
                count=free - len(taken),
            )
            taken.extend(_entries(answer))
        return taken

    async def _block(self, free: int) -> list[Taken]:
        """Wait for the next request; COUNT 1 per stream read, at most `free` streams read."""
        if free >= len(self._streams):
            streams, block_s = self._streams, self._settings.block_s
        else:
            streams, block_s = self._streams[:free], self._settings.short_block_s
        answer = await self._client.xreadgroup(
            CONSUMER_GROUP,
            self._settings.consumer,
            dict.fromkeys(streams, ">"),
            count=1,
            block=max(1, int(block_s * 1000)),
        )
        return _entries(answer)

    async def _reclaim(self, free: int) -> list[Taken]:
        """Entries idle past claim_idle_s (their pod stopped), highest class first."""
        taken: list[Taken] = []
        idle_ms = int(self._settings.claim_idle_s * 1000)
        for stream in self._streams:
            if len(taken) >= free:
                break
            answer = await self._client.xautoclaim(
                stream,
                CONSUMER_GROUP,
                self._settings.consumer,
                idle_ms,
                start_id="0-0",
                count=free - len(taken),
            )
            for entry_id, fields in answer[1]:
                key = _text(entry_id)
                if fields is None or (stream, key) in self._held:
                    continue  # deleted meanwhile / still ours (never run twice here)
                taken.append(Taken(stream, key, fields, reclaimed=True))
        if taken:
            self._metrics.reclaimed.inc(len(taken))
            log.info("reclaimed %d requests left by a stopped pod", len(taken))
        return taken

    async def _start(self, batch: list[Taken]) -> None:
        self._metrics.taken.inc(len(batch))
        # Held from now: the slots are taken while they are checked.
        for t in batch:
            self._held[t.stream, t.entry_id] = None
        try:
            checked = await check_batch(
                self._client,
                self._settings.namespace,
                self._settings.target,
                batch,
                self._redis_clock.now_ms(),
            )
        except BaseException:
            for t in batch:
                self._held.pop((t.stream, t.entry_id), None)  # left pending: reclaimed later
            self._metrics.inflight.set(len(self._held))
            raise
        skipped = [c for c in checked if c.verdict is not Verdict.RUN]
        for item in checked:
            if item.verdict is Verdict.RUN:
                task = asyncio.create_task(self._serve(item))
                self._held[item.taken.stream, item.taken.entry_id] = task
        self._metrics.inflight.set(len(self._held))
        if skipped:
            await self._skip(skipped)

    async def _skip(self, skipped: list[Checked]) -> None:
        replies = []
        for item in skipped:
            self._metrics.skipped.labels(item.verdict.value).inc()
            request = item.request
            if request is not None and item.verdict.replies:
                status = 504 if item.verdict is Verdict.DEADLINE else 502
                reply = Reply(
                    request.request_id, ReplyType.ERROR, item.deliveries, status, reason=item.reason
                )
                replies.append((request.gateway, reply))
            log.info(
                "not run: %s (%s)%s",
                item.taken.entry_id,
                item.verdict.value,
                f": {item.reason}" if item.reason else "",
            )
        try:
            await write_replies(self._client, replies)
            await acknowledge(self._client, self._streamed, [_done(c) for c in skipped])
        finally:
            for item in skipped:
                self._held.pop((item.taken.stream, item.taken.entry_id), None)
            self._metrics.inflight.set(len(self._held))
            self._slot_freed.set()

    # ---- running ----

    async def _serve(self, item: Checked) -> None:
        request = item.request
        assert request is not None
        # Failed writes are retried until the request's deadline (sidecar.worker_replies).
        left_s = (request.deadline_ms - self._redis_clock.now_ms()) / 1000
        writer = ReplyWriter(
            self._client,
            request.request_id,
            request.gateway,
            item.deliveries,
            self._streamed,
            give_up_at=self._clock.now() + max(0.0, left_s),
            clock=self._clock,
        )
        outcome = "failed"
        try:
            outcome = await self._answer(request, writer)
            await writer.acknowledge([_done(item)])
            self._metrics.answered.labels(outcome).inc()
        except REDIS_ERRORS as exc:
            # No reply or no ack written: the entry stays pending and is taken again.
            self._metrics.redis_errors.inc()
            log.warning("could not answer %s (%s): left pending", item.taken.entry_id, exc)
        finally:
            self._held.pop((item.taken.stream, item.taken.entry_id), None)
            self._metrics.inflight.set(len(self._held))
            self._slot_freed.set()

    async def _answer(self, request: Any, writer: ReplyWriter) -> str:
        """Runs the request, writes every reply message; returns the outcome."""
        streaming = False
        status = 0
        try:
            event: Event
            async for event in self._engine.run(request):
                if isinstance(event, Full):
                    await writer.full(event.status, event.content_type, event.body)
                    return "ok" if event.status < 300 else "engine_error"
                if isinstance(event, Head):
                    writer.head(event.status, event.content_type)
                    streaming, status = True, event.status
                elif isinstance(event, Chunk):
                    await writer.chunk(event.data)
                elif isinstance(event, Failed):
                    await writer.error(event.status, event.reason)
                    return "failed"
        except REDIS_ERRORS:
            raise
        except Exception as exc:  # a bug here must still answer the client
            log.exception("request %s failed in the worker", request.request_id)
            await writer.error(500, f"the worker failed: {type(exc).__name__}: {exc}")
            return "failed"
        if streaming:
            await writer.end()
            return "ok" if status < 300 else "engine_error"
        await writer.error(502, "the engine gave no answer")
        return "failed"

    # ---- the admit limit ----

    async def _admit_loop(self) -> None:
        """Reads the admit key every admit_refresh_s; a higher limit wakes the taking."""
        while True:
            await asyncio.sleep(self._settings.admit_refresh_s)
            try:
                if await self._admission.refresh(self._client):
                    self._slot_freed.set()
            except REDIS_ERRORS as exc:
                self._metrics.redis_errors.inc()
                log.warning("could not read %s (%s): the limit stays", self._admission.key, exc)
            except Exception:  # a bug must not freeze the limit unseen
                log.exception("worker: reading %s failed", self._admission.key)
            _raise_if_cancelled()

    # ---- keeping held entries fresh ----

    async def _keep_alive_loop(self) -> None:
        period_s = self._settings.claim_idle_s / 3
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.keep_alive()
            except REDIS_ERRORS as exc:
                self._metrics.redis_errors.inc()
                log.warning("could not refresh held requests (%s)", exc)
            _raise_if_cancelled()

    async def keep_alive(self) -> None:
        """Resets the idle time of every entry held (JUSTID: no delivery counted)."""
        by_stream: dict[str, list[Any]] = {}
        for stream, entry_id in list(self._held):
            by_stream.setdefault(stream, []).append(entry_id)
        if not by_stream:
            return
        pipe = self._client.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xclaim(stream, CONSUMER_GROUP, self._settings.consumer, 0, ids, justid=True)
        await pipe.execute()


def _done(item: Checked) -> tuple[str, str, str]:
    """What acknowledging `item` removes: its entry, and its mark in the streamed set."""
    request_id = item.request.request_id if item.request is not None else ""
    return item.taken.stream, item.taken.entry_id, request_id


def _entries(answer: Any) -> list[Taken]:
    """XREADGROUP's answer as Taken entries."""
    if not answer:
        return []
    items = answer.items() if isinstance(answer, dict) else answer
    taken = []
    for stream, entries in items:
        name = _text(stream)
        for entry_id, fields in entries:
            if fields is not None:
                taken.append(Taken(name, _text(entry_id), fields))
    return taken


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raise_if_cancelled() -> None:
    """Raise CancelledError if this task is being cancelled: redis-py may swallow a
    cancellation that lands inside a call (returning its answer, or raising a connection
    error instead), and a background loop that carried on would make the worker's stop
    wait for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError
