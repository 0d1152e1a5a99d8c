"""How the scaler and the sidecar reach Redis: calls that fail fast, passwords out of sight."""

from __future__ import annotations

from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def fast_failing_client(url: str, password: str | None, timeout_s: float) -> Redis:
    """A client whose calls fail within `timeout_s`: one quick retry covers a connection a
    restarted Redis closed; anything longer is the caller's to handle, not ours to wait out.

    `password` (from a Secret) overrides one in the URL, so the URL can live in a ConfigMap."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    if password is not None:
        client.connection_pool.connection_kwargs["password"] = password
    return client


def without_password(url: str) -> str:
    """`url` fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
