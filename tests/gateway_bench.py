"""Overhead of the gateway, measured: `python -m tests.gateway_bench` (a redis-server is
started). A stand-in worker answers each request the moment it takes it (XREADGROUP, then
XADD the reply + XACK + XDEL in one pipeline), so what is measured is the gateway, Redis and
the round trips between them. Closed loop: `--concurrency` clients, each sending its next
request when the last is answered; reports requests/s and latency percentiles. Compare with
`--direct`: the same client against an aiohttp server that answers at once (the engine called
directly)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from gateway.contract import (
    CONSUMER_GROUP,
    QueuedRequest,
    Reply,
    ReplyType,
    reply_stream,
    request_streams,
)
from scaler.local_redis import LocalRedis, free_port

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
ANSWER = b'{"outputs": [{"name": "y", "shape": [1], "datatype": "INT32", "data": [1]}]}'


async def echo_worker(url: str, stop: asyncio.Event) -> None:
    client = aioredis.Redis.from_url(url)
    streams = request_streams("inference", "llama")
    for stream in streams:
        with contextlib.suppress(Exception):
            await client.xgroup_create(stream, CONSUMER_GROUP, "0", mkstream=True)
    streaming: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        read = await client.xreadgroup(
            CONSUMER_GROUP, "bench", {s: ">" for s in streams}, count=256, block=100
        )
        if not read:
            continue
        pipe = client.pipeline(transaction=False)
        for stream, entries in read:
            ids = []
            for entry_id, fields in entries:
                request = QueuedRequest.from_fields(fields)
                if request.stream:  # answered by a task of its own, chunk by chunk
                    streaming.add(
                        asyncio.create_task(stream_reply(client, stream, entry_id, request))
                    )
                    streaming = {t for t in streaming if not t.done()}
                    continue
                reply = Reply(
                    request.request_id, ReplyType.FULL, 1, status=200,
                    content_type="application/json", data=ANSWER,
                )  # fmt: skip
                pipe.xadd(
                    reply_stream(request.gateway), reply.fields(), maxlen=100_000, approximate=True
                )  # type: ignore[arg-type]
                ids.append(entry_id)
            if ids:
                pipe.xack(stream, CONSUMER_GROUP, *ids)
                pipe.xdel(stream, *ids)
        await pipe.execute()
    await asyncio.gather(*streaming)
    await client.aclose()


CHUNKS = 20
CHUNK_GAP_S = 0.005


async def stream_reply(
    client: aioredis.Redis, stream: bytes, entry_id: bytes, request: QueuedRequest
) -> None:
    """head, CHUNKS chunks CHUNK_GAP_S apart, each carrying its send time, then end."""
    target = reply_stream(request.gateway)
    head = Reply(
        request.request_id, ReplyType.HEAD, 1, status=200, content_type="text/event-stream"
    )
    await client.xadd(target, head.fields())  # type: ignore[arg-type]
    for seq in range(CHUNKS):
        await asyncio.sleep(CHUNK_GAP_S)
        data = f"data: {time.time():.6f}\n\n".encode()
        chunk = Reply(request.request_id, ReplyType.CHUNK, 1, data=data, seq=seq)
        await client.xadd(target, chunk.fields())  # type: ignore[arg-type]
    await client.xadd(target, Reply(request.request_id, ReplyType.END, 1).fields())  # type: ignore[arg-type]
    await client.xack(stream, CONSUMER_GROUP, entry_id)
    await client.xdel(stream, entry_id)


async def stream_delays(url: str, concurrency: int, duration_s: float) -> list[float]:
    """Per chunk: its arrival at the client minus its send time at the worker."""
    delays: list[float] = []
    deadline = time.perf_counter() + duration_s
    async with aiohttp.ClientSession() as http:

        async def client() -> None:
            while time.perf_counter() < deadline:
                async with http.post(url, json={"text_input": "hi"}) as r:
                    assert r.status == 200, r.status
                    async for line in r.content:
                        if line.startswith(b"data: "):
                            delays.append(time.time() - float(line[6:]))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return delays


async def closed_loop(url: str, concurrency: int, duration_s: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.post(
                    url, data=BODY, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


async def open_loop(url: str, rate_per_s: float, duration_s: float) -> list[float]:
    """Requests sent at `rate_per_s` whatever the answers do (arrivals do not wait)."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> None:
            started = time.perf_counter()
            async with http.post(url, data=BODY, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append(time.perf_counter() - started)

        calls = []
        start = time.perf_counter()
        for i in range(int(rate_per_s * duration_s)):
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            calls.append(asyncio.create_task(one()))
        await asyncio.gather(*calls)
    return latencies


async def load(url: str, args: argparse.Namespace) -> list[float]:
    if args.rate:
        return await open_loop(url, args.rate, args.seconds)
    return await closed_loop(url, args.concurrency, args.seconds)


async def until_healthy(url: str, timeout_s: float = 30) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout_s):
        while True:
            try:
                async with http.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def direct_server(port: int) -> web.AppRunner:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def profiled(args: argparse.Namespace) -> list[str]:
    """The interpreter's arguments that run the gateway under cProfile, into `--profile`."""
    return ["-m", "cProfile", "-o", args.profile] if args.profile else []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, latencies: list[float], duration_s: float) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{name}: {len(latencies) / duration_s:.0f} req/s, p50 {q[49] * 1000:.2f} ms, "
        f"p99 {q[98] * 1000:.2f} ms ({len(latencies)} requests)"
    )


