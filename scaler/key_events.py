"""Key-change events from Redis keyspace notifications, for StreamIsActive to push at once.

One pub/sub connection per scaler process serves every open stream: a stream
watches the keys whose change could wake its target (the queue, the pod
reports) and is woken when one changes, instead of polling. The reader task owns
the connection; watchers only edit a channel set it applies between reads, so
no two tasks ever use the connection at once.

Keyspace notifications must be on in Redis (`notify-keyspace-events` with K and
the l, z, t, h, g classes). The scaler turns them on at start and after every
reconnect when Redis allows CONFIG SET; where it does not (some managed Redis),
set it in the Redis configuration: until then streams fall back to re-checking
every STREAM_INTERVAL_SECONDS and `llm_scaler_key_events_enabled` reads 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# K: keyspace channels; l/z/t/h: list, zset, stream, hash writes; g: DEL, EXPIRE, RENAME...
REQUIRED_FLAGS = "Klzthg"
_READ_TIMEOUT_S = 0.05  # also the longest a new watch waits before its SUBSCRIBE is sent
_MAX_BACKOFF_S = 5.0


class KeyEvents:
    def __init__(self, redis: Redis, db: int) -> None:
        self._redis = redis
        self._prefix = f"__keyspace@{db}__:"
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._subscribed: set[str] = set()
        self._wanted: Counter[str] = Counter()
        self.enabled = False  # notifications on, and the subscription connection up
        self._reconnected = False

    @contextlib.asynccontextmanager
    async def watch(self, keys: Iterable[str]) -> AsyncIterator[asyncio.Event]:
        """An event set whenever one of `keys` changes (clear it before re-checking)."""
        changed = asyncio.Event()
        channels = [self._prefix + key for key in set(keys)]
        for channel in channels:
            self._watchers.setdefault(channel, set()).add(changed)
            self._wanted[channel] += 1
        try:
            yield changed
        finally:
            for channel in channels:
                self._watchers[channel].discard(changed)
                self._wanted[channel] -= 1
                if self._wanted[channel] <= 0:
                    del self._wanted[channel]
                    del self._watchers[channel]

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep the subscription up until `stopping`; reconnect with backoff after failures."""
        backoff = 0.1
        while not stopping.is_set():
            try:
                await self._enable_notifications()
                await self._serve(stopping)
                return
            except (RedisError, OSError) as exc:
                if self.enabled:
                    log.warning("key events lost (%s); streams re-check on a timer meanwhile", exc)
                self.enabled = False
                self._subscribed.clear()
                self._wake_all()  # whatever changed while we were deaf must be re-checked
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _enable_notifications(self) -> None:
        try:
            setting = await self._redis.config_get("notify-keyspace-events")
            current = setting.get("notify-keyspace-events") or ""
            have = set(current) | (set("g$lshzxet") if "A" in current else set())
            missing = "".join(sorted(set(REQUIRED_FLAGS) - have))
            if missing:
                await self._redis.config_set("notify-keyspace-events", current + missing)
        except RedisError as exc:
            if "CONFIG" not in str(exc).upper():
                raise
            log.warning(
                "cannot set notify-keyspace-events (%s): set it to include %r in the Redis "
                "configuration, or StreamIsActive only re-checks on its timer",
                exc,
                REQUIRED_FLAGS,
            )

    async def _serve(self, stopping: asyncio.Event) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.ping()  # connects: a dead Redis fails here, not silently later
            # redis-py reconnects a pub/sub connection by itself and subscribes again, so a
            # restarted Redis could be heard from with its notifications off: take any
            # reconnect as the connection lost, so `run` enables them again first.
            self._reconnected = False
            assert pubsub.connection is not None
            pubsub.connection.register_connect_callback(self._on_reconnect)
            self.enabled = True
            self._wake_all()  # back after a gap: streams re-check now
            while not stopping.is_set():
                if self._reconnected:
                    raise ConnectionError("the subscription connection was re-established")
                await self._sync_subscriptions(pubsub)
                if not self._subscribed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), _READ_TIMEOUT_S)
                    continue
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_READ_TIMEOUT_S
                )
                if message is not None:
                    for event in self._watchers.get(message["channel"], ()):
                        event.set()
        finally:
            self.enabled = False
            self._subscribed.clear()
            if pubsub.connection is not None:  # back to the pool: no callback of ours on it
                pubsub.connection.deregister_connect_callback(self._on_reconnect)
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py

    def _on_reconnect(self, connection: object) -> None:
        self._reconnected = True

    async def _sync_subscriptions(self, pubsub: PubSub) -> None:
        wanted = set(self._wanted)
        new, gone = wanted - self._subscribed, self._subscribed - wanted
        if new:
            await pubsub.subscribe(*new)
            for channel in new:  # changes between watch() and SUBSCRIBE must not be missed
                for event in self._watchers.get(channel, ()):
                    event.set()
        if gone:
            await pubsub.unsubscribe(*gone)
        self._subscribed = wanted

    def _wake_all(self) -> None:
        for events in self._watchers.values():
            for event in events:
                event.set()
