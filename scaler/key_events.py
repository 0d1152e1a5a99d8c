"""Key-change events from Redis keyspace notifications, for StreamIsActive to push at once.

One pub/sub connection per scaler process (per master, on a Redis Cluster)
serves every open stream: a stream watches the keys whose change could wake its
target (the queue, the pod reports) and is woken when one changes, instead of
polling. A reader task owns each connection; watchers only edit a channel set it
applies between reads, so no two tasks ever use a connection at once.

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
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from scaler.redis_connect import REDIS_ERRORS, RedisLink

log = logging.getLogger(__name__)

# K: keyspace channels; l/z/t/h: list, zset, stream, hash writes; g: DEL, EXPIRE, RENAME...
REQUIRED_FLAGS = "Klzthg"
_READ_TIMEOUT_S = 0.05  # also the longest a new watch waits before its SUBSCRIBE is sent
_MAX_BACKOFF_S = 5.0
# A Cluster's masters are re-read this often, and this often while one is unreachable
# (a failover in progress: its replica's promotion is seen within this time).
_TOPOLOGY_CHECK_S = 5.0
_TOPOLOGY_RETRY_S = 0.5


class KeyEvents:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._prefix = f"__keyspace@{link.db}__:"
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._wanted: Counter[str] = Counter()
        self._nodes: dict[tuple[str, int], _NodeSubscription] = {}

    @property
    def enabled(self) -> bool:
        """Notifications on, and a subscription up, on every master."""
        return bool(self._nodes) and all(node.enabled for node in self._nodes.values())

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
        """Keep the subscriptions up until `stopping`.

        One Redis, or Sentinel's master (redis-py asks the sentinels again at every
        reconnect): one subscription. A Cluster publishes a key's events on the master
        holding it only: one subscription per master, every channel on each, and the
        set of masters re-read from redis-py's slot map, often while one is failing."""
        if not isinstance(self._link.client, RedisCluster):
            node = self._nodes[("", 0)] = _NodeSubscription(self, self._link.client)
            await node.run(stopping)
            return
        tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        try:
            while not stopping.is_set():
                await self._follow_masters(tasks, stopping)
                pause = _TOPOLOGY_CHECK_S if self.enabled else _TOPOLOGY_RETRY_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), pause)
        finally:
            for address in list(tasks):
                await self._drop(address, tasks)

    async def _follow_masters(
        self, tasks: dict[tuple[str, int], asyncio.Task[None]], stopping: asyncio.Event
    ) -> None:
        try:
            masters = await self._link.primaries()
        except REDIS_ERRORS as exc:
            log.debug("cluster topology not read (%s); keeping the masters known", exc)
            return
        for address in set(tasks) - masters:
            await self._drop(address, tasks)
        for address in masters - set(tasks):
            node = self._nodes[address] = _NodeSubscription(self, self._link.node_client(*address))
            tasks[address] = asyncio.create_task(node.run(stopping))

    async def _drop(
        self, address: tuple[str, int], tasks: dict[tuple[str, int], asyncio.Task[None]]
    ) -> None:
        task = tasks.pop(address)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        node = self._nodes.pop(address)
        with contextlib.suppress(RedisError, OSError):
            await node.redis.aclose()

    def wake_all(self) -> None:
        for events in self._watchers.values():
            for event in events:
                event.set()

    def wake(self, channel: str) -> None:
        for event in self._watchers.get(channel, ()):
            event.set()

    def wanted(self) -> set[str]:
        return set(self._wanted)


class _NodeSubscription:
    """The subscription to one Redis node's notifications, for every channel watched."""

    def __init__(self, events: KeyEvents, redis: Redis) -> None:
        self._events = events
        self.redis = redis
        self._subscribed: set[str] = set()
        self.enabled = False  # notifications on, and the subscription connection up
        self._reconnected = False

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
                self._events.wake_all()  # whatever changed while we were deaf must be re-checked
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _enable_notifications(self) -> None:
        try:
            setting = await self.redis.config_get("notify-keyspace-events")
            current = setting.get("notify-keyspace-events") or ""
            have = set(current) | (set("g$lshzxet") if "A" in current else set())
            missing = "".join(sorted(set(REQUIRED_FLAGS) - have))
            if missing:
                await self.redis.config_set("notify-keyspace-events", current + missing)
                log.info(
                    "Redis notify-keyspace-events %r -> %r: queue and report changes wake "
                    "StreamIsActive",
                    current,
                    current + missing,
                )
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
        pubsub = self.redis.pubsub()
        try:
            await pubsub.ping()  # connects: a dead Redis fails here, not silently later
            # redis-py reconnects a pub/sub connection by itself and subscribes again, so a
            # restarted Redis could be heard from with its notifications off: take any
            # reconnect as the connection lost, so `run` enables them again first.
            self._reconnected = False
            assert pubsub.connection is not None
            pubsub.connection.register_connect_callback(self._on_reconnect)
            self.enabled = True
            self._events.wake_all()  # back after a gap: streams re-check now
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
                    self._events.wake(message["channel"])
        finally:
            self.enabled = False
            self._subscribed.clear()
            if pubsub.connection is not None:  # back to the pool: no callback of ours on it
                pubsub.connection.deregister_connect_callback(self._on_reconnect)
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # untyped in older redis-py

    def _on_reconnect(self, connection: object) -> None:
        self._reconnected = True

    async def _sync_subscriptions(self, pubsub: PubSub) -> None:
        wanted = self._events.wanted()
        new, gone = wanted - self._subscribed, self._subscribed - wanted
        if new:
            await pubsub.subscribe(*new)
            for channel in new:  # changes between watch() and SUBSCRIBE must not be missed
                self._events.wake(channel)
        if gone:
            await pubsub.unsubscribe(*gone)
        self._subscribed = wanted
