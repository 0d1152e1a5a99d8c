"""`make bench`: run every benchmark and write BENCHMARKS.md (figures, machine, command)."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from tests.benchmarks import (
    activation,
    failover,
    ingestion,
    install_size,
    polling,
    queueing,
    series_churn,
    sidecar_resources,
)
from tests.benchmarks.common import machine


def main() -> int:
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print("activation latency (StreamIsActive)...", flush=True)
    act = activation.run()
    print("store read vs the naive read...", flush=True)
    store = polling.run_store_comparison()
    print("KEDA polling at fleet scale...", flush=True)
    polls = polling.run_polling()
    floor = polling.run_floor()
    print("the same on a Redis Cluster, and failover recovery...", flush=True)
    cluster_polls = polling.run_polling_cluster()
    failovers = failover.run()
    print("report ingestion...", flush=True)
    ingest = ingestion.run()
    print("sidecar resources...", flush=True)
    sides = sidecar_resources.run_both()
    print("the queueing path (gateway, Redis, worker)...", flush=True)
    queue = queueing.run()
    print("ScaledObject churn...", flush=True)
    churn = series_churn.run_both()
    churn_in_process = series_churn.run_in_process()
    print("install size...", flush=True)
    installs = install_size.run_both()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {started}; machine: {machine()}.",
        "Real redis-server, `python -m scaler serve`, real gRPC over loopback.",
        "",
        "## StreamIsActive push latency",
        "",
        f"{activation.IDLE_STREAMS} other streams open on idle targets meanwhile. "
        "wake: first item RPUSHed into an idle queue -> `true` received "
        f"({activation.WAKE_TRIALS} trials); sleep: scale-to-zero delay "
        f"({activation.ZERO_DELAY_S} s) over -> `false` received "
        f"({activation.SLEEP_TRIALS} trials). Target: p99 under 100 ms.",
        "",
        "| change | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
        f"| wake (first request at zero) | {act['wake_p50_ms']:.2f} | {act['wake_p99_ms']:.2f} "
        f"| {act['wake_max_ms']:.2f} |",
        f"| sleep (delay over) | {act['sleep_p50_ms']:.2f} | {act['sleep_p99_ms']:.2f} "
        f"| {act['sleep_max_ms']:.2f} |",
        "",
        "## KEDA polling at fleet scale",
        "",
        f"Each poll is GetMetricSpec, GetMetrics, IsActive, as KEDA does, round robin over "
        f"the ScaledObjects (each polled once before the clock starts), closed loop for "
        f"{polling.DURATION_S:g} s from {polling.CLIENT_PROCESSES} Python client processes on "
        "the same 2 cores as the scaler and Redis. CPU is each process's own over the measured "
        "time, per poll; 'polls/s per scaler core' is its inverse, what one core of scaler "
        "serves whatever else shares the machine. Aim: 2,000 polls/s with p99 under 10 ms.",
        "",
        "| ScaledObjects | pods each | polls in flight | polls/s | p50 ms | p99 ms "
        "| scaler CPU ms/poll | Redis CPU ms/poll | polls/s per scaler core | scaler RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {f.scaled_objects} | {f.pods} | {f.concurrency} | {f.polls_per_s:.0f} | "
            f"{f.p50_ms:.2f} | {f.p99_ms:.2f} | {f.scaler_cpu_ms:.2f} | {f.redis_cpu_ms:.2f} | "
            f"{f.polls_per_core_s:.0f} | {f.scaler_rss_mib:.0f} |"
            for f in polls
        ),
        "",
        "The floor: the same clients polling the same 1,000 ScaledObjects of a gRPC server "
        "that answers the three calls with constants (`tests/benchmarks/grpc_floor.py`: "
        "grpc.aio as in the scaler, no Redis, no decision):",
        "",
        "| polls in flight | polls/s | p50 ms | p99 ms | server CPU ms/poll "
        "| polls/s per server core |",
        "|---|---|---|---|---|---|",
        *(
            f"| {f.concurrency} | {f.polls_per_s:.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} | "
            f"{f.scaler_cpu_ms:.2f} | {f.polls_per_core_s:.0f} |"
            for f in floor
        ),
        "",
        _floor_reading(polls[: len(floor)], floor),
        "",
        *failover.section(polls[: len(cluster_polls)], cluster_polls, failovers),
        "## Report ingestion",
        "",
        f"{ingestion.PODS:,} pods over {ingestion.TARGETS} targets each report once a second "
        f"(one writer process, pipelined) for {ingestion.DURATION_S:g} s, every write adding "
        "the pod's completions to its target's service record, while a poller sends "
        f"{ingestion.POLLS_PER_S} GetMetrics + IsActive pairs a second.",
        "",
        "| reports/s written | Redis CPU | Redis memory MiB | poll p50 ms | poll p99 ms |",
        "|---|---|---|---|---|",
        f"| {ingest.reports_per_s:,.0f} | {ingest.redis_cpu_percent:.0f}% of a core "
        f"| {ingest.redis_memory_mib:.1f} | {ingest.poll_p50_ms:.2f} | {ingest.poll_p99_ms:.2f} |",
        "",
        "## Sidecar resources",
        "",
        f"`python -m sidecar` at its defaults (1 s reports, Triton read every 0.5 s), "
        f"against the Triton stand-in in another process, load changing every 5 s; CPU "
        f"over {sidecar_resources.MEASURE_S:g} s after {sidecar_resources.WARM_UP_S:g} s "
        "of warm-up. Aim: under 50 MB RSS, well under 1% of a core.",
        "",
        "| readiness over | CPU (share of one core) | peak RSS MiB |",
        "|---|---|---|",
        *(
            f"| {side.readiness} | {side.cpu_percent:.2f}% | {side.peak_rss_mib:.1f} |"
            for side in sides
        ),
        "",
        "HTTP is the default (`TRITON_READINESS`); over gRPC, the sidecar imports grpc.",
        "",
        *queueing.section(queue),
        *series_churn.section(churn, churn_in_process),
        "",
        *install_size.section(installs),
        "",
        "## One target's read: the Lua read script vs the simplest correct read",
        "",
        "In process, one target, mean over 300 reads. Naive: HGETALL of the reports, ZRANGE "
        "of their times, LLEN and TIME in one pipeline, decoded, judged and summed in Python.",
        "",
        "| pods | Lua read ms | naive read ms | naive / Lua |",
        "|---|---|---|---|",
        *(
            f"| {f.pods} | {f.lua_ms:.3f} | {f.naive_ms:.3f} | {f.naive_ms / f.lua_ms:.1f}x |"
            for f in store
        ),
        "",
        "## What profiling changed, and what it bought",
        "",
        "py-spy on the scaler under the polling workload, and cProfile of the servicer "
        "in process (no gRPC):",
        "",
        "| change | measured with | before -> after |",
        "|---|---|---|",
        "| pod reports summed inside the read script (Lua twin of the contract) instead of "
        "decoded in Python; state writes skipped when they change nothing; hiredis parser "
        "| 100 ScaledObjects x 64 pods, 32 in flight | 255 -> 608 polls/s |",
        "| IsActive answered from the decision the poll's GetMetrics just made (one Redis "
        "read per poll instead of two); a target's metric series looked up once, not seven "
        "`labels()` calls per decision | 1,000 x 64, old and new scaler in turns, 3 rounds at "
        "4 and 32 in flight | scaler CPU 3.8 -> 2.9 ms/poll, Redis 1.4 -> 0.8 ms/poll "
        "(polls/s per scaler core ~280 -> ~345); in process, the scaler's own work "
        "1.6 -> 0.94 ms/poll |",
        "",
        "What remains is mostly gRPC's own per-call cost in Python (the floor above); the "
        "second change's figures swing by up to 1.7x between rounds on this shared "
        "machine, hence turns and means.",
        "",
    ]
    Path("BENCHMARKS.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _floor_reading(headline: list[polling.PollFigures], floor: list[polling.PollFigures]) -> str:
    ours = sum(f.scaler_cpu_ms for f in headline) / len(headline)
    grpc_only = sum(f.scaler_cpu_ms for f in floor) / len(floor)
    per_core = 1000 / ours
    return (
        f"At 1,000 ScaledObjects x 64 pods a poll costs the scaler {ours:.2f} ms of CPU, "
        f"{ours / grpc_only:.1f}x the {grpc_only:.2f} ms gRPC alone costs in Python here: "
        f"the scaler's own work (Redis read, decision, metrics) is "
        f"{(ours - grpc_only) / ours:.0%} of a poll. One core of scaler serves about "
        f"{per_core:.0f} polls/s, so 2,000 polls/s takes about {2000 / per_core:.0f} cores "
        f"of scaler replicas (every replica is stateless and they answer alike), and no Python "
        f"gRPC server reaches it on these 2 cores: the constant server itself tops out at "
        f"{max(f.polls_per_s for f in floor):.0f} polls/s. For scale: KEDA polls each "
        "ScaledObject every pollingInterval (30 s) and the HPA repeats the three calls every "
        "15 s, about 100 polls/s for 1,000 ScaledObjects."
    )


if __name__ == "__main__":
    sys.exit(main())
