"""The sidecar's small HTTP client and Triton's HTTP readiness, over real loopback sockets.

A raw asyncio server answers exactly the bytes a test gives it, so the client is seen
against servers that close, keep the connection open, prefix paths or answer nonsense;
the readiness mapping runs against the Triton stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from scaler.demo.triton_standin import TritonStandIn
from sidecar.readiness import HttpReadinessProbe, Readiness, TritonUnavailable
from sidecar.scrape import HttpGetter, MetricsScraper, ScrapeError


@asynccontextmanager
async def raw_server(
    answer: bytes, close: bool = True, delay_s: float = 0.0
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """Serves `answer` to every request, `delay_s` after it; yields its base URL and the
    request lines seen."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        await asyncio.sleep(delay_s)
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(30)  # keeps it open, as a keep-alive proxy would

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


def test_body_ends_at_content_length_when_the_server_keeps_the_connection() -> None:
    async def scenario() -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
        async with raw_server(answer, close=False) as (base, _):
            assert await HttpGetter(base, timeout_s=2).get("/x") == (200, "hello")

    asyncio.run(scenario())


def test_a_base_path_prefixes_every_request() -> None:
    async def scenario() -> None:
        async with raw_server(b"HTTP/1.0 200 OK\r\n\r\n") as (base, seen):
            await HttpGetter(f"{base}/triton/", timeout_s=2).get("/v2/health/ready")
            assert seen == [b"GET /triton/v2/health/ready HTTP/1.0"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "answered 'SSH-2.0-OpenSSH_9.2'"),
        (b"HTTP/1.0 OK\r\n\r\n", "answered 'HTTP/1.0 OK'"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "sent more than"),
    ],
    ids=["not-http", "no-status-code", "too-large"],
)
def test_what_is_not_an_http_answer_is_an_error_naming_the_url(answer: bytes, message: str) -> None:
    async def scenario() -> None:
        async with raw_server(answer) as (base, _):
            with pytest.raises(ScrapeError, match=message) as err:
                await HttpGetter(base, timeout_s=2).get("/metrics")
            assert f"{base}/metrics" in str(err.value)

    asyncio.run(scenario())


def test_metrics_page_other_than_200_is_an_error() -> None:
    async def scenario() -> None:
        async with raw_server(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy") as (base, _):
            with pytest.raises(ScrapeError, match="answered HTTP 503"):
                await MetricsScraper(f"{base}/metrics", timeout_s=2).fetch()

    asyncio.run(scenario())


# Readiness as Triton's HTTP server answers it (the stand-in's).


@pytest.fixture
def triton() -> Iterator[TritonStandIn]:
    standin = TritonStandIn().start()
    yield standin
    standin.stop()


def check(triton: TritonStandIn, models: tuple[str, ...] = ("llm",)) -> Readiness:
    return asyncio.run(HttpReadinessProbe(triton.http_url, models, timeout_s=2).check())


def test_triton_200_and_400_are_ready_and_not_ready(triton: TritonStandIn) -> None:
    triton.set_ready(server=False)
    assert check(triton) == Readiness(server_ready=False, models_not_ready=("llm",))
    triton.set_ready(server=True, models=("other",))  # llm unknown to it: 400
    assert check(triton) == Readiness(server_ready=True, models_not_ready=("llm",))
    triton.set_ready(server=True, models=("llm",))
    assert check(triton).ready


@pytest.mark.parametrize("status", [404, 503, 426], ids=["wrong-port", "proxy", "upgrade"])
def test_an_answer_triton_never_gives_is_no_answer_not_a_starting_pod(
    triton: TritonStandIn, status: int
) -> None:
    # Read as "not ready" it would report a serving pod as starting, with no load:
    # missing data taken for zero demand.
    triton.set_ready(models=("llm",))
    triton.set_health_status(status)
    with pytest.raises(TritonUnavailable, match=f"answered HTTP {status}"):
        check(triton)


def test_the_whole_check_is_bounded_by_one_timeout() -> None:
    async def scenario() -> None:
        # Each answer within the per-call bound, but five of them are not within one.
        async with raw_server(b"HTTP/1.0 200 OK\r\n\r\n", delay_s=0.15) as (base, _):
            probe = HttpReadinessProbe(base, ("a", "b", "c", "d"), timeout_s=0.4)
            with pytest.raises(TritonUnavailable, match=r"no answer within 0\.4 s"):
                await probe.check()

    asyncio.run(scenario())
