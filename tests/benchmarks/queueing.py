"""The queueing path's figures for BENCHMARKS.md (issue 23's "Done when"): what the gateway,
Redis and the worker add in front of an engine that answers at once, and how soon a pod that
becomes ready takes queued work (tests.benchmarks.queueing_wake).

Real processes on loopback: redis-server, `python -m gateway`, `python -m sidecar` with
WORKER=on, the engine stand-in (tests.benchmarks.engine_standin); the clients run in this
process and share the machine's cores with all of them. "Direct" is the same client calling
the stand-in itself. Each process's CPU is read from /proc over the measured time, per request,
so the figures can be read as ratios whatever else shares the cores. Where a target is not
reached, the gateway and the worker are run again under cProfile and their top entries shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import pstats
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis

from scaler.local_redis import LocalRedis
from tests.benchmarks.common import cpu_seconds, percentile
from tests.benchmarks.queueing_load import Tally, closed_loop, open_loop, streams
from tests.benchmarks.queueing_procs import Gateway, Pod, StandIn
from tests.benchmarks.queueing_triton import POD_AFTER_S, PROBE_S, REQUESTS, from_zero_on_triton
from tests.benchmarks.queueing_triton import SLOTS as TRITON_SLOTS
from tests.benchmarks.queueing_wake import ZERO_REQUESTS, WakeRun, feed_at_once, from_zero

RATE_PER_S = 500
OPEN_ROUNDS = 5  # each path this many times, in turns
OPEN_ROUND_S = 2.0
ROUND_WARM_UP_S = 0.2  # each turn's own client opens its connections
WARM_UP_S = 1.0
CLOSED_CLIENTS = 64  # the headline: its CPU is measured, and profiled
CLOSED_SWEEP = (16, CLOSED_CLIENTS, 256)
CLOSED_S = 8.0
PROFILE_S = 5.0
# Below redis-py's default pool of 100 connections: past it, a reply the worker cannot write
# fails with "Too many connections" and waits for a reclaim (reported, not benchmarked).
SLOTS = 96
STREAMS = 8
STREAM_ROUNDS = 4
CHUNKS = 50
CHUNK_INTERVAL_MS = 20.0
PROFILE_TOP = 12

T = TypeVar("T")


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    count: int


@dataclass(frozen=True)
class Cpu:
    """CPU ms per request of each process over one measured run."""

    per_request_ms: dict[str, float]


@dataclass(frozen=True)
class Closed:
    clients: int
    per_s: float
    errors: dict[str, int]


@dataclass(frozen=True)
class Profile:
    """Self time (cProfile's tottime) as shares of the time the process was busy, that is
    not waiting in epoll; `waiting`: the share of all its profiled time spent waiting."""

    waiting: float
    top: list[ProfileEntry]
    kinds: list[ProfileEntry]


@dataclass(frozen=True)
class ProfileEntry:
    where: str
    share: float  # of the process's profiled time (self time, tottime)


@dataclass(frozen=True)
class QueueingFigures:
    direct: Latency
    gateway: Latency
    # What the open loop got instead of a correct answer, by path, then kind: counted, shown.
    open_errors: dict[str, dict[str, int]]
    open_cpu: Cpu
    closed: list[Closed]
    closed_cpu: Cpu
    # Per segment of each latency: (direct, through the gateway).
    open_split: dict[str, tuple[Latency, Latency]]
    # Redis commands per request (open loop, closed loop), Lua's own calls included.
    redis_calls: tuple[dict[str, float], dict[str, float]]
    stream_direct: Latency
    stream_gateway: Latency
    profiles: dict[str, Profile]  # by process
    zero: list[WakeRun]
    triton_zero: list[WakeRun]
    feed: list[WakeRun]
    load_average: tuple[float, float]  # 1-minute, at the start and at the end


def latency(values_s: list[float]) -> Latency:
    values_ms = [v * 1000 for v in values_s]
    return Latency(percentile(values_ms, 50), percentile(values_ms, 99), len(values_ms))


def measured(pids: dict[str, int], work: Coroutine[Any, Any, T]) -> tuple[T, dict[str, float]]:
    """Runs `work`; also the CPU seconds each process of `pids` used meanwhile."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = asyncio.run(work)
    return result, {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def run() -> QueueingFigures:
    """Each part on a redis-server of its own: nothing one leaves behind reaches the next."""
    load_before = os.getloadavg()[0]
    with fresh_redis() as redis:
        figures = _overhead(redis)
    with fresh_redis() as redis:
        profiles = _profiles(redis)
    with fresh_redis() as redis:
        zero = asyncio.run(from_zero(redis.url))
    with fresh_redis() as redis:
        triton_zero = asyncio.run(from_zero_on_triton(redis.url))
    with fresh_redis() as redis:
        feed = asyncio.run(feed_at_once(redis.url))
    load = (load_before, os.getloadavg()[0])
    return QueueingFigures(
        **figures,
        profiles=profiles,
        zero=zero,
        triton_zero=triton_zero,
        feed=feed,
        load_average=load,
    )


@contextmanager
def fresh_redis() -> Iterator[LocalRedis]:
    redis = LocalRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.close()


def _overhead(redis: LocalRedis) -> dict[str, Any]:
    standin = StandIn()
    gateway = Gateway(redis.url)
    pod = Pod(redis.url, "echo-0", standin, SLOTS)
    try:
        pod.wait_reported(True)
        assert redis.pid is not None
        pids = {
            "gateway": gateway.pid,
            "worker (sidecar)": pod.pid,
            "redis-server": redis.pid,
            "engine stand-in": standin.pid,
            "clients": os.getpid(),
        }
        asyncio.run(open_loop(standin.url, RATE_PER_S, 0, WARM_UP_S))
        asyncio.run(open_loop(gateway.url, RATE_PER_S, 0, WARM_UP_S))
        # In turns, so what else loads the machine meanwhile falls on both paths alike.
        direct, via = Tally(), Tally()
        direct_split: dict[str, list[float]] = {}
        via_split: dict[str, list[float]] = {}
        used = dict.fromkeys(pids, 0.0)
        calls: dict[str, int] = {}
        for turn in range(OPEN_ROUNDS):
            for url, tally, split in (
                (standin.url, direct, direct_split),
                (gateway.url, via, via_split),
            ):
                standin_state(standin, reset=True)
                first = (2 * turn + (url == gateway.url)) * 1_000_000
                before = commands(redis.url)
                got, cpu = measured(
                    pids, open_loop(url, RATE_PER_S, OPEN_ROUND_S, ROUND_WARM_UP_S, first)
                )
                _merge(tally, got)
                _split(got, standin_state(standin), split)
                if url == gateway.url:
                    used = {k: used[k] + v for k, v in cpu.items()}
                    after = commands(redis.url)
                    calls = {k: calls.get(k, 0) + n - before.get(k, 0) for k, n in after.items()}
        sent = RATE_PER_S * (OPEN_ROUND_S + ROUND_WARM_UP_S) * OPEN_ROUNDS
        open_calls = per_request({}, calls, sent)
        closed = []
        for clients in CLOSED_SWEEP:
            calls_before = commands(redis.url)
            result, used_by = measured(pids, closed_loop(gateway.url, clients, CLOSED_S, WARM_UP_S))
            closed.append(Closed(clients, result.per_s, result.errors))
            if clients == CLOSED_CLIENTS:
                answered = max(1, result.answered)
                closed_used = {k: v * 1000 / answered for k, v in used_by.items()}
                closed_calls = per_request(calls_before, commands(redis.url), answered)
        stream_direct = asyncio.run(
            streams(standin.url, STREAMS, STREAM_ROUNDS, CHUNKS, CHUNK_INTERVAL_MS)
        )
        stream_via = asyncio.run(
            streams(gateway.url, STREAMS, STREAM_ROUNDS, CHUNKS, CHUNK_INTERVAL_MS)
        )
    finally:
        pod.stop()
        gateway.stop()
        standin.stop()
    return {
        "direct": latency(direct.latencies_s),
        "gateway": latency(via.latencies_s),
        "open_errors": {"direct": direct.errors, "gateway": via.errors},
        "open_cpu": Cpu({k: v * 1000 / sent for k, v in used.items()}),
        "closed": closed,
        "closed_cpu": Cpu(closed_used),
        "redis_calls": (open_calls, closed_calls),
        "stream_direct": latency(stream_direct),
        "stream_gateway": latency(stream_via),
        "open_split": {
            name: (latency(direct_split[name]), latency(via_split[name])) for name in SEGMENTS
        },
    }


SEGMENTS = ("way in", "engine", "way back")


def standin_state(standin: StandIn, reset: bool = False) -> Any:
    url = f"{standin.url}/control" + ("?reset=1" if reset else "")
    request = urllib.request.Request(url, method="POST" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _merge(into: Tally, tally: Tally) -> None:
    into.latencies_s += tally.latencies_s
    into.records += tally.records
    for what, count in tally.errors.items():
        into.errors[what] = into.errors.get(what, 0) + count


def _split(tally: Tally, state: Any, into: dict[str, list[float]]) -> None:
    """Each latency in three: due -> the engine has it, the engine, answered -> the client."""
    for value, due, done in tally.records:
        seen = state["by_value"].get(str(value))
        if seen is not None:
            arrived, answered = seen
            for name, span in zip(
                SEGMENTS, (arrived - due, answered - arrived, done - answered), strict=True
            ):
                into.setdefault(name, []).append(span)


def commands(redis_url: str) -> dict[str, int]:
    """Redis's count of calls so far, by command (INFO commandstats)."""
    with Redis.from_url(redis_url) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def per_request(before: dict[str, int], after: dict[str, int], requests: float) -> dict[str, float]:
    """Calls per request of each command, the busiest first (those under 0.01 left out)."""
    calls = {name: (n - before.get(name, 0)) / requests for name, n in after.items()}
    return dict(sorted(((k, v) for k, v in calls.items() if v >= 0.01), key=lambda kv: -kv[1]))


def _profiles(redis: LocalRedis) -> dict[str, Profile]:
    """The closed loop again, gateway and worker under cProfile (written at their SIGTERM)."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as where:
        gateway_out, worker_out = Path(where) / "gateway.prof", Path(where) / "worker.prof"
        standin = StandIn()
        gateway = Gateway(redis.url, profile_to=gateway_out)
        pod = Pod(redis.url, "echo-profiled", standin, SLOTS, profile_to=worker_out)
        try:
            pod.wait_reported(True)
            asyncio.run(closed_loop(gateway.url, CLOSED_CLIENTS, PROFILE_S, 0.5))
        finally:
            pod.stop()
            gateway.stop()
            standin.stop()
        return {"gateway": _read_profile(gateway_out), "worker": _read_profile(worker_out)}


def _read_profile(path: Path) -> Profile:
    """The top functions by self time, and self time by kind (package, or built-in I/O)."""
    stats = pstats.Stats(str(path))
    rows: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in rows.values()) or 1.0
    waiting = sum(row[2] for key, row in rows.items() if _kind(key) == WAITING)
    busy = (total - waiting) or 1.0
    working = {key: row for key, row in rows.items() if _kind(key) != WAITING}
    top = sorted(working.items(), key=lambda item: item[1][2], reverse=True)[:PROFILE_TOP]
    kinds: dict[str, float] = {}
    for key, row in working.items():
        kinds[_kind(key)] = kinds.get(_kind(key), 0.0) + row[2]
    ranked = sorted(kinds.items(), key=lambda kv: kv[1], reverse=True)[:PROFILE_TOP]
    return Profile(
        waiting / total,
        [ProfileEntry(_where(key), row[2] / busy) for key, row in top],
        [ProfileEntry(kind, spent / busy) for kind, spent in ranked],
    )


def _where(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function.replace("|", "/")
    parts = Path(filename).parts
    short = "/".join(parts[-2:])
    return f"{function} ({short}:{line})"


WAITING = "waiting for events (epoll)"
_KINDS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    (WAITING, lambda f, fn: f == "~" and "poll" in fn and "epoll" in fn),
    (
        "socket calls (send/recv in the kernel)",
        lambda f, fn: f == "~" and any(w in fn for w in ("send", "recv", "socket", "sock_")),
    ),
    ("other built-ins (C)", lambda f, _: f == "~"),
)


def _kind(key: tuple[str, int, str]) -> str:
    filename, _, function = key
    for name, matches in _KINDS:
        if matches(filename, function):
            return name
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    for ours in ("gateway", "sidecar", "scaler"):
        if ours in parts:
            return f"{ours} (ours)"
    if "asyncio" in parts:
        return "asyncio"
    if filename.startswith("<frozen "):
        return "stdlib: " + filename.removeprefix("<frozen ").rstrip(">")  # imports at start
    return "stdlib: " + Path(filename).stem


def section(f: QueueingFigures) -> list[str]:
    """BENCHMARKS.md's section on the queueing path."""
    added_p50 = f.gateway.p50_ms - f.direct.p50_ms
    added_p99 = f.gateway.p99_ms - f.direct.p99_ms
    added_chunk_p99 = f.stream_gateway.p99_ms - f.stream_direct.p99_ms
    gateway_ms = f.closed_cpu.per_request_ms["gateway"]
    path_ms = sum(f.closed_cpu.per_request_ms.values())
    lines = [
        "## The queueing path: gateway, Redis and the worker",
        "",
        "Real processes on loopback: redis-server, `python -m gateway`, one pod's "
        f"`python -m sidecar` with WORKER=on ({SLOTS} slots), and an engine stand-in "
        "(`tests/benchmarks/engine_standin.py`: Triton's HTTP API on aiohttp, answering "
        "KServe v2 infer and generate_stream at once). Direct: the same client calling the "
        "stand-in itself. The clients (asyncio + aiohttp, in the benchmark's process) share "
        "the 2 cores with every other process, so CPU per request of each process is given "
        "too: read the figures as ratios. The machine's 1-minute load average was "
        f"{f.load_average[0]:.1f} when this section's runs began and {f.load_average[1]:.1f} "
        "when they ended.",
        "",
        f"Open loop at {RATE_PER_S} requests/s, KServe v2 infer, each latency from the moment "
        f"its request was due: {OPEN_ROUNDS} turns of {OPEN_ROUND_S:g} s on each path, "
        "direct and through the gateway in turns (so what else loads the machine falls on "
        f"both alike), each turn after {ROUND_WARM_UP_S:g} s of its own warm-up. "
        "Targets: added p50 <= 2 ms, added p99 <= 10 ms.",
        "",
        "| path | answered | errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        f"| direct | {f.direct.count} | {_errors(f.open_errors['direct'])} "
        f"| {f.direct.p50_ms:.2f} | {f.direct.p99_ms:.2f} |",
        f"| gateway, Redis, worker | {f.gateway.count} | {_errors(f.open_errors['gateway'])} "
        f"| {f.gateway.p50_ms:.2f} | {f.gateway.p99_ms:.2f} |",
        f"| **added** | | | **{added_p50:.2f}** | **{added_p99:.2f}** |",
        "",
        "Percentiles are of the requests answered correctly (after the warm-up); errors are "
        "counted over the whole run. Each latency split in three with the stand-in's own "
        "stamps: the way in (due -> the engine has it: client, gateway, Redis, the worker's "
        "take and checks, tritonclient), the engine, the way back (answered -> the client "
        "has it: the worker's reply, Redis, the gateway's reply reader):",
        "",
        "| segment | direct p50 ms | direct p99 ms | gateway p50 ms | gateway p99 ms |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {d.p50_ms:.2f} | {d.p99_ms:.2f} | {g.p50_ms:.2f} | {g.p99_ms:.2f} |"
            for name, (d, g) in f.open_split.items()
        ),
        "",
        f"Closed loop for {CLOSED_S:g} s after {WARM_UP_S:g} s of warm-up: one gateway "
        "process, one worker, on the same 2 cores as Redis, the stand-in and the clients. "
        "Target: 2,000 requests/s.",
        "",
        "| clients | requests/s | errors |",
        "|---|---|---|",
        *(f"| {c.clients} | {c.per_s:,.0f} | {_errors(c.errors)} |" for c in f.closed),
        "",
        f"At {CLOSED_CLIENTS} clients the gateway's own CPU is {gateway_ms:.3f} ms a request: "
        f"one core of gateway serves about {1000 / gateway_ms:,.0f} requests/s. The whole "
        f"path costs {path_ms:.2f} ms of CPU a request over all processes, the clients "
        f"included: these 2 cores top out near {2000 / path_ms:,.0f} requests/s whatever the "
        "gateway does.",
        "",
        "CPU ms per request, each process:",
        "",
        "| process | open loop, 500/s | closed loop |",
        "|---|---|---|",
        *(
            f"| {name} | {f.open_cpu.per_request_ms[name]:.3f} "
            f"| {f.closed_cpu.per_request_ms[name]:.3f} |"
            for name in f.open_cpu.per_request_ms
        ),
        "",
        *_calls_lines(f),
        f"Streaming: {STREAMS} concurrent generate_stream clients, {STREAM_ROUNDS} streams "
        f"each of {CHUNKS} chunks {CHUNK_INTERVAL_MS:g} ms apart; delay of each chunk from "
        "the stand-in's write to its arrival at the client (one clock). Target: added p99 "
        "<= 5 ms.",
        "",
        "| path | chunks | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| direct | {f.stream_direct.count} | {f.stream_direct.p50_ms:.2f} "
        f"| {f.stream_direct.p99_ms:.2f} |",
        f"| gateway, Redis, worker | {f.stream_gateway.count} | {f.stream_gateway.p50_ms:.2f} "
        f"| {f.stream_gateway.p99_ms:.2f} |",
        f"| **added** | | **{f.stream_gateway.p50_ms - f.stream_direct.p50_ms:.2f}** "
        f"| **{added_chunk_p99:.2f}** |",
        "",
        *_profile_lines(f),
        *_wake_lines(f),
    ]
    return lines


def _errors(errors: dict[str, int]) -> str:
    if not errors:
        return "0"
    return "; ".join(f"{count} x {what.replace('|', '/')[:90]}" for what, count in errors.items())


def _calls_lines(f: QueueingFigures) -> list[str]:
    open_calls, closed_calls = f.redis_calls
    names = list(dict.fromkeys([*open_calls, *closed_calls]))
    return [
        "Redis commands per request, from Redis's own counts (INFO commandstats; the calls "
        "the enqueue script makes inside Redis are counted too, and the sidecar's reports "
        "and the gateway's live key, a few a second, are in there):",
        "",
        f"| command | open loop, 500/s | closed loop, {CLOSED_CLIENTS} clients |",
        "|---|---|---|",
        *(
            f"| {name} | {open_calls.get(name, 0):.2f} | {closed_calls.get(name, 0):.2f} |"
            for name in names
        ),
        f"| **all** | **{sum(open_calls.values()):.2f}** | **{sum(closed_calls.values()):.2f}** |",
        "",
    ]


def _profile_lines(f: QueueingFigures) -> list[str]:
    lines = [
        f"Where the time goes: the closed loop again, {CLOSED_CLIENTS} clients for "
        f"{PROFILE_S:g} s, with the gateway and the worker under cProfile (which slows both: "
        "shares, not times, are the point; start-up is included). Self time as a share of "
        "the time each process was busy (not waiting in epoll), by kind, then the top "
        "functions:",
        "",
    ]
    for name, profile in f.profiles.items():
        top, kinds = profile.top, profile.kinds
        lines += [
            f"{name}: waiting in epoll {profile.waiting:.0%} of its profiled time.",
            "",
            f"| {name}: kind | share | {name}: function | share |",
            "|---|---|---|---|",
        ]
        for i in range(max(len(top), len(kinds))):
            kind = f"{kinds[i].where} | {kinds[i].share:.1%}" if i < len(kinds) else " | "
            fn = f"`{top[i].where}` | {top[i].share:.1%}" if i < len(top) else " | "
            lines.append(f"| {kind} | {fn} |")
        lines.append("")
    return lines


def _wake_lines(f: QueueingFigures) -> list[str]:
    def row(name: str, runs: list[WakeRun], which: str) -> str:
        values = [getattr(r, which) for r in runs]
        return (
            f"| {name} | {len(runs)} | {percentile(values, 50):.1f} | "
            f"{percentile(values, 99):.1f} | {max(values):.1f} |"
        )

    runs = f.zero + f.triton_zero + f.feed
    answered = sum(r.answered for r in runs)
    sent = sum(r.sent for r in runs)
    return [
        "### From zero and feed at once",
        "",
        f"- From zero, on a real Triton: {REQUESTS} requests reach the gateway while no pod "
        f"exists; {POD_AFTER_S:g} s later the pod starts: a real tritonserver (nvidia-pytriton, "
        "a Python-backend model on the CPU that stamps when each execution began) and its "
        f"`python -m sidecar` with WORKER=on ({TRITON_SLOTS} slots). Triton's readiness is "
        f"probed every {PROBE_S * 1000:g} ms from the benchmark, and 'ready' is when the last "
        "probe not answered 200 was sent: an upper bound on the figure.",
        f"- From zero, stand-in: the same with the engine stand-in, whose readiness the "
        f"benchmark turns on once the pod's sidecar runs ({ZERO_REQUESTS} requests, 8 slots); "
        "both ends stamped inside the stand-in on one clock: more runs, no start-up cost.",
        "- Feed at once: two pods (stand-ins) hold their 8 slots each (requests held by their "
        "engines) and 40 wait; a third pod's stand-in turns ready.",
        "",
        "Target: 100 ms, p99 over runs (with this few runs, p99 is the worst run).",
        "",
        "| ready -> | runs | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        row(
            "from zero, real Triton: the first request starts executing", f.triton_zero, "first_ms"
        ),
        row(
            f"from zero, real Triton: the {REQUESTS}th starts (one model instance)",
            f.triton_zero,
            "full_ms",
        ),
        row("from zero, stand-in: the first request reaches the engine", f.zero, "first_ms"),
        row(f"from zero, stand-in: all {ZERO_REQUESTS} reached it", f.zero, "full_ms"),
        row("feed at once: the third pod's first request", f.feed, "first_ms"),
        row("feed at once: the third pod holds its 8 slots", f.feed, "full_ms"),
        "",
        f"Every request answered with its own value: {answered} of {sent}.",
        "",
    ]


if __name__ == "__main__":
    began = time.monotonic()
    print("\n".join(section(run())))
    print(f"({time.monotonic() - began:.0f} s)")
