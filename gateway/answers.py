"""Error answers in each API's own shape, so a client's error handling works unchanged.

KServe v2 / Triton answers `{"error": "<message>"}`; the OpenAI API answers
`{"error": {"message", "type", "param", "code"}}`. After a stream's head is sent an error can
only travel inside the stream: an SSE `event: error` whose data is the same JSON.
"""

from __future__ import annotations

import json
from enum import Enum

from aiohttp import web


class Api(Enum):
    KSERVE = "kserve"  # /v2/... (infer, generate, generate_stream)
    OPENAI = "openai"  # /v1/completions, /v1/chat/completions


class Refusal(Exception):
    """A request answered without being queued; `reason` is the metrics label."""

    def __init__(
        self, status: int, reason: str, message: str, *, code: str | None = None, param: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.code = code  # OpenAI's error code, e.g. model_not_found
        self.param = param  # OpenAI's param: the body field at fault
        self.headers: dict[str, str] = {}


def error_json(
    api: Api, message: str, *, status: int, code: str | None = None, param: str = ""
) -> bytes:
    """An error body in the API's own shape (KServe's or OpenAI's)."""
    if api is Api.KSERVE:
        return json.dumps({"error": message}).encode()
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param or None, "code": code}}
    ).encode()


def error_response(
    api: Api,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error response with the body in the API's own shape."""
    return web.Response(
        status=status,
        body=error_json(api, message, status=status, code=code, param=param),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def refusal_response(api: Api, refusal: Refusal) -> web.Response:
    """The error response of a Refusal."""
    return error_response(
        api,
        refusal.status,
        refusal.message,
        code=refusal.code,
        param=refusal.param,
        headers=refusal.headers,
    )


def sse_error(api: Api, message: str, status: int) -> bytes:
    """The event that ends a stream whose head was already sent."""
    data = error_json(api, message, status=status).decode()
    return f"event: error\ndata: {data}\n\n".encode()
