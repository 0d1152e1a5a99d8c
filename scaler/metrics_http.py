"""A small asyncio HTTP endpoint for Prometheus scrapes (and an optional health path).

prometheus-client's own server runs a thread that only notices shutdown every
0.5 s; this one lives on the event loop with the gRPC server, stops at once, and
renders the exposition in a worker thread so a large registry never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

_MAX_REQUEST_HEAD = 16 * 1024
_READ_TIMEOUT_S = 5.0


class MetricsEndpoint:
    """Serves GET /metrics from `registry`; GET `health_path` answers 200 when `healthy()`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health_path: str | None = None,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self._registry = registry
        self._health_path = health_path
        self._healthy = healthy
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await self._answer(head[:_MAX_REQUEST_HEAD])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == b"/metrics":
            body = await asyncio.to_thread(generate_latest, self._registry)
            return "200 OK", CONTENT_TYPE_LATEST, body
        if self._health_path is not None and path == self._health_path.encode():
            if self._healthy():
                return "200 OK", "text/plain", b"ok\n"
            return "503 Service Unavailable", "text/plain", b"unhealthy\n"
        return "404 Not Found", "text/plain", b"not found\n"
