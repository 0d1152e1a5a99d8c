"""KEDA polling at fleet scale: every ScaledObject polled as KEDA does (spec, metrics, activity).

Pod reports are written for S ScaledObjects x P pods; client processes poll
them round robin over real gRPC against `python -m scaler serve` for a fixed
time, after polling every ScaledObject once (a running scaler meets a
ScaledObject for the first time only once). The scaler's and Redis's CPU over
the measured time, per poll, give capacity per core whatever else shares the
machine; the same clients against a server answering constants
(tests.benchmarks.grpc_floor) give the floor gRPC itself sets. The store is
also compared alone, in process, with the simplest correct alternative
(HGETALL of the reports + ZRANGE of their times + LLEN, decoded and judged in
Python), so its figures read as ratios.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

import grpc
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.cluster import RedisCluster

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import LocalRedis
from scaler.redis_connect import RedisLink
from scaler.report_writer import WRITE_REPORT_LUA
from scaler.reports import PodReport, report_keys
from scaler.store import TargetStore
from scaler.target_config import parse_target_config
from tests.benchmarks.common import cpu_seconds, percentile, rss_mib, scaler_process_with_pid
from tests.benchmarks.grpc_floor import floor_process
from tests.redis_deployments import ClusterDeployment

NAMESPACE = "bench"
DURATION_S = 5.0
CLIENT_PROCESSES = 2
HEADLINE = (1000, 64)
POD_SWEEP = [(100, 8), (100, 64), (100, 512)]
SO_SWEEP = [(10, 64), (100, 64), (1000, 64)]
CONCURRENCY = (2, 16)  # per client process


@dataclass(frozen=True)
class PollFigures:
    scaled_objects: int
    pods: int
    concurrency: int
    polls_per_s: float
    p50_ms: float
    p99_ms: float
    scaler_cpu_ms: float  # per poll
    redis_cpu_ms: float  # per poll
    scaler_rss_mib: float

    @property
    def polls_per_core_s(self) -> float:
        """Polls one core of the scaler serves a second (its CPU per poll, inverted)."""
        return 1000 / self.scaler_cpu_ms


def _fill(client: redis.Redis | RedisCluster, scaled_objects: int, pods: int) -> None:
    client.flushall()
    write = client.register_script(WRITE_REPORT_LUA)
    # A Cluster's pipelines refuse scripts: there, what the script writes, by hand.
    by_hand = isinstance(client, RedisCluster)
    seconds, micros = client.time()
    pipe = client.pipeline(transaction=False)
    for i in range(scaled_objects):
        keys = report_keys(NAMESPACE, f"model-{i}")
        for j in range(pods):
            report = PodReport(
                pod=f"model-{i}-{j}",
                inflight=3,
                waiting=1,
                capacity=8,
                ready=True,
                started_at=1.0,
                seq=1,
            )
            if by_hand:
                pipe.hset(keys.reports, report.pod, report.to_json())
                pipe.zadd(keys.seen, {report.pod: seconds + micros / 1e6})
            else:
                write(
                    keys=[keys.reports, keys.seen],
                    args=[report.pod, report.to_json(), 86400, ""],
                    client=pipe,
                )
        if len(pipe) >= 5000:
            pipe.execute()
        client.rpush(f"q:model-{i}", *range(i % 5 + 1))
    pipe.execute()


def _ref(i: int) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(
        name=f"model-{i}",
        namespace=NAMESPACE,
        # Reports are written once, before the run: fresh for the whole of it, as the
        # sidecars keep them by rewriting each second (else the read would drop them).
        scalerMetadata={
            "targetConcurrency": "8",
            "queueKey": f"q:model-{i}",
            "staleAfterSeconds": "3600",
        },
    )


def _client(
    port: int, scaled_objects: int, concurrency: int, offset: int, out: Any, start: Any
) -> None:
    async def run() -> tuple[int, list[float]]:
        latencies: list[float] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            refs = [_ref(i) for i in range(scaled_objects)]
            stride = concurrency * CLIENT_PROCESSES

            async def poll(so: pb.ScaledObjectRef) -> None:
                spec = await stub.GetMetricSpec(so)
                name = spec.metricSpecs[0].metricName
                await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=so, metricName=name))
                await stub.IsActive(so)

            async def warm(k: int) -> None:
                for i in range(offset + k, scaled_objects, stride):
                    await poll(refs[i])

            async def worker(k: int, end: float) -> None:
                i = offset + k
                while time.perf_counter() < end:
                    so = refs[i % scaled_objects]
                    i += stride
                    began = time.perf_counter()
                    await poll(so)
                    latencies.append(time.perf_counter() - began)

            await asyncio.gather(*(warm(k) for k in range(concurrency)))
            await asyncio.to_thread(start.wait)  # every client warm, CPU clocks read
            end = time.perf_counter() + DURATION_S
            await asyncio.gather(*(worker(k, end) for k in range(concurrency)))
        return len(latencies), latencies

    out.put(asyncio.run(run()))


def _poll(
    port: int, pids: tuple[int, list[int]], scaled_objects: int, pods: int, concurrency: int
) -> PollFigures:
    """`pids`: the server's and Redis's (every master's; none: no Redis, the floor)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(CLIENT_PROCESSES + 1)
    clients = [
        ctx.Process(
            target=_client,
            args=(port, scaled_objects, concurrency, n * concurrency, out, start),
        )
        for n in range(CLIENT_PROCESSES)
    ]
    for c in clients:
        c.start()
    server_pid, redis_pids = pids
    start.wait(timeout=300)
    server_cpu = cpu_seconds(server_pid)
    redis_cpu = sum(cpu_seconds(pid) for pid in redis_pids)
    results = [out.get(timeout=120) for _ in clients]
    server_cpu = cpu_seconds(server_pid) - server_cpu
    redis_cpu = sum(cpu_seconds(pid) for pid in redis_pids) - redis_cpu
    for c in clients:
        c.join()
    latencies = [x for _, lat in results for x in lat]
    polls = sum(n for n, _ in results)
    return PollFigures(
        scaled_objects=scaled_objects,
        pods=pods,
        concurrency=concurrency * CLIENT_PROCESSES,
        polls_per_s=polls / DURATION_S,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        scaler_cpu_ms=server_cpu * 1000 / polls,
        redis_cpu_ms=redis_cpu * 1000 / polls,
        scaler_rss_mib=rss_mib(server_pid),
    )


def run_polling() -> list[PollFigures]:
    server = LocalRedis()
    server.start()
    figures = []
    try:
        client = redis.Redis.from_url(server.url)
        with scaler_process_with_pid(server.url) as (port, pid):
            for scaled_objects, pods in [HEADLINE, *POD_SWEEP, *SO_SWEEP]:
                _fill(client, scaled_objects, pods)
                for concurrency in CONCURRENCY:
                    figures.append(
                        _poll(port, (pid, [server.pid or 0]), scaled_objects, pods, concurrency)
                    )
        client.close()
    finally:
        server.close()
    return figures


def run_polling_cluster() -> list[PollFigures]:
    """The headline fleet on a 3-master Redis Cluster (queues in other slots than their
    targets: each poll reads two nodes in parallel, mostly); Redis CPU is the masters'."""
    cluster = ClusterDeployment().start()
    figures = []
    try:
        client = cluster.client()
        _fill(client, *HEADLINE)
        client.close()
        with scaler_process_with_pid(cluster.url) as (port, pid):
            for concurrency in CONCURRENCY:
                figures.append(_poll(port, (pid, cluster.data_pids()), *HEADLINE, concurrency))
    finally:
        cluster.close()
    return figures


def run_floor() -> list[PollFigures]:
    """The same polls of the headline fleet against the constant server: gRPC's own cost."""
    with floor_process() as (port, pid):
        return [_poll(port, (pid, []), HEADLINE[0], 0, c) for c in CONCURRENCY]


@dataclass(frozen=True)
class StoreFigures:
    pods: int
    lua_ms: float
    naive_ms: float


async def _naive_read(client: AsyncRedis, target: str, stale_after_s: float) -> float:
    """The simplest correct read: everything back to Python, judged and summed there."""
    keys = report_keys(NAMESPACE, target)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.reports)
    pipe.zrange(keys.seen, 0, -1, withscores=True)
    pipe.llen(f"q:{target}")
    pipe.time()
    reports, seen, depth, (sec, usec) = await pipe.execute()
    now = sec + usec / 1e6
    fresh = {pod for pod, at in seen if at >= now - stale_after_s}
    demand = float(depth)
    for pod, payload in reports.items():
        if pod in fresh:
            report = PodReport.from_json(payload)
            demand += report.inflight + report.waiting
    return demand


