"""Fetching Triton's metrics page: one small HTTP GET on the event loop.

HTTP/1.0 on purpose: the server must then send the body as is and close, with
no chunked encoding to undo, so a few lines of asyncio streams do the job and
the sidecar needs no HTTP client library (and none of its memory).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

# Triton's page is tens of kB even with many models and GPUs; anything far
# larger is not Triton's page and is refused rather than held in memory.
MAX_BODY_BYTES = 8 * 1024 * 1024


class ScrapeError(Exception):
    """The metrics page could not be fetched: refused, timed out, or not a 200."""


class MetricsScraper:
    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._url = url
        self._timeout_s = timeout_s
        self._request = (
            f"GET {self._path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
            "Accept: text/plain\r\nAccept-Encoding: identity\r\n\r\n"
        ).encode()

    async def fetch(self) -> str:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._get()
        except TimeoutError:
            raise ScrapeError(f"{self._url} did not answer within {self._timeout_s:g} s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ScrapeError(f"{self._url}: {exc or type(exc).__name__}") from None

    async def _get(self) -> str:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            writer.write(self._request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].split()
            if len(status) < 2 or status[1] != b"200":
                line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                raise ScrapeError(f"{self._url} answered {line!r}")
            chunks: list[bytes] = []
            size = 0
            while chunk := await reader.read(65536):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ScrapeError(f"{self._url} sent more than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks).decode("utf-8", errors="replace")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
