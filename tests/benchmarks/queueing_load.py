"""The clients of the queueing benchmarks, in the benchmark's own process (asyncio + aiohttp):
an open loop at a fixed rate, a closed loop, streams timed chunk by chunk, and a batch of
requests sent at once. Every answer is checked: the stand-in echoes each request's input."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp

from tests.benchmarks.queueing_procs import MODEL

INFER_PATH = f"/v2/models/{MODEL}/infer"
STREAM_PATH = f"/v2/models/{MODEL}/generate_stream"


def infer_body(value: int) -> bytes:
    tensor = {"name": "INPUT0", "shape": [1], "datatype": "INT64", "data": [value]}
    return json.dumps({"inputs": [tensor], "outputs": [{"name": "OUTPUT0"}]}).encode()


def session() -> aiohttp.ClientSession:
    """No cap on connections: a closed loop of N clients keeps N requests in flight."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=120),
    )


@dataclass
class Tally:
    """Latencies (s) of the requests answered correctly, and what went wrong otherwise."""

    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    # Of the counted requests: (value, due, answered), unix seconds.
    records: list[tuple[int, float, float]] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def infer(client: aiohttp.ClientSession, base_url: str, value: int, tally: Tally) -> bool:
    """One KServe v2 infer; True when answered with the request's own value."""
    try:
        async with client.post(
            base_url + INFER_PATH,
            data=infer_body(value),
            headers={"Content-Type": "application/json"},
        ) as answer:
            body = await answer.read()
            if answer.status != 200:
                tally.error(f"status {answer.status}: {body[:120]!r}")
                return False
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.error(type(exc).__name__)
        return False
    if json.loads(body)["outputs"][0]["data"] != [value]:
        tally.error("wrong answer")
        return False
    return True


async def open_loop(
    base_url: str, rate_per_s: float, duration_s: float, warm_up_s: float, first: int = 0
) -> Tally:
    """Requests sent at `rate_per_s` whatever the answers (open loop); each latency is taken
    from the moment it was due, so a late sender counts against the figure, not for it.
    Values from `first` on: each request's own."""
    tally = Tally()
    loop = asyncio.get_running_loop()
    wall_offset = time.time() - loop.time()
    async with session() as client:

        async def one(value: int, due: float, counted: bool) -> None:
            if await infer(client, base_url, value, tally) and counted:
                done = loop.time()
                tally.latencies_s.append(done - due)
                tally.records.append((value, due + wall_offset, done + wall_offset))

        tasks: list[asyncio.Task[None]] = []
        total = int(rate_per_s * (warm_up_s + duration_s))
        warm = int(rate_per_s * warm_up_s)
        start = loop.time() + 0.05
        for i in range(total):
            due = start + i / rate_per_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(first + i, due, i >= warm)))
        await asyncio.gather(*tasks)
    return tally


@dataclass(frozen=True)
class ClosedRun:
    per_s: float  # answered correctly, over the measured time
    answered: int  # answered correctly, warm-up included
    errors: dict[str, int]  # by kind, warm-up included


async def closed_loop(
    base_url: str, clients: int, duration_s: float, warm_up_s: float
) -> ClosedRun:
    """`clients` each sending the next request when the last is answered, for `warm_up_s`
    then `duration_s` (measured)."""
    tally = Tally()
    loop = asyncio.get_running_loop()
    counted = answered = 0
    async with session() as client:
        measure_from = loop.time() + warm_up_s
        until = measure_from + duration_s

        async def one_client(index: int) -> None:
            nonlocal counted, answered
            value = index * 1_000_000
            while loop.time() < until:
                value += 1
                if await infer(client, base_url, value, tally):
                    answered += 1
                    if measure_from <= loop.time() <= until:
                        counted += 1

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return ClosedRun(counted / duration_s, answered, tally.errors)


async def streams(
    base_url: str, concurrent: int, rounds: int, chunks: int, interval_ms: float
) -> list[float]:
    """`concurrent` clients each reading `rounds` generate_stream answers in turn; the delay
    (s) of every chunk from the stand-in's write (`sent_at`) to its arrival here."""
    delays: list[float] = []
    async with session() as client:

        async def one_client() -> None:
            body = {"text_input": "hi", "chunks": chunks, "interval_ms": interval_ms}
            for _ in range(rounds):
                seen = 0
                async with client.post(base_url + STREAM_PATH, json=body) as answer:
                    if answer.status != 200:
                        raise RuntimeError(f"stream: status {answer.status}")
                    async for line in answer.content:
                        arrived = time.time()
                        if line.startswith(b"data: "):
                            event = json.loads(line[6:])
                            delays.append(arrived - event["sent_at"])
                            seen += 1
                if seen != chunks:
                    raise RuntimeError(f"stream: {seen} chunks of {chunks}")

        await asyncio.gather(*(one_client() for _ in range(concurrent)))
    return delays


def batch(
    client: aiohttp.ClientSession, base_url: str, first: int, count: int, tally: Tally
) -> list[asyncio.Task[bool]]:
    """`count` requests sent at once (values first, first + 1, ...): their tasks."""
    return [asyncio.create_task(infer(client, base_url, first + i, tally)) for i in range(count)]
