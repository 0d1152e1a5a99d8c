"""The floor under any Python scaler's poll: a gRPC server that answers KEDA's three calls
with constants (no Redis, no decision, no metrics), on the same grpc.aio as `scaler serve`.

Polled by the same clients as the scaler, it says what a poll costs before the scaler
does any work of its own; the scaler's figures then read as ratios to it.
Run as `python -m tests.benchmarks.grpc_floor`: prints its port, serves until killed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc

SPEC = pb.GetMetricSpecResponse(
    metricSpecs=[pb.MetricSpec(metricName="concurrency", targetSize=8, targetSizeFloat=8.0)]
)
METRICS = pb.GetMetricsResponse(
    metricValues=[pb.MetricValue(metricName="concurrency", metricValue=4, metricValueFloat=4.0)]
)
ACTIVE = pb.IsActiveResponse(result=True)


class ConstantScaler(pb_grpc.ExternalScalerServicer):
    async def GetMetricSpec(self, request: Any, context: Any) -> pb.GetMetricSpecResponse:
        return SPEC

    async def GetMetrics(self, request: Any, context: Any) -> pb.GetMetricsResponse:
        return METRICS

    async def IsActive(self, request: Any, context: Any) -> pb.IsActiveResponse:
        return ACTIVE


async def _serve() -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(ConstantScaler(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


@contextmanager
def floor_process() -> Iterator[tuple[int, int]]:
    """Yields (port, pid) of a running floor server."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.grpc_floor"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline()), process.pid
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    asyncio.run(_serve())