def run_store_comparison(rounds: int = 300) -> list[StoreFigures]:
    server = LocalRedis()
    server.start()
    figures = []
    try:
        sync = redis.Redis.from_url(server.url)
        for pods in (8, 64, 512):
            _fill(sync, 1, pods)

            async def measure() -> tuple[float, float]:
                link = RedisLink(server.url, None, timeout_s=5)
                client = link.client
                assert isinstance(client, AsyncRedis)
                store = TargetStore(link, timeout_s=5)
                config = parse_target_config(
                    NAMESPACE, "model-0", {"targetConcurrency": "8", "queueKey": "q:model-0"}
                ).config
                lua = await _time(rounds, lambda: store.read(config))
                naive = await _time(rounds, lambda: _naive_read(client, "model-0", 10))
                lua_demand = (await store.read(config)).signals.demand
                assert lua_demand == await _naive_read(client, "model-0", 10)
                await link.aclose()
                return lua, naive

            lua, naive = asyncio.run(measure())
            figures.append(StoreFigures(pods, lua * 1000, naive * 1000))
        sync.close()
    finally:
        server.close()
    return figures


async def _time(rounds: int, call: object) -> float:
    for _ in range(20):
        await call()  # type: ignore[operator]
    start = time.perf_counter()
    for _ in range(rounds):
        await call()  # type: ignore[operator]
    return (time.perf_counter() - start) / rounds


if __name__ == "__main__":
    print(json.dumps([f.__dict__ for f in run_store_comparison()], indent=1))
