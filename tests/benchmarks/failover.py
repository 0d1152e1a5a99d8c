"""Failover recovery: how long KEDA's polls get errors when the master dies.

A Sentinel deployment and a Redis Cluster (tests.redis_deployments, failure detection
at 1 s: `down-after-milliseconds` and `cluster-node-timeout`), `python -m scaler serve`
polled every 50 ms as KEDA would; the master holding the target is killed (SIGKILL)
and the time to the first good answer is measured. After each trial the killed node
comes back as a replica before the next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.reports import report_keys
from tests.benchmarks.common import percentile, scaler_process
from tests.benchmarks.polling import PollFigures
from tests.redis_deployments import ClusterDeployment, SentinelDeployment

TRIALS = 3
LIMIT_S = 30.0


@dataclass(frozen=True)
class FailoverFigures:
    deployment: str
    trials: int
    p50_s: float
    max_s: float
    errors_max: int  # error answers in the worst trial
    lowered: int  # good answers below the value before the kill, over all trials (must be 0)


def _trial(stub: pb_grpc.ExternalScalerStub, so: pb.ScaledObjectRef) -> tuple[float, int, int]:
    errors = lowered = 0
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < LIMIT_S:
        try:
            request = pb.GetMetricsRequest(scaledObjectRef=so)
            value = stub.GetMetrics(request, timeout=3).metricValues[0].metricValueFloat
        except grpc.RpcError:
            errors += 1
            time.sleep(0.05)
            continue
        lowered += value < 10
        return time.monotonic() - killed_at, errors, lowered
    raise TimeoutError(f"no good answer within {LIMIT_S} s of the kill")


def _run(deployment: SentinelDeployment | ClusterDeployment) -> FailoverFigures:
    so = pb.ScaledObjectRef(
        name="llama",
        namespace="bench",
        # The metric is the demand (no cold start to plan for, no SLO-aware hold), so an
        # answer below the 10 queued before the kill is a lowered one.
        scalerMetadata={
            "targetConcurrency": "8",
            "queueKey": "q:llama",
            "coldStartSeconds": "0",
            "sloWaitSeconds": "off",
        },
    )
    times, errors, lowered = [], [], 0
    env = {}
    if deployment.sentinel_password is not None:
        env["REDIS_SENTINEL_PASSWORD"] = deployment.sentinel_password
    with (
        scaler_process(deployment.url, **env) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.ExternalScalerStub(channel)
        for _ in range(TRIALS):
            client = deployment.client()
            client.delete("q:llama")
            client.rpush("q:llama", *range(10))
            client.close()
            request = pb.GetMetricsRequest(scaledObjectRef=so)
            assert stub.GetMetrics(request, timeout=3).metricValues[0].metricValueFloat == 10
            deployment.kill(deployment.master_of(report_keys("bench", "llama").reports))
            took, failed, low = _trial(stub, so)
            times.append(took)
            errors.append(failed)
            lowered += low
            deployment.heal()
            if isinstance(deployment, SentinelDeployment):
                deployment.settle()
    return FailoverFigures(
        deployment.name, TRIALS, percentile(times, 50), max(times), max(errors), lowered
    )


def run() -> list[FailoverFigures]:
    figures = []
    for make in (SentinelDeployment, ClusterDeployment):
        deployment = make()
        try:
            figures.append(_run(deployment.start()))
        finally:
            deployment.close()
    return figures


if __name__ == "__main__":
    for f in run():
        print(f)


def section(
    single: list[PollFigures], cluster: list[PollFigures], failovers: list[FailoverFigures]
) -> list[str]:
    """BENCHMARKS.md's section on Redis deployments (docs/redis.md links it)."""
    by_concurrency = {f.concurrency: f for f in single}
    return [
        "## Redis deployments: Cluster polling and failover recovery",
        "",
        "The headline fleet (1,000 ScaledObjects x 64 pods, queues in other hash slots "
        "than their targets) polled as above on a 3-master, 3-replica Redis Cluster on the "
        "same 2 cores, beside the single redis-server of the same run. Redis CPU is the sum "
        "of the masters'.",
        "",
        "| Redis | polls in flight | polls/s | p50 ms | p99 ms | scaler CPU ms/poll "
        "| Redis CPU ms/poll | scaler CPU vs single |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {name} | {f.concurrency} | {f.polls_per_s:.0f} | {f.p50_ms:.2f} | "
            f"{f.p99_ms:.2f} | {f.scaler_cpu_ms:.2f} | {f.redis_cpu_ms:.2f} | "
            f"{f.scaler_cpu_ms / by_concurrency[f.concurrency].scaler_cpu_ms:.2f}x |"
            for name, figures in (("single", single), ("cluster", cluster))
            for f in figures
        ),
        "",
        f"Failover: the master holding the target killed (SIGKILL) under polling every "
        f"50 ms, {TRIALS} trials each, failure detection at 1 s (`down-after-milliseconds`, "
        "`cluster-node-timeout`); recovery is the time from the kill to the first good "
        "answer, by itself (redis-py asks the sentinels again, or re-reads the slot map).",
        "",
        "| Redis | recovery p50 s | recovery max s | error answers (worst trial) "
        "| good answers below the value before the kill |",
        "|---|---|---|---|---|",
        *(
            f"| {f.deployment} | {f.p50_s:.2f} | {f.max_s:.2f} | {f.errors_max} | {f.lowered} |"
            for f in failovers
        ),
        "",
        "Recovery is failure detection plus promotion: in production it scales with "
        "`down-after-milliseconds` (Sentinel) or `cluster-node-timeout` (Cluster), whose "
        "defaults are 30 s and 15 s; KEDA's `fallback` covers the errors meanwhile. "
        "Which to choose: docs/redis.md.",
        "",
    ]
