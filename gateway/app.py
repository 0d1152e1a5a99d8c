"""The gateway: takes a client's request, queues it for its target's pods, relays the reply.

Owns the request path and the process's lifecycle on the event loop:

- routes, as Triton serves them: KServe v2 `POST /v2/models/{m}[/versions/{v}]/infer`,
  `POST /v2/models/{m}/generate` and `generate_stream` (SSE), OpenAI-compatible
  `POST /v1/completions` and `/v1/chat/completions` (model from the body; SSE when
  `"stream": true`); `/healthz`, `/readyz`. Anything else is aiohttp's 404 (or 405);
- per request: checks (gateway.inbound: nothing that cannot be served is queued), the target
  (gateway.targets), one EVALSHA of contract.ENQUEUE_LUA (queue limit, group creation and
  Redis-clock deadline in one round trip), then the reply, relayed from the process's one
  reply reader (gateway.replies): `full` as is, or head + chunks as they come + end;
- the books: every accepted request ends answered (a pod's reply) or failed with a named
  reason (deadline 504, client gone, a pod's error, shutdown 503); the client gone or the
  deadline passed also leaves a cancelled mark (gateway.marks) so no pod starts it later;
- liveness: the live key holds this start's incarnation, refreshed every LIVE_REFRESH_S;
  a worker starts a request only while it does;
- shutdown (`stop`): readiness fails, requests are still taken for `shutdown_delay_s`, then
  none; those in flight get `shutdown_grace_s`, then 503; then the live key goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.answers import Api, Refusal, error_response, refusal_response, sse_error
from gateway.config import GatewayConfig
from gateway.contract import (
    ENQUEUE_LUA,
    LIVE_REFRESH_S,
    LIVE_TTL_MS,
    PRIORITIES,
    Kind,
    QueuedRequest,
    Reply,
    ReplyType,
    cancelled_key,
    live_key,
    reply_stream,
    request_stream,
    request_streams,
)
from gateway.drain import DrainRate, retry_after_s
from gateway.inbound import (
    check_head,
    forwarded_headers,
    openai_fields,
    parse_json,
    priority_of,
    timeout_of,
    too_large,
)
from gateway.marks import CancelMarks
from gateway.replies import ReplyReader, Waiter
from gateway.targets import Router, Target
from gateway.telemetry import NO_TARGET, GatewayMetrics, status_class
from scaler.metrics_http import MetricsEndpoint
from scaler.redis_connect import REDIS_ERRORS, connect

log = logging.getLogger("gateway")

# Readiness fails when Redis last answered longer ago than this: by then the live key
# (LIVE_TTL_MS) has lapsed too, and workers would skip what this gateway queues.
READY_STALE_S = LIVE_TTL_MS / 1000
# The attempt of the reply the gateway hands its own waiters at shutdown (pods count from 1).
SHUTDOWN_ATTEMPT = 0
# After the grace period, handlers get this long to write their 503 before being cancelled.
LAST_WORDS_S = 5.0


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        registry: CollectorRegistry,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.router = Router(config.targets)
        self.metrics = GatewayMetrics(registry, [t.label for t in config.targets])
        self._registry = registry
        self._wall = wall
        self.link = connect(config, decode_responses=False)  # bodies and chunks are bytes
        self.client = self.link.client
        self.incarnation = uuid.uuid4().hex
        self._id_prefix = self.incarnation[:12] + "-"
        self._ids = itertools.count()
        self.reply_stream = reply_stream(config.name)
        self.live_key = live_key(config.name)
        # Under the socket timeout, so a quiet reply stream is not an error.
        block_ms = max(10, int(config.redis_timeout_s * 500))
        self.reader = ReplyReader(
            self.client, self.reply_stream, block_ms, self._redis_answered, self._redis_failed,
            self.metrics.replies_ignored.inc,
        )  # fmt: skip
        self.marks = CancelMarks(self.client, lambda: int(self._wall() * 1000))
        self._enqueue = self.client.register_script(ENQUEUE_LUA)
        self._drain = {t.label: DrainRate() for t in config.targets}
        # KEYS of the enqueue script per target and class: every class's stream, then its own.
        self._keys = {
            t.label: {
                p: [*request_streams(t.namespace, t.name), request_stream(t.namespace, t.name, p)]
                for p in PRIORITIES
            }
            for t in config.targets
        }
        self._cancelled = {t.label: cancelled_key(t.namespace, t.name) for t in config.targets}
        self._redis_ok_at = -math.inf  # monotonic
        # Set when a Redis call failed: Redis may have restarted empty or failed over to a
        # replica the live key had not reached. Until a refresh succeeds, each enqueue
        # refreshes the key first, so no worker finds a request's gateway "gone".
        self._live_uncertain = True
        self.draining = False  # readiness fails
        self.closing = False  # new requests refused
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._metrics_endpoint = MetricsEndpoint(registry, health_path="/healthz")
        self.port = 0
        self.metrics_port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post("/v2/models/{model}/infer", self._infer)
        app.router.add_post("/v2/models/{model}/versions/{version}/infer", self._infer)
        app.router.add_post("/v2/models/{model}/generate", self._generate)
        app.router.add_post("/v2/models/{model}/generate_stream", self._generate_stream)
        app.router.add_post("/v1/completions", self._openai)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        """Claims the live key, starts the reply reader, then listens."""
        # Replies are read from this start on Redis's clock (stream ids are Redis time);
        # unknown (Redis down), from the stream's beginning: older replies find no waiter and
        # are dropped, where a start id from our own clock, if ahead, would skip new ones.
        start_id = "0-0"
        try:
            seconds, micros = await self.client.time()
            start_id = f"{seconds * 1000 + micros // 1000}-0"
            await self._refresh_live()
        except REDIS_ERRORS as exc:  # serve anyway: enqueues answer 503 until Redis is back
            log.error("Redis unreachable at start (%s): not ready until it answers", exc)
        self._tasks = [
            asyncio.create_task(self.reader.run(start_id), name="replies"),
            asyncio.create_task(self._keep_live(), name="live"),
            asyncio.create_task(self.marks.run(), name="marks"),
        ]
        # Handler cancellation on disconnect (off by default since aiohttp 3.9): a client that
        # goes while waiting is how a request gets its cancelled mark.
        self._runner = web.AppRunner(
            self.application(), handler_cancellation=True, access_log=None,
            shutdown_timeout=LAST_WORDS_S,
        )  # fmt: skip
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.bind_address, self.config.port)
        await self._site.start()
        server = self._site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        await self._metrics_endpoint.start(self.config.bind_address, self.config.metrics_port)
        self.metrics_port = self._metrics_endpoint.port

    async def stop(self, delay_s: float | None = None, grace_s: float | None = None) -> None:
        """Graceful shutdown; see the module docstring. Returns once the live key is gone."""
        delay_s = self.config.shutdown_delay_s if delay_s is None else delay_s
        grace_s = self.config.shutdown_grace_s if grace_s is None else grace_s
        self.draining = True
        log.info("stopping: not ready; taking requests for %g s more", delay_s)
        await asyncio.sleep(delay_s)
        self.closing = True
        if self._site is not None:
            await self._site.stop()  # no new connections
        if self.inflight:
            log.info("waiting up to %g s for %d requests in flight", grace_s, self.inflight)
            try:
                async with asyncio.timeout(grace_s):
                    await self._idle.wait()
            except TimeoutError:
                failed = self.reader.fail_all(self._shutdown_reply)
                log.warning("grace period over: %d requests answered 503", failed)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LAST_WORDS_S):
                        await self._idle.wait()
        if self._runner is not None:
            await self._runner.cleanup()
        await self._metrics_endpoint.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.marks.flush()
            await self.client.delete(self.live_key)
        except REDIS_ERRORS as exc:  # it lapses by itself within LIVE_TTL_MS
            log.warning("could not remove the live key %s: %s", self.live_key, exc)
        await self.link.aclose()

    def _shutdown_reply(self, request_id: str) -> Reply:
        return Reply(
            request_id,
            ReplyType.ERROR,
            SHUTDOWN_ATTEMPT,
            status=503,
            reason="the gateway is shutting down and its grace period is over: retry",
        )

    async def _keep_live(self) -> None:
        while True:
            await asyncio.sleep(LIVE_REFRESH_S)
            try:
                await self._refresh_live()
            except REDIS_ERRORS as exc:
                self._live_uncertain = True
                log.warning("refreshing the live key failed: %s", exc)

    async def _refresh_live(self) -> None:
        await self.client.set(self.live_key, self.incarnation, px=LIVE_TTL_MS)
        self._live_uncertain = False
        self._redis_answered()

    def _redis_failed(self) -> None:
        self._live_uncertain = True

    def _redis_answered(self) -> None:
        self._redis_ok_at = time.monotonic()
        self.metrics.redis_ok.set(self._wall())

    @property
    def ready(self) -> bool:
        return not self.draining and time.monotonic() - self._redis_ok_at < READY_STALE_S

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="shutting down\n")
        if not self.ready:
            return web.Response(status=503, text=f"Redis silent for over {READY_STALE_S:g} s\n")
        return web.Response(text="ready\n")

    # -- routes ------------------------------------------------------------------------------

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await self._serve(
            request, Api.KSERVE, Kind.INFER, info["model"], info.get("version", ""), False
        )

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(
            request, Api.KSERVE, Kind.GENERATE, request.match_info["model"], "", False
        )

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(
            request, Api.KSERVE, Kind.GENERATE, request.match_info["model"], "", True
        )

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, Api.OPENAI, Kind.OPENAI, "", "", False)

    async def _serve(
        self, request: web.Request, api: Api, kind: Kind, model: str, version: str, stream: bool
    ) -> web.StreamResponse:
        label = NO_TARGET
        try:
            if self.closing:
                refusal = Refusal(503, "shutting_down", "the gateway is shutting down: retry")
                # Another replica takes the retry: this one is out of the Service by now.
                refusal.headers |= {"Connection": "close", "Retry-After": "1"}
                raise refusal
            content_type = check_head(
                request.headers, request.content_length, self.config.max_body_bytes
            )
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise Refusal(413, "too_large", too_large(self.config.max_body_bytes)) from None
            document = parse_json(api, body)
            if api is Api.OPENAI:
                model, stream = openai_fields(document)
            priority = priority_of(request.headers)
            timeout_s = timeout_of(request.headers)
            target = self.router.find(request.headers.get("Host"), request.path, model)
            if target is None:
                raise _unknown_model(api, model)
            label = target.label
            queued = QueuedRequest(
                request_id=f"{self._id_prefix}{next(self._ids):x}",
                kind=kind,
                model=model,
                version=version,
                path=request.path_qs,
                stream=stream,
                content_type=content_type,
                headers=forwarded_headers(request.headers),
                body=body,
                gateway=self.config.name,
                incarnation=self.incarnation,
                max_deliveries=target.max_deliveries,
            )
            return await self._queue_and_relay(
                request, api, target, priority, timeout_s or target.timeout_s, queued
            )
        except Refusal as refusal:
            self.metrics.refused.labels(label, refusal.reason).inc()
            return refusal_response(api, refusal)

    async def _queue_and_relay(
        self,
        request: web.Request,
        api: Api,
        target: Target,
        priority: str,
        timeout_s: float,
        queued: QueuedRequest,
    ) -> web.StreamResponse:
        label = target.label
        rid = queued.request_id
        started = asyncio.get_running_loop().time()
        deadline_wall_ms = int((self._wall() + timeout_s) * 1000)
        args: list[str | bytes | int] = [target.queue_limit, int(timeout_s * 1000)]
        for name, value in queued.fields().items():
            args += (name, value)
        # Registered first: a pod may answer before the enqueue's own reply reaches us.
        waiter = self.reader.register(rid)
        try:
            if self._live_uncertain:
                await self._refresh_live()
            result = await self._enqueue(keys=self._keys[label][priority], args=args)
        except asyncio.CancelledError:  # the client went while the script ran
            self.reader.unregister(rid)
            self.marks.mark(self._cancelled[label], rid, deadline_wall_ms)
            self.metrics.refused.labels(label, "client_gone").inc()
            raise
        except REDIS_ERRORS as exc:
            self._live_uncertain = True
            self.reader.unregister(rid)
            # The answer was lost, not necessarily the request: make sure no pod starts it.
            self.marks.mark(self._cancelled[label], rid, deadline_wall_ms)
            raise Refusal(
                503, "redis", f"the request could not be queued: Redis failed ({exc}); retry"
            ) from None
        self._redis_answered()
        if result[0] == b"full":
            self.reader.unregister(rid)
            waiting = int(result[1])
            retry_s = retry_after_s(waiting, self._drain[label].per_second(time.monotonic()))
            refusal = Refusal(
                429,
                "queue_full",
                f"the queue of {label} is full: {waiting} requests wait, its limit is "
                f"{target.queue_limit}; retry after {retry_s} s",
                code="queue_full",
            )
            refusal.headers["Retry-After"] = str(retry_s)
            raise refusal
        self.metrics.accepted.labels(label).inc()
        self.inflight += 1
        self.metrics.inflight.inc()
        self._idle.clear()
        try:
            return await self._relay(
                request, api, target, waiter, started + timeout_s, timeout_s, deadline_wall_ms
            )
        finally:
            self.reader.unregister(rid)
            self.inflight -= 1
            self.metrics.inflight.dec()
            if self.inflight == 0:
                self._idle.set()
            self.metrics.duration.labels(label).observe(asyncio.get_running_loop().time() - started)

    async def _relay(
        self,
        request: web.Request,
        api: Api,
        target: Target,
        waiter: Waiter,
        deadline: float,
        timeout_s: float,
        deadline_wall_ms: int,
    ) -> web.StreamResponse:
        """The reply, as the pod sends it; exactly one of answered/failed is counted."""
        label = target.label
        rid = waiter.request_id
        headers = {"X-Request-Id": rid}
        response: web.StreamResponse | None = None
        counted = False

        def answered(status: int) -> None:
            nonlocal counted
            counted = True
            self.metrics.answered.labels(label, status_class(status)).inc()
            self._drain[label].record(time.monotonic())

        def failed(reason: str) -> None:
            nonlocal counted
            counted = True
            self.metrics.failed.labels(label, reason).inc()
            if reason in ("deadline", "client_gone", "shutdown"):
                self.marks.mark(self._cancelled[label], rid, deadline_wall_ms)

        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    reply = await waiter.queue.get()
                    if reply.type is ReplyType.FULL:
                        answered(reply.status)
                        return web.Response(
                            status=reply.status or 502,
                            body=reply.data,
                            headers={
                                "Content-Type": reply.content_type or "application/json",
                                **headers,
                            },
                        )
                    if reply.type is ReplyType.HEAD:
                        response = web.StreamResponse(
                            status=reply.status or 200,
                            headers={
                                "Content-Type": reply.content_type or "text/event-stream",
                                "Cache-Control": "no-cache",
                                **headers,
                            },
                        )
                        await response.prepare(request)
                    elif reply.type is ReplyType.CHUNK and response is not None:
                        await response.write(reply.data)
                    elif reply.type is ReplyType.END and response is not None:
                        answered(response.status)
                        await response.write_eof()
                        return response
                    elif reply.type is ReplyType.ERROR:
                        own = reply.attempt == SHUTDOWN_ATTEMPT
                        failed("shutdown" if own else "worker_error")
                        status = reply.status or 502
                        if response is None:
                            return error_response(api, status, reply.reason, headers=headers)
                        await response.write(sse_error(api, reply.reason, status))
                        await response.write_eof()
                        return response
        except TimeoutError:
            failed("deadline")
            message = (
                f"no reply from {label} within the request's deadline of {timeout_s:g} s: "
                + ("its pod did not finish" if waiter.attempt else "no pod answered in time")
            )
            if response is None:
                return error_response(api, 504, message, headers=headers)
            await response.write(sse_error(api, message, 504))
            await response.write_eof()
            return response
        except ConnectionError:  # the client went while its stream was being written
            assert response is not None
            return response
        finally:
            if not counted:  # cancelled (the client went) or the connection broke
                failed("shutdown" if self.closing and self.draining else "client_gone")


def _unknown_model(api: Api, model: str) -> Refusal:
    if api is Api.OPENAI:  # OpenAI: 404 model_not_found
        return Refusal(
            404,
            "unknown_model",
            f"The model `{model}` does not exist or is not served by this gateway.",
            code="model_not_found",
            param="model",
        )
    return Refusal(400, "unknown_model", f"Request for unknown model: '{model}' is not found")
