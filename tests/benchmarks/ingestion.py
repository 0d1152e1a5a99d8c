"""Report ingestion: sidecars of 10,000 pods reporting once a second.

A writer process sends every pod's report through the contract's write script
once per second (pipelined, as 10,000 sidecars would together), each write
carrying what the pod completed since its previous one (added to its target's
service record, as a busy pod's write does), while a
KEDA-like poller polls the targets at a steady rate. Measured: Redis CPU
(INFO cpu, over the run), Redis memory (INFO memory), the writer keeping up,
and the poll latency while it all happens.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass

import grpc
import redis

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import LocalRedis
from scaler.report_writer import WRITE_REPORT_LUA, write_call
from scaler.reports import PodReport, report_keys
from scaler.service_record import Served
from tests.benchmarks.common import percentile, scaler_process

PODS = 10_000
TARGETS = 200
DURATION_S = 20.0
POLLS_PER_S = 100


@dataclass(frozen=True)
class IngestionFigures:
    reports_per_s: float
    redis_cpu_percent: float
    redis_memory_mib: float
    poll_p50_ms: float
    poll_p99_ms: float


def _writer(url: str, out: object) -> None:
    client = redis.Redis.from_url(url)
    write = client.register_script(WRITE_REPORT_LUA)
    written, start = 0, time.perf_counter()
    for second in range(int(DURATION_S)):
        pipe = client.pipeline(transaction=False)
        for pod in range(PODS):
            target = f"model-{pod % TARGETS}"
            keys = report_keys("bench", target)
            report = PodReport(
                pod=f"{target}-{pod}",
                inflight=pod % 7,
                waiting=pod % 3,
                capacity=8,
                ready=True,
                started_at=1.0,
                seq=second,
            )
            served = Served(1 + pod % 3, 6.5 * (1 + pod % 3))
            call_keys, args = write_call(keys, report, 600, "", served)
            write(keys=call_keys, args=args, client=pipe)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
        written += PODS
        pause = start + second + 1 - time.perf_counter()
        if pause > 0:
            time.sleep(pause)  # pace to once a second per pod, as sidecars do
    out.put(written / (time.perf_counter() - start))  # type: ignore[attr-defined]


def _poller(port: int) -> list[float]:
    async def run() -> list[float]:
        latencies: list[float] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            end = time.perf_counter() + DURATION_S
            i = 0
            while time.perf_counter() < end:
                so = pb.ScaledObjectRef(
                    name=f"model-{i % TARGETS}",
                    namespace="bench",
                    scalerMetadata={"targetConcurrency": "8"},
                )
                start = time.perf_counter()
                await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=so))
                await stub.IsActive(so)
                latencies.append(time.perf_counter() - start)
                i += 1
                await asyncio.sleep(max(0.0, 1 / POLLS_PER_S - (time.perf_counter() - start)))
        return latencies

    return asyncio.run(run())


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def run() -> IngestionFigures:
    server = LocalRedis()
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        with scaler_process(server.url) as port:
            ctx = multiprocessing.get_context("spawn")
            out = ctx.Queue()
            writer = ctx.Process(target=_writer, args=(server.url, out))
            cpu_before, began = _redis_cpu_s(client), time.perf_counter()
            writer.start()
            latencies = _poller(port)
            rate = out.get(timeout=120)
            writer.join()
            cpu = (_redis_cpu_s(client) - cpu_before) / (time.perf_counter() - began)
            memory = float(client.info("memory")["used_memory"]) / 2**20
        client.close()
    finally:
        server.close()
    return IngestionFigures(
        reports_per_s=rate,
        redis_cpu_percent=cpu * 100,
        redis_memory_mib=memory,
        poll_p50_ms=percentile(latencies, 50) * 1000,
        poll_p99_ms=percentile(latencies, 99) * 1000,
    )


if __name__ == "__main__":
    print(run())