async def main(args: argparse.Namespace) -> None:
    if args.direct:
        port = free_port()
        runner = await direct_server(port)
        await closed_loop(f"http://127.0.0.1:{port}/v2/models/llama/infer", args.concurrency, 1)
        latencies = await load(f"http://127.0.0.1:{port}/v2/models/llama/infer", args)
        report("direct", latencies, args.seconds)
        await runner.cleanup()
        return
    server = LocalRedis()
    server.start()
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as targets:
        json.dump({"targets": [{"namespace": "inference", "name": "llama", "models": ["llama"],
                                "queueLimit": 100000}]}, targets)  # fmt: skip
    env = {**os.environ, "REDIS_URL": server.url, "GATEWAY_NAME": "bench", "LOG_LEVEL": "WARNING"}
    gateway = await asyncio.create_subprocess_exec(
        *[sys.executable, *profiled(args), "-m", "gateway", "--targets", targets.name,
          "--port", str(port), "--metrics-port", "0", "--bind-address", "127.0.0.1",
          "--shutdown-delay", "0"],
        env=env,
    )  # fmt: skip
    stop = asyncio.Event()
    worker = asyncio.create_task(echo_worker(server.url, stop))
    try:
        url = f"http://127.0.0.1:{port}/v2/models/llama/infer"
        await until_healthy(f"http://127.0.0.1:{port}/healthz")
        await closed_loop(url, args.concurrency, 1)  # warm up
        if args.stream:
            base = f"http://127.0.0.1:{port}/v2/models/llama/generate_stream"
            delays = await stream_delays(base, args.concurrency, args.seconds)
            q = statistics.quantiles(delays, n=100)
            print(
                f"streaming ({args.concurrency} streams at once, a chunk every "
                f"{CHUNK_GAP_S * 1000:g} ms): delay per chunk worker->client p50 "
                f"{q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms ({len(delays)} chunks)"
            )
            return
        cpu_before = cpu_seconds(gateway.pid)
        latencies = await load(url, args)
        cpu_s = cpu_seconds(gateway.pid) - cpu_before
        mode = f"{args.rate:g}/s open loop" if args.rate else f"concurrency {args.concurrency}"
        report(
            f"gateway ({mode})",
            latencies,
            args.seconds,
        )
        # On a shared machine the rate depends on who else runs; CPU per request does not.
        print(
            f"gateway process CPU: {cpu_s / len(latencies) * 1e6:.0f} us per request, "
            f"i.e. {len(latencies) / cpu_s:.0f} req/s per core it uses"
        )
    finally:
        stop.set()
        await worker
        gateway.send_signal(signal.SIGTERM)
        await asyncio.wait_for(gateway.wait(), 30)
        server.close()
        os.unlink(targets.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--direct", action="store_true")
    parser.add_argument("--stream", action="store_true", help="measure delay per chunk")
    parser.add_argument("--profile", default="", help="write the gateway's cProfile here")
    parser.add_argument("--rate", type=float, default=0, help="open loop at this rate (req/s)")
    asyncio.run(main(parser.parse_args()))
