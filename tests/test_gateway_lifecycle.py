"""The gateway's lifecycle: graceful shutdown (readiness first, in-flight requests finish,
the rest get 503, the live key goes), Redis unreachable (503 at once, never a hang), and
`python -m gateway` as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
import redis
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.contract import ReplyType, cancelled_key, live_key
from scaler.local_redis import LocalRedis, free_port
from tests.conftest import EVERY_DEPLOYMENT
from tests.gateway_harness import LLAMA, NAMESPACE, WorkerSide, eventually, gateway_config, sample
from tests.redis_deployments import Deployment
from tests.test_gateway import INFER_BODY, post

LABEL = "inference/llama"


def test_shutdown_fails_readiness_first_then_finishes_what_is_in_flight(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def main() -> None:
        gateway = Gateway(gateway_config(redis_server.url), CollectorRegistry())
        await gateway.start()
        worker = WorkerSide(redis_server.url)
        base = f"http://127.0.0.1:{gateway.port}"
        async with aiohttp.ClientSession(base) as http, asyncio.timeout(30):
            call = post(http, "/v2/models/llama/infer", INFER_BODY)
            request = await worker.take_one()
            stopping = asyncio.ensure_future(gateway.stop(delay_s=1.0, grace_s=10))
            await asyncio.sleep(0)  # the stop has begun: readiness fails at once
            ready = await http.get("/readyz")
            assert (ready.status, await ready.text()) == (503, "shutting down\n")
            # Still taking requests while the Service's endpoints catch up.
            late = post(http, "/v2/models/llama/infer", INFER_BODY)
            late_request = await worker.take_one()
            await eventually(_closing(gateway))
            # No new connections once closed.
            async with aiohttp.ClientSession(base) as fresh:
                with pytest.raises(aiohttp.ClientConnectionError):
                    await fresh.get("/healthz")
            assert not stopping.done()  # two requests in flight hold it
            await worker.full(request, b'{"n": 1}')
            await worker.full(late_request, b'{"n": 2}')
            assert [await (await c).json() for c in (call, late)] == [{"n": 1}, {"n": 2}]
            await stopping
            assert await worker.client.get(live_key("gw-test")) is None
        await worker.aclose()

    asyncio.run(main())


def test_requests_still_waiting_after_the_grace_period_get_503(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    async def main() -> None:
        gateway = Gateway(gateway_config(redis_server.url), CollectorRegistry())
        await gateway.start()
        worker = WorkerSide(redis_server.url)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as http:
            stream = post(http, "/v2/models/llama/generate_stream", {})
            streamed = await worker.take_one()
            await worker.reply(
                streamed, ReplyType.HEAD, status=200, content_type="text/event-stream"
            )
            call = post(http, "/v2/models/llama/infer", INFER_BODY)
            request = await worker.take_one()
            started = time.monotonic()
            await gateway.stop(delay_s=0, grace_s=0.2)
            assert time.monotonic() - started < 5
            response = await call
            assert response.status == 503
            assert "grace period is over" in (await response.json())["error"]
            body = await (await stream).read()
            assert body.startswith(b"event: error\n") and b"grace period is over" in body
            assert (
                sample(
                    gateway, "llm_gateway_requests_failed_total", target=LABEL, reason="shutdown"
                )
                == 2
            )
            key = cancelled_key(NAMESPACE, LLAMA.name)
            assert await worker.client.zscore(key, request.request_id) is not None
        await worker.aclose()

    asyncio.run(main())


def _closing(gateway: Gateway):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return gateway.closing

    return check


def test_redis_unreachable_answers_503_at_once(redis_client: redis.Redis) -> None:
    async def main() -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
        gateway = Gateway(gateway_config(url, redis_timeout_s=0.5), CollectorRegistry())
        await gateway.start()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as http:
            started = time.monotonic()
            response = await post(http, "/v1/completions", {"model": "llama"})
            assert time.monotonic() - started < 3
            assert response.status == 503
            assert (
                "could not be queued: Redis failed" in (await response.json())["error"]["message"]
            )
            assert (await http.get("/readyz")).status == 503
            assert (await http.get("/healthz")).status == 200
            assert (
                sample(gateway, "llm_gateway_requests_refused_total", target=LABEL, reason="redis")
                == 1
            )
            assert gateway.inflight == 0
        await gateway.stop(0, 0)

    asyncio.run(main())


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_python_m_gateway_serves_and_stops_on_sigterm(
    redis_server: LocalRedis, redis_client: redis.Redis, tmp_path: Path
) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text(
        json.dumps({"targets": [{"namespace": "inference", "name": "llama", "models": ["llama"]}]})
    )
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "GATEWAY_NAME": "gw-proc",
        "GATEWAY_TARGETS_FILE": str(targets),
    }
    argv = [
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--bind-address",
        "127.0.0.1",
        "--shutdown-delay",
        "0",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "python -m gateway did not answer /healthz"
            time.sleep(0.05)
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        status, metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert 'llm_gateway_requests_accepted_total{target="inference/llama"} 0.0' in metrics
        assert redis_client.get(live_key("gw-proc")) is not None
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
        assert process.returncode == 0, output
        assert redis_client.get(live_key("gw-proc")) is None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_python_m_gateway_refuses_a_bad_targets_file_naming_the_key(tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "namespace": "inference",
                        "name": "llama",
                        "models": ["llama"],
                        "queueLimit": 0,
                    }
                ]
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--targets", str(targets)],
        capture_output=True, text=True, timeout=30, env={**os.environ, "GATEWAY_NAME": "gw"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "targets[0].queueLimit = 0, must be an integer in [1; 1000000]" in result.stderr


def test_after_redis_restarts_empty_the_live_key_is_back_before_the_next_request(
    redis_client: redis.Redis,
) -> None:
    """A restarted (or failed-over) Redis may have lost the live key: a worker would take the
    gateway for gone and skip its requests. The first request after a failed call refreshes
    the key before it is queued, not up to a refresh period later."""
    server = LocalRedis()
    server.start()

    async def main() -> None:
        gateway = Gateway(gateway_config(server.url, redis_timeout_s=0.5), CollectorRegistry())
        await gateway.start()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as http:
            server.kill()
            response = await post(http, "/v1/completions", {"model": "llama"})
            assert response.status == 503
            server.start()  # empty: no live key
            worker = WorkerSide(server.url)
            call = post(http, "/v2/models/llama/infer", INFER_BODY)
            request = await worker.take_one()
            assert await worker.client.get(live_key("gw-test")) == gateway.incarnation.encode()
            await worker.full(request, b"{}")
            assert (await call).status == 200
            await worker.aclose()
        await gateway.stop(0, 0)

    try:
        asyncio.run(main())
    finally:
        server.close()


@pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)
def test_round_trip_on_every_redis_deployment(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    """REDIS_URL as the scaler and the sidecar take it: one Redis, Sentinel or Cluster."""

    async def main() -> None:
        config = gateway_config(
            deployment.url,
            redis_sentinel_password=deployment.sentinel_password,
            redis_timeout_s=2.0,
        )
        gateway = Gateway(config, CollectorRegistry())
        await gateway.start()
        worker = WorkerSide(deployment.url, sentinel_password=deployment.sentinel_password)
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{gateway.port}") as http,
            asyncio.timeout(30),
        ):
            assert (await http.get("/readyz")).status == 200
            stream = post(http, "/v2/models/llama/generate_stream", {}, **{"X-Priority": "high"})
            request = await worker.take_one("high")
            await worker.reply(
                request, ReplyType.HEAD, status=200, content_type="text/event-stream"
            )
            await worker.reply(request, ReplyType.CHUNK, data=b"data: 1\n\n", seq=0)
            await worker.reply(request, ReplyType.END)
            assert await (await stream).read() == b"data: 1\n\n"
            gone = post(http, "/v1/completions", {"model": "llama"}, **{"X-Request-Timeout": "0.2"})
            answer = await gone
            assert answer.status == 504
            rid = answer.headers["X-Request-Id"]
            key = cancelled_key(NAMESPACE, LLAMA.name)
            assert await eventually(lambda: worker.client.zscore(key, rid))
        await worker.aclose()
        await gateway.stop(0, 0)
        assert redis_client.get(live_key("gw-test")) is None

    asyncio.run(main())
