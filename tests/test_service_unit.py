"""The service's own logic through a store held in memory, over real gRPC on loopback: no Redis.

What is checked here is the service's, not the store's: KEDA's GetMetrics and the IsActive
that follows it answer from one decision, and a replica's memory of the state it decided
refills a store that came back empty. The same cases run against Redis in
tests/test_keda_polling.py and tests/test_replica_failover.py; these run in well under a
second, so the rules of the pairing can be held case by case.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.policy import PolicyState
from scaler.service import POLL_PAIR_S, ExternalScalerService
from scaler.signals import Signals
from scaler.state_codec import merge_states
from scaler.store import Snapshot
from scaler.target_config import TargetConfig
from scaler.telemetry import ScalerMetrics
from tests.harness import FakeClock, ref

T0 = 1_000_000.0
IDLE = Signals(queue_depth=0, inflight=0, waiting=0, pods_reported=0, pods_ready=0,
               capacity_ready=0, capacity_starting=0)  # fmt: skip


def queued(depth: float) -> Signals:
    return Signals(
        queue_depth=depth,
        inflight=0,
        waiting=0,
        pods_reported=0,
        pods_ready=0,
        capacity_ready=0,
        capacity_starting=0,
    )


class MemoryStore:
    """One target's signals and saved state in memory; saves merge as Redis's script does
    (per-field maximum, `state_codec.merge_states`). `restart` empties it, as a Redis
    restarted without persistence is."""

    def __init__(self) -> None:
        self.signals = IDLE
        self.state = PolicyState()
        self.reads = 0

    async def read(
        self, config: TargetConfig, now: float | None = None, timeout_s: float | None = None
    ) -> Snapshot:
        assert now is not None  # the tests' clock always gives the time
        self.reads += 1
        return Snapshot(now=now, signals=self.signals, state=self.state)

    async def save_state(
        self, config: TargetConfig, state: PolicyState, now: float, timeout_s: float | None = None
    ) -> None:
        self.state = merge_states(self.state, state)

    def restart(self) -> None:
        self.state = PolicyState()


class NoKeyEvents:
    """Unary calls never watch keys; a stream here would only re-check on its interval."""

    @contextlib.asynccontextmanager
    async def watch(self, keys: Iterable[str]) -> AsyncIterator[asyncio.Event]:
        yield asyncio.Event()


Stub = pb_grpc.ExternalScalerStub
NewReplica = Callable[[], Awaitable[Stub]]
Scenario = Callable[[NewReplica, MemoryStore, FakeClock], Awaitable[None]]


def run(scenario: Scenario) -> None:
    """`await scenario(new_replica, store, clock)`, where `await new_replica()` starts one more
    scaler replica on the shared store and clock, and returns a stub of it; in under a second."""

    async def main() -> None:
        clock = FakeClock(T0)
        store = MemoryStore()
        servers: list[grpc.aio.Server] = []
        channels: list[grpc.aio.Channel] = []

        async def new_replica() -> Stub:
            service = ExternalScalerService(
                store,
                ScalerMetrics(CollectorRegistry()),
                asyncio.Event(),
                NoKeyEvents(),
                stream_interval_s=5.0,
                clock=clock,
                monotonic=clock,
            )
            server = grpc.aio.server()
            pb_grpc.add_ExternalScalerServicer_to_server(service, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
            return Stub(channels[-1])

        try:
            await scenario(new_replica, store, clock)
        finally:
            for channel in channels:
                await channel.close(None)
            for server in servers:
                await server.stop(None)

    started = time.perf_counter()
    asyncio.run(main())
    assert time.perf_counter() - started < 1.0


def metrics_of(so: pb.ScaledObjectRef) -> pb.GetMetricsRequest:
    return pb.GetMetricsRequest(scaledObjectRef=so)


async def metric(stub: Stub, so: pb.ScaledObjectRef) -> float:
    call: Any = stub.GetMetrics(metrics_of(so))  # grpc-stubs type the aio stub as blocking
    answer: pb.GetMetricsResponse = await call
    return float(answer.metricValues[0].metricValueFloat)


async def active(stub: Stub, so: pb.ScaledObjectRef) -> bool:
    call: Any = stub.IsActive(so)
    answer: pb.IsActiveResponse = await call
    return bool(answer.result)


def test_is_active_right_after_an_active_get_metrics_answers_from_its_decision_once() -> None:
    so = ref("llama", queueKey="q", scaleToZeroDelaySeconds="0")

    async def scenario(new_replica: NewReplica, store: MemoryStore, clock: FakeClock) -> None:
        stub = await new_replica()
        store.signals = queued(2)
        assert await metric(stub, so) == 2
        store.signals = IDLE  # demand gone between the two calls of one poll
        assert await active(stub, so) is True  # GetMetrics's decision: consistent with 2
        assert store.reads == 1  # answered without a second read
        assert await active(stub, so) is False  # once: the next IsActive reads again
        assert store.reads == 2

    run(scenario)


def test_an_idle_get_metrics_is_not_reused_so_a_request_queued_after_it_wakes_at_once() -> None:
    so = ref("llama", queueKey="q")

    async def scenario(new_replica: NewReplica, store: MemoryStore, clock: FakeClock) -> None:
        stub = await new_replica()
        assert await metric(stub, so) == 0
        store.signals = queued(1)
        assert await active(stub, so) is True
        assert store.reads == 2

    run(scenario)


def test_a_decision_older_than_a_poll_pair_is_not_handed_on() -> None:
    so = ref("llama", queueKey="q", scaleToZeroDelaySeconds="0")

    async def scenario(new_replica: NewReplica, store: MemoryStore, clock: FakeClock) -> None:
        stub = await new_replica()
        store.signals = queued(2)
        assert await metric(stub, so) == 2
        store.signals = IDLE
        clock.advance(POLL_PAIR_S)  # at the limit: still the same poll
        assert await active(stub, so) is True
        assert store.reads == 1
        store.signals = queued(2)
        assert await metric(stub, so) == 2
        store.signals = IDLE
        clock.advance(POLL_PAIR_S + 0.001)  # past it: not KEDA's IsActive of that poll
        assert await active(stub, so) is False
        assert store.reads == 3

    run(scenario)


def test_a_decision_is_handed_only_to_the_same_metadata() -> None:
    so = ref("llama", queueKey="q", scaleToZeroDelaySeconds="0")
    changed = ref("llama", queueKey="q", scaleToZeroDelaySeconds="0", activationThreshold="5")

    async def scenario(new_replica: NewReplica, store: MemoryStore, clock: FakeClock) -> None:
        stub = await new_replica()
        store.signals = queued(2)
        assert await metric(stub, so) == 2
        # The ScaledObject was edited between the calls: its IsActive decides afresh, on
        # its own threshold (2 requests do not pass activationThreshold 5).
        assert await active(stub, changed) is False
        assert store.reads == 2

    run(scenario)


def test_a_replica_refills_a_store_that_came_back_empty_from_what_it_decided() -> None:
    so = ref("llama", queueKey="q", scaleDownDelaySeconds="120", scaleToZeroDelaySeconds="300")

    async def scenario(new_replica: NewReplica, store: MemoryStore, clock: FakeClock) -> None:
        stub = await new_replica()
        store.signals = queued(20)
        assert await metric(stub, so) == 20
        store.restart()  # Redis restarted empty: the windows and active_until are gone
        store.signals = IDLE
        clock.advance(10)
        # This replica remembers: the scale-down delay still holds 20, the target stays awake.
        assert await metric(stub, so) == 20
        assert await active(stub, so) is True
        assert store.state.active_until > clock()  # and the store has it back
        # A replica with no memory reading a store emptied again sees only the silence now.
        store.restart()
        fresh = await new_replica()
        assert await metric(fresh, so) == 0
        assert await active(fresh, so) is False

    run(scenario)
