"""How fast StreamIsActive pushes a change (the figure KEDA's external-push trigger lives on).

- wake: from the first item landing in an idle queue (the producer's RPUSH
  returning) to the stream delivering `true` to the client;
- sleep: from the scale-to-zero delay running out (last demand + delay) to the
  stream delivering `false`.
Measured over real gRPC against `python -m scaler serve` and a real redis-server,
while other streams stay open on idle targets, as under a real KEDA.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import redis

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import LocalRedis
from tests.benchmarks.common import percentile, scaler_process

IDLE_STREAMS = 200
WAKE_TRIALS = 300
SLEEP_TRIALS = 30
ZERO_DELAY_S = 0.5


def _ref(name: str, **metadata: str) -> pb.ScaledObjectRef:
    # No SLO-aware hold: it keeps a target awake 15 cold starts by design, and what is
    # measured here is how fast a change is pushed once the decision has changed.
    return pb.ScaledObjectRef(
        name=name,
        namespace="bench",
        scalerMetadata={
            "targetConcurrency": "8",
            "queueKey": f"q:{name}",
            "sloWaitSeconds": "off",
            **metadata,
        },
    )


def _reader(stream: Iterator[pb.IsActiveResponse], out: queue.Queue[tuple[bool, float]]) -> None:
    try:
        for message in stream:
            out.put((message.result, time.perf_counter()))
    except grpc.RpcError:
        pass


def run() -> dict[str, float]:
    server = LocalRedis()
    server.start()
    try:
        with scaler_process(server.url) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ExternalScalerStub(ch)
            idle = [stub.StreamIsActive(_ref(f"idle-{i}")) for i in range(IDLE_STREAMS)]
            for stream in idle:
                next(stream)
            client = redis.Redis.from_url(server.url)
            wake = _measure_wake(stub, client)
            sleep = _measure_sleep(stub, client)
            for stream in idle:
                stream.cancel()
            client.close()
    finally:
        server.close()
    return {
        "wake_p50_ms": percentile(wake, 50) * 1000,
        "wake_p99_ms": percentile(wake, 99) * 1000,
        "wake_max_ms": max(wake) * 1000,
        "sleep_p50_ms": percentile(sleep, 50) * 1000,
        "sleep_p99_ms": percentile(sleep, 99) * 1000,
        "sleep_max_ms": max(sleep) * 1000,
    }


def _open(
    stub: pb_grpc.ExternalScalerStub, so: pb.ScaledObjectRef
) -> tuple[
    grpc.Future, queue.Queue[tuple[bool, float]]  # type: ignore[type-arg]
]:
    stream = stub.StreamIsActive(so)
    out: queue.Queue[tuple[bool, float]] = queue.Queue()
    threading.Thread(target=_reader, args=(stream, out), daemon=True).start()
    return stream, out


def _measure_wake(stub: pb_grpc.ExternalScalerStub, client: redis.Redis) -> list[float]:
    so = _ref("wake", scaleToZeroDelaySeconds="0")
    stream, out = _open(stub, so)
    assert out.get(timeout=10)[0] is False
    latencies = []
    for _ in range(WAKE_TRIALS):
        start = time.perf_counter()
        client.rpush("q:wake", "request")
        landed = time.perf_counter()
        active, at = out.get(timeout=10)
        assert active is True
        latencies.append(at - (start + landed) / 2)
        client.delete("q:wake")
        assert out.get(timeout=10)[0] is False
    stream.cancel()
    return latencies


def _measure_sleep(stub: pb_grpc.ExternalScalerStub, client: redis.Redis) -> list[float]:
    so = _ref("sleep", scaleToZeroDelaySeconds=str(ZERO_DELAY_S))
    stream, out = _open(stub, so)
    assert out.get(timeout=10)[0] is False
    latencies = []
    for _ in range(SLEEP_TRIALS):
        client.rpush("q:sleep", "request")
        active, seen_at = out.get(timeout=10)
        assert active is True
        # The read that pushed `true` is the last one to see demand: the queue is
        # emptied at once and nothing else reads this target. The delay runs from
        # that read, which happened just before `seen_at` (so this errs low by one
        # loopback hop, ~0.1 ms).
        client.delete("q:sleep")
        active, at = out.get(timeout=10)
        assert active is False
        latencies.append(max(0.0, at - (seen_at + ZERO_DELAY_S)))
    stream.cancel()
    return latencies
