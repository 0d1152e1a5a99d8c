"""A scaler replica killed with SIGKILL under an open StreamIsActive: KEDA reconnects to another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import grpc
import redis

from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import LocalRedis, free_port
from tests.harness import ref


def _start_replica(redis_url: str) -> tuple[subprocess.Popen[bytes], int, int]:
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": str(metrics_port),
        "BIND_ADDRESS": "127.0.0.1",
        "STREAM_INTERVAL_SECONDS": "30",
    }
    process = subprocess.Popen([sys.executable, "-m", "scaler", "serve"], env=env)
    return process, grpc_port, metrics_port


def _streams_open(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith('llm_scaler_streams_open{method="StreamIsActive"}'):
            return float(line.split()[-1])
    return 0.0


def test_keda_reconnects_to_the_surviving_replica_and_gets_the_current_state(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    replicas = [_start_replica(redis_server.url) for _ in range(2)]
    # KEDA: one pooled connection per scaler address, round robin over its replicas.
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port, _ in replicas)
    options = [("grpc.lb_policy_name", "round_robin")]
    so = ref("llama", queueKey="q", scaleToZeroDelaySeconds="0")
    try:
        with grpc.insecure_channel(target, options=options) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            stream = stub.StreamIsActive(so, timeout=30, wait_for_ready=True)
            assert next(stream).result is False
            holder = next(p for p, _, m in replicas if _streams_open(m) == 1)

            redis_client.rpush("q", "request")
            assert next(stream).result is True
            holder.send_signal(signal.SIGKILL)
            holder.wait()

            try:
                next(stream)
                raise AssertionError("the stream outlived its replica")
            except grpc.RpcError as err:
                # UNAVAILABLE as a rule; a reset caught mid-write can surface as another
                # code. KEDA treats any stream error alike: it opens the stream again.
                assert err.code() is not grpc.StatusCode.OK
            # KEDA retries the stream (after a backoff); the other replica answers
            # with the current state at once, and then follows changes.
            stream = stub.StreamIsActive(so, timeout=30, wait_for_ready=True)
            assert next(stream).result is True
            redis_client.delete("q")
            assert next(stream).result is False
            stream.cancel()
    finally:
        for process, _, _ in replicas:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
