"""Small HTTP GETs to Triton on the event loop: the metrics page and the health endpoints.

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
    """No usable HTTP answer: refused, timed out, cut short, too large; for the page, not 200."""


class HttpGetter:
    """GETs paths under one `http://host:port[/prefix]` base; answers (status code, body)."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 80
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")  # e.g. behind a proxy that routes by path
        self._base = base_url.rstrip("/")
        self.timeout_s = timeout_s

    async def get(self, path: str) -> tuple[int, str]:
        url = self._base + path
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._get(self._prefix + path, url)
        except TimeoutError:
            raise ScrapeError(f"{url} did not answer within {self.timeout_s:g} s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ScrapeError(f"{url}: {exc or type(exc).__name__}") from None

    async def _get(self, path: str, url: str) -> tuple[int, str]:
        request = (
            f"GET {path} HTTP/1.0\r\nHost: {self._netloc}\r\n"
            "Accept: text/plain\r\nAccept-Encoding: identity\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.split(b"\r\n")
            fields = status_line.split()
            if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
                raise ScrapeError(f"{url} answered {status_line.decode(errors='replace')!r}")
            return int(fields[1]), await _body(reader, header_lines, url)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _body(reader: asyncio.StreamReader, header_lines: list[bytes], url: str) -> str:
    """The body: Content-Length bytes when given (a server may keep the connection
    open), else up to the close that HTTP/1.0 asks of the server."""
    length: int | None = None
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length is not None and length > MAX_BODY_BYTES:
        raise ScrapeError(f"{url} sent more than {MAX_BODY_BYTES} bytes")
    if length is not None:
        return (await reader.readexactly(length)).decode("utf-8", errors="replace")
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ScrapeError(f"{url} sent more than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


class MetricsScraper:
    """Fetches Triton's Prometheus page; anything but a 200 is a ScrapeError."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._url = url
        self._http = HttpGetter(f"http://{parts.netloc}", timeout_s)

    async def fetch(self) -> str:
        status, body = await self._http.get(self._path)
        if status != 200:
            raise ScrapeError(f"{self._url} answered HTTP {status}")
        return body
